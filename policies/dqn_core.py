"""DQN networks, the semi-Markov DQN loss and the plain-torch learner; ``make_learner`` picks a learner by kind.

Imported only where torch is installed. The learners share one API (``step``, ``steps``,
``online_state_dict``, ``state_dict``, ``load_state_dict``, ``load_online_weights``): the
``torch`` learner here (CPU or CUDA) and the Cerebras learner in ``policies.dqn_cerebras``
(``cerebras.pytorch``, backend "CPU" or "CSX"), which needs its own venv (docs/cerebras.md).

A batch is a dict of numpy arrays, one row per transition:

- ``obs``: (B, F) float32 observations.
- ``action``: (B,) int64 action indices in ``[0, n_actions)``.
- ``reward``: (B,) float32 rewards.
- ``next_obs``: (B, F) float32 observations at the next decision.
- ``discount``: (B,) float32 ``gamma ** (dt / tau) * (1 - terminal)``, computed by the caller:
  decisions are irregular in time, so each transition carries its own discount (semi-Markov).
- ``next_mask`` (optional, torch learner): (B, A) bool, the actions allowed at the next decision; the
  target's max (or the double-DQN argmax) runs over them only. Without it, over every action.

Library code here never changes torch's global state (thread count, global seed): weights are
initialised from a ``torch.Generator`` seeded per learner.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

LEARNER_KINDS = ("torch", "cerebras-cpu", "csx")
"""Kinds ``make_learner`` accepts."""

BATCH_KEYS = ("obs", "action", "reward", "next_obs", "discount")
"""Keys of a training batch, in the order ``DQNLoss.forward`` takes them."""

_BATCH_DTYPES = {"obs": torch.float32, "action": torch.int64, "reward": torch.float32,
                 "next_obs": torch.float32, "discount": torch.float32}

CEREBRAS_VENV_HINT = ("run inside the Cerebras venv built by `bash tools/setup_cerebras_venv.sh` "
                      "(`.venv-cerebras/bin/python -m dcsim train ...`); see docs/cerebras.md")


def init_linear_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every ``nn.Linear`` in ``module`` from ``generator``, in registration order.

    Same distribution as torch's default ``nn.Linear`` init (weight and bias uniform in
    ``±1/sqrt(fan_in)``), but drawn from the given generator so that no global RNG is read or
    advanced.
    """
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)


class QNetwork(nn.Module):
    """MLP from observations to one Q-value per action: ``n_features -> hidden... (ReLU) -> n_actions``.

    Args:
        n_features: Width F of an observation row.
        n_actions: Number of discrete actions.
        hidden: Widths of the hidden layers; ``()`` makes the network linear.
        generator: Draws the initial weights; ``None`` keeps torch's default init (global RNG).
    """

    def __init__(self, n_features: int, n_actions: int, hidden: tuple[int, ...] = (64, 64),
                 generator: torch.Generator | None = None):
        super().__init__()
        _check_architecture(n_features, n_actions, hidden)
        self.n_features = int(n_features)
        self.n_actions = int(n_actions)
        self.hidden = tuple(int(h) for h in hidden)
        # nn.Linear's constructor draws its default init from the global RNG; with a generator of
        # our own, fork the global RNG around it so that building a network leaves it untouched.
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            layers: list[nn.Module] = []
            width = self.n_features
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, self.n_actions))
            self.layers = nn.Sequential(*layers)
        if generator is not None:
            init_linear_weights(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values, shape (B, n_actions), for observations of shape (B, n_features)."""
        return self.layers(x)


class DQNLoss(nn.Module):
    """The online and target Q-networks in one module whose forward pass is the DQN loss.

    One module, because the Cerebras backend compiles one model per step: the target network's
    forward pass has to live inside the compiled model. The target network starts as a copy of
    the online one and takes no gradient (``requires_grad`` off); move it with ``polyak_update``.

    Args:
        n_features: Width F of an observation row.
        n_actions: Number of discrete actions.
        hidden: Hidden layer widths of both networks.
        huber_delta: ``beta`` of the smooth-L1 loss: quadratic ``0.5 e**2 / delta`` for
            ``|e| < delta``, linear ``|e| - 0.5 delta`` beyond, so a gradient never exceeds 1 in
            size. Equal to the Huber loss for ``delta = 1`` (Huber = ``delta`` × smooth-L1).
        loss_fn: Loss module called as ``loss_fn(q, target)``, reducing by the batch mean;
            default ``torch.nn.SmoothL1Loss(beta=huber_delta)``. The Cerebras learner passes
            ``cerebras.pytorch.nn.SmoothL1Loss`` (the aten op does not lower).
        generator: Draws the initial online weights; ``None`` keeps torch's default init.
        double: Double DQN (van Hasselt et al. 2016): the online network picks the next action, the target
            network values it (``Q_target(s', argmax_a Q_online(s', a))``), instead of ``max_a Q_target(s', a)``,
            which over-estimates through the max over noisy values.
    """

    def __init__(self, n_features: int, n_actions: int, hidden: tuple[int, ...] = (64, 64),
                 huber_delta: float = 1.0, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 generator: torch.Generator | None = None, double: bool = False):
        super().__init__()
        if not huber_delta > 0:
            raise ValueError(f"huber_delta must be > 0, got {huber_delta!r}")
        self.huber_delta = float(huber_delta)
        self.online = QNetwork(n_features, n_actions, hidden, generator=generator)
        # A copy, not a second constructor call: constructing nn.Linear draws from the global RNG.
        self.target = copy.deepcopy(self.online)
        self.target.requires_grad_(False)
        self.loss_fn = loss_fn if loss_fn is not None else nn.SmoothL1Loss(beta=self.huber_delta)
        self.double = bool(double)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                next_obs: torch.Tensor, discount: torch.Tensor, next_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss: smooth-L1 between ``Q(obs, action)`` and ``reward + discount * max_a Q_target(next_obs, a)``.

        Args:
            obs: (B, F) observations.
            action: (B,) int64 actions taken.
            reward: (B,) rewards.
            next_obs: (B, F) observations at the next decision.
            discount: (B,) per-transition discount ``gamma ** (dt / tau) * (1 - terminal)``.
            next_mask: Optional (B, A) bool, the actions allowed at the next decision (every row needs one).
        """
        q = self.online(obs).gather(1, action.unsqueeze(1)).squeeze(1)
        if next_mask is None:
            if self.double:
                best = self.online(next_obs).detach().argmax(dim=1, keepdim=True)
                next_q = self.target(next_obs).detach().gather(1, best).squeeze(1)
            else:
                next_q = self.target(next_obs).detach().max(dim=1).values
        else:
            target_q = self.target(next_obs).detach()
            if self.double:
                pick = self.online(next_obs).detach().masked_fill(~next_mask, -torch.inf)
                next_q = target_q.gather(1, pick.argmax(dim=1, keepdim=True)).squeeze(1)
            else:
                next_q = target_q.masked_fill(~next_mask, -torch.inf).max(dim=1).values
        target = (reward + discount * next_q).detach()
        return self.loss_fn(q, target)


def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Move ``target`` toward ``online`` in place: ``target <- (1 - tau) target + tau online``, without grad.

    Written with in-place ``mul_``/``add_`` on the parameters so that it also traces inside a
    Cerebras training step (a hard ``copy_`` of the whole net there does not).
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"polyak tau must lie in [0, 1], got {tau!r}")
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.mul_(1.0 - tau).add_(o, alpha=tau)


def architecture(n_features: int, n_actions: int, hidden: Sequence[int]) -> dict:
    """JSON-able description of a ``QNetwork``: what a checkpoint must match to be loaded."""
    _check_architecture(n_features, n_actions, hidden)
    return {"type": "mlp", "activation": "relu", "n_features": int(n_features),
            "n_actions": int(n_actions), "hidden": [int(h) for h in hidden]}


def _check_architecture(n_features: int, n_actions: int, hidden: Iterable[int]) -> None:
    if int(n_features) < 1 or int(n_actions) < 1 or any(int(h) < 1 for h in hidden):
        raise ValueError(f"n_features, n_actions and hidden widths must be >= 1, got "
                         f"n_features={n_features!r}, n_actions={n_actions!r}, hidden={tuple(hidden)!r}")


def batch_to_tensors(batch: dict[str, np.ndarray], n_features: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Check a batch dict and turn it into tensors in ``BATCH_KEYS`` order, with the dtypes ``DQNLoss`` expects."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; a batch needs keys {list(BATCH_KEYS)}")
    out = []
    size = len(batch["action"])
    for key in BATCH_KEYS:
        value = np.asarray(batch[key])
        want = (size, n_features) if key in ("obs", "next_obs") else (size,)
        if value.shape != want:
            raise ValueError(f"batch[{key!r}] has shape {value.shape}, expected {want}")
        out.append(torch.as_tensor(value, dtype=_BATCH_DTYPES[key]).to(device))
    if "next_mask" in batch:
        mask = np.asarray(batch["next_mask"], dtype=bool)
        if mask.ndim != 2 or mask.shape[0] != size or not mask.any(axis=1).all():
            raise ValueError(f"batch['next_mask'] has shape {mask.shape}, expected ({size}, n_actions) with an "
                             "allowed action in every row")
        out.append(torch.as_tensor(mask).to(device))
    return tuple(out)


def _make_optimizer(module, params, optimizer: str, lr: float):
    """``module.SGD`` / ``module.Adam`` over ``params``; ``module`` is ``torch.optim`` or ``cerebras.pytorch.optim``."""
    if optimizer == "sgd":
        return module.SGD(params, lr=lr)
    if optimizer == "adam":
        return module.Adam(params, lr=lr, eps=1e-8)  # torch's default; cstorch's is 1e-6
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


class TorchLearner:
    """Trains ``DQNLoss`` with plain torch on CPU or CUDA: one gradient step, then a Polyak target update.

    Args:
        n_features: Width F of an observation row.
        n_actions: Number of discrete actions.
        hidden: Hidden layer widths.
        lr: Learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (plain SGD, no momentum).
        polyak_tau: Share of the online weights blended into the target after each step, in [0, 1].
        huber_delta: Smooth-L1 ``beta`` (see ``DQNLoss``).
        grad_clip: Largest global L2 norm of the online gradients; ``None`` leaves them unclipped.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        seed: Seeds the generator that draws the initial weights.
        double: Double DQN targets (see ``DQNLoss``).
    """

    kind = "torch"
    optimizer_format = "torch.optim"
    """Whose optimizer state a checkpoint holds: it is loaded only into a learner of the same format."""

    def __init__(self, n_features: int, n_actions: int, hidden: tuple[int, ...] = (64, 64), lr: float = 1e-3,
                 optimizer: str = "adam", polyak_tau: float = 0.01, huber_delta: float = 1.0,
                 grad_clip: float | None = 10.0, device: str = "auto", seed: int = 0, double: bool = False):
        if not 0.0 <= polyak_tau <= 1.0:
            raise ValueError(f"polyak_tau must lie in [0, 1], got {polyak_tau!r}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.n_features, self.n_actions, self.hidden = int(n_features), int(n_actions), tuple(int(h) for h in hidden)
        self.lr, self.optimizer_name, self.polyak_tau = float(lr), optimizer, float(polyak_tau)
        self.huber_delta, self.grad_clip, self.seed = float(huber_delta), grad_clip, int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.model = DQNLoss(n_features, n_actions, self.hidden, huber_delta=huber_delta,
                             generator=generator, double=double).to(self.device)
        self.optimizer = _make_optimizer(torch.optim, self.model.online.parameters(), optimizer, self.lr)
        self.steps_done = 0

    def architecture(self) -> dict:
        """JSON-able description of the Q-network."""
        return architecture(self.n_features, self.n_actions, self.hidden)

    def step(self, batch: dict[str, np.ndarray]) -> float:
        """One gradient step on ``batch`` (see the module docstring), then the Polyak update; returns the loss before the step."""
        tensors = batch_to_tensors(batch, self.n_features, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(*tensors)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.online.parameters(), self.grad_clip)
        self.optimizer.step()
        polyak_update(self.model.target, self.model.online, self.polyak_tau)
        self.steps_done += 1
        return float(loss.detach().item())

    def steps(self, batches: Iterable[dict[str, np.ndarray]]) -> list[float]:
        """``step`` over each batch in turn (one training round); returns the losses."""
        return [self.step(b) for b in batches]

    def online_state_dict(self) -> dict[str, torch.Tensor]:
        """CPU copies of the online network's weights, keyed as in ``QNetwork.state_dict()``."""
        return {k: v.detach().to("cpu").clone() for k, v in self.model.online.state_dict().items()}

    def state_dict(self) -> dict:
        """Online and target weights, optimizer state and settings, for checkpoints and resuming."""
        return {"kind": self.kind, "architecture": self.architecture(), "optimizer_name": self.optimizer_name,
                "optimizer_format": self.optimizer_format, "steps_done": self.steps_done,
                "online": self.online_state_dict(),
                "target": {k: v.detach().to("cpu").clone() for k, v in self.model.target.state_dict().items()},
                # A deep copy: the optimizer's own state_dict shares its live moment tensors.
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, sd: dict) -> None:
        """Restore what ``state_dict`` saved; the architecture must match.

        Weights load from either learner kind; the optimizer state only from a checkpoint with the
        same optimizer and ``optimizer_format`` (torch.optim and cstorch.optim keep Adam's state
        differently), otherwise the optimizer starts afresh.
        """
        _check_same_architecture(sd, self.architecture())
        self.model.online.load_state_dict(sd["online"])
        self.model.target.load_state_dict(sd["target"])
        if _optimizer_state_fits(sd, self.optimizer_name, self.optimizer_format):
            self.optimizer.load_state_dict(copy.deepcopy(sd["optimizer"]))
        self.steps_done = int(sd.get("steps_done", 0))

    def load_online_weights(self, sd: dict[str, torch.Tensor]) -> None:
        """Set the online and target networks to the weights ``sd`` (a ``QNetwork`` state dict), e.g. to start from a checkpoint."""
        with torch.no_grad():
            self.model.online.load_state_dict(sd)
            self.model.target.load_state_dict(sd)


def _optimizer_state_fits(sd: dict, optimizer_name: str, optimizer_format: str) -> bool:
    return (sd.get("optimizer") is not None and sd.get("optimizer_name") == optimizer_name
            and sd.get("optimizer_format", "torch.optim") == optimizer_format)


def _check_same_architecture(sd: dict, expected: dict) -> None:
    got = sd.get("architecture")
    if got is not None and dict(got) != expected:
        raise ValueError(f"checkpoint network {got} does not match this learner's {expected}")


def make_learner(kind: str, **kwargs):
    """A learner of the given kind; ``kwargs`` go to its constructor.

    Args:
        kind: ``"torch"`` (``TorchLearner``), ``"cerebras-cpu"`` (``CerebrasLearner`` on the
            cerebras.pytorch CPU backend, a correctness check) or ``"csx"`` (``CerebrasLearner``
            on a Cerebras Wafer-Scale Cluster; cluster settings go in ``kwargs``).

    Raises:
        ValueError: ``kind`` is none of ``LEARNER_KINDS``.
        ImportError: a Cerebras kind outside the Cerebras venv.
    """
    if kind == "torch":
        return TorchLearner(**kwargs)
    if kind in ("cerebras-cpu", "csx"):
        try:
            import cerebras.pytorch  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"learner {kind!r} needs cerebras.pytorch, which this Python cannot import "
                              f"({exc}); {CEREBRAS_VENV_HINT}") from exc
        from policies.dqn_cerebras import CerebrasLearner

        return CerebrasLearner(backend="CPU" if kind == "cerebras-cpu" else "CSX", **kwargs)
    raise ValueError(f"unknown learner kind {kind!r}; allowed: {', '.join(LEARNER_KINDS)}")
