"""DQN bidders: a torch MLP over the agents' features, replay, Polyak target, Huber loss, semi-Markov discount.

Acting runs a copy of the online network on the batched features of every agent deciding at that instant,
by numpy (:class:`ActingWeights`: float32 matrix products; so the compiled kernel, which calls numpy's own loop, acts
on the same numbers). Learning happens in rounds (every ``learn_every_s`` of simulated time, by default each
5-minute market round): ``updates_per_round`` gradient steps on batches drawn from the replay buffer, after
which the acting copy is refreshed. The learner is plain torch (CPU or CUDA) or Cerebras
(``cerebras.pytorch``; see ``docs/cerebras.md``). ``init_from`` pre-trains offline on transitions a
Q-learning run exported (``transitions.npz``) before online training starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dcsim.atomic import replacing
from dcsim.errors import PolicyError
from dcsim.learning import ActionKind, ReplayBuffer, Transitions
from dcsim.policy import AgentObservation, Bids
from policies.learning import LearningPolicy, read_spec, write_spec

try:
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None


def _plain_layers(net) -> list[tuple] | None:
    """The ``(weight, bias)`` of each ``Linear`` of a :class:`~policies.dqn_core.QNetwork` made of ``Linear`` layers
    with a ``ReLU`` between each two (what ``QNetwork`` builds), detached; None for any other layout of layers."""
    modules = list(net.layers)
    if not modules or len(modules) % 2 == 0:
        return None
    out = []
    for i, m in enumerate(modules):
        if i % 2 == 0:
            if type(m) is not torch.nn.Linear or m.bias is None:
                return None
            out.append((m.weight.detach(), m.bias.detach()))
        elif type(m) is not torch.nn.ReLU or m.inplace:
            return None
    return out


class ActingWeights:
    """The acting network's weights as numpy float32 arrays in one flat block (so the compiled kernel reads the same
    memory): layer ``l``'s transposed weight ``(inputs, outputs)`` and its bias, refreshed in place by :meth:`load`.

    :meth:`q_values` is the network's forward pass by numpy: ``h @ W + b`` per layer (numpy's float32 matrix
    product), ``h *= h > 0`` between layers. ``layout`` holds, per layer, its inputs, outputs and the offsets of
    its weight and bias in ``flat``.
    """

    def __init__(self, sizes: list[tuple[int, int]]):
        self.layout = np.zeros((len(sizes), 4), np.int64)
        at = 0
        for i, (n_in, n_out) in enumerate(sizes):
            self.layout[i] = (n_in, n_out, at, at + n_in * n_out)
            at += n_in * n_out + n_out
        self.flat = np.zeros(at, np.float32)
        self.layers = [(self.flat[w:b].reshape(n_in, n_out), self.flat[b:b + n_out])
                       for n_in, n_out, w, b in self.layout.tolist()]

    @classmethod
    def of(cls, layers: list[tuple]) -> "ActingWeights":
        out = cls([(int(w.shape[1]), int(w.shape[0])) for w, _ in layers])
        out.load(layers)
        return out

    def fits(self, layers: list[tuple]) -> bool:
        return [(int(w.shape[1]), int(w.shape[0])) for w, _ in layers] == [tuple(r[:2]) for r in self.layout.tolist()]

    def load(self, layers: list[tuple]) -> None:
        """Copy torch ``(weight, bias)`` pairs (``weight``: ``(outputs, inputs)``) into the flat block."""
        for (w, b), (wt, bt) in zip(layers, self.layers):
            np.copyto(wt, w.cpu().numpy().T)
            np.copyto(bt, b.cpu().numpy())

    def q_values(self, x: np.ndarray) -> np.ndarray:
        """Q-values ``(rows, actions)`` (float32) of the C-ordered float32 feature rows ``x``."""
        h = x
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w
            h += b
            if i < last:
                h *= h > 0  # ReLU as a product (a NaN stays NaN): one exact float32 operation per value
        return h


class DQN(LearningPolicy):
    """Deep Q-network bidders (needs torch: ``pip install torch==2.13.0`` or the ``dqn`` extra).

    Args:
        hidden: Hidden layer widths of the MLP.
        lr: Learning rate. optimizer: ``"adam"`` or ``"sgd"``.
        batch_size: Transitions per gradient step.
        replay_capacity: Transitions kept in the replay ring.
        min_replay: No learning before the replay holds this many transitions.
        learn_every_s: Simulated seconds between learning rounds.
        updates_per_round: Gradient steps per learning round.
        polyak_tau: Target ← (1 − τ)·target + τ·online after each step.
        huber_delta: Smooth-L1 threshold. grad_clip: Gradient-norm clip (None: off).
        learner: ``"torch"``, ``"cerebras-cpu"`` or ``"csx"``. device: torch device for the torch learner.
        learner_options: Extra learner settings (e.g. Cerebras cluster settings).
        init_from: ``transitions.npz`` (or a ``dcsim train`` output folder holding one) to pre-train on; the
            ε schedule then starts as if the transitions' decisions had been made by this policy.
        init_steps: Offline gradient steps on ``init_from`` before acting.
        torch_threads: Threads torch uses in this process (``torch.set_num_threads``), or None to leave torch's
            default. Default 1: on a 2-core machine that also runs the simulation a second thread made learner
            steps ~10x slower (740 vs 69 Adam steps/s measured, benchmarks/bench_learning.py).
        blas_threads: Threads numpy's BLAS uses in this process (``threadpoolctl.threadpool_limits``), or None to
            leave numpy's default (a thread per core). Default 1: the acting network's float32 matrix products then
            give the same numbers on every machine (OpenBLAS's results for wide layers depend on its thread count),
            and a 10k-GPU round's products cost no idle-thread spinning (0.77 vs 0.37 CPU s a simulated hour
            measured, benchmarks/bench_engine.py).
        double: Double DQN targets (the online network picks the next action, the target network values it).
            None (the default): on with the torch learner, off with the Cerebras learners (not implemented there).
        **kwargs: See :class:`~policies.learning.LearningPolicy`.
    """

    name = "dqn"

    def __init__(self, hidden: list[int] | tuple[int, ...] = (64, 64), lr: float = 1e-3, optimizer: str = "adam",
                 batch_size: int = 128, replay_capacity: int = 100_000, min_replay: int = 256,
                 learn_every_s: float = 300.0, updates_per_round: int = 4, polyak_tau: float = 0.01,
                 huber_delta: float = 1.0, grad_clip: float | None = 10.0, learner: str = "torch",
                 device: str = "auto", learner_options: dict[str, Any] | None = None, init_from: str | None = None,
                 init_steps: int = 2000, torch_threads: int | None = 1, double: bool | None = None,
                 blas_threads: int | None = 1, **kwargs: Any):
        if torch is None:
            raise PolicyError("policy 'dqn' needs torch: install it with `pip install torch==2.13.0` "
                              "(or `pip install -e '.[dqn]'` after that)")
        super().__init__(**kwargs)
        self.hidden = tuple(int(h) for h in hidden)
        self.lr, self.optimizer_name, self.batch_size = float(lr), optimizer, int(batch_size)
        self.replay_capacity, self.min_replay = int(replay_capacity), int(min_replay)
        self.learn_every_s, self.updates_per_round = float(learn_every_s), int(updates_per_round)
        self.polyak_tau, self.huber_delta, self.grad_clip = float(polyak_tau), float(huber_delta), grad_clip
        self.learner_kind, self.device = learner, device
        self.learner_options = dict(learner_options or {})
        self.init_from, self.init_steps = init_from, int(init_steps)
        self.losses: list[float] = []
        self.learner = None
        self.acting: ActingWeights | None = None
        self.torch_threads = torch_threads
        if blas_threads is not None and not (isinstance(blas_threads, int) and blas_threads >= 1):
            raise PolicyError(f"policy 'dqn': blas_threads={blas_threads!r}; allowed: an integer >= 1, or null")
        self.blas_threads = blas_threads
        if double and learner != "torch":
            raise PolicyError(f"policy 'dqn': double=True is implemented for learner 'torch' only, not {learner!r}; "
                              "set policy.params.double=false")
        self.double = (learner == "torch") if double is None else bool(double)
        if self.layout.rich and learner != "torch":
            raise PolicyError(f"policy 'dqn': actions={self.layout.name!r} needs masked targets, implemented for "
                              f"learner 'torch' only, not {learner!r}; use actions='bid' with the Cerebras learners")

    # ---------------------------------------------------------------------------- state
    def build(self, n_gpus: int) -> None:
        from policies.dqn_core import QNetwork, make_learner

        # a child stream: drawing the weights' seed must not shift the episode's own draws (exploration, replay
        # sampling), so a resumed training makes the same draws as an uninterrupted one
        if self.torch_threads is not None:
            torch.set_num_threads(int(self.torch_threads))
        if self.blas_threads is not None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(self.blas_threads), user_api="blas")
        seed = int(self.rng.spawn(1)[0].integers(0, 2**31 - 1))
        try:
            self.learner = make_learner(self.learner_kind, n_features=len(self.features), n_actions=self.n_actions,
                                        hidden=self.hidden, lr=self.lr, optimizer=self.optimizer_name,
                                        polyak_tau=self.polyak_tau, huber_delta=self.huber_delta,
                                        grad_clip=self.grad_clip, seed=seed,
                                        **({"device": self.device} if self.learner_kind == "torch" else {}),
                                        **({"double": True} if self.double else {}),
                                        **self.learner_options)
        except (ValueError, TypeError) as exc:
            raise PolicyError(f"policy 'dqn' with learner {self.learner_kind!r}: {exc} (learner_options given: "
                              f"{sorted(self.learner_options) or 'none'}; docs/cerebras.md lists the cluster settings "
                              "of the Cerebras learners)") from None
        except ImportError as exc:
            raise PolicyError(f"policy 'dqn' with learner {self.learner_kind!r}: {exc}") from None
        self.actor = QNetwork(len(self.features), self.n_actions, self.hidden)
        self.actor.eval()
        self.replay = ReplayBuffer(self.replay_capacity, len(self.features), self.features)
        self._next_learn_s = 0.0
        if self.init_from is not None:
            self.pretrain(Path(self.init_from))
        self._sync()

    def _sync(self) -> None:
        """Refresh the acting network from the learner's online network (its numpy weights in place)."""
        self.actor.load_state_dict(self.learner.online_state_dict())
        layers = _plain_layers(self.actor)
        acting = self.acting
        if layers is None:
            self.acting = None
        elif acting is not None and acting.fits(layers):
            acting.load(layers)
        else:
            self.acting = ActingWeights.of(layers)

    def reset(self, rng, gpu, n_gpus) -> None:
        super().reset(rng, gpu, n_gpus)
        self._next_learn_s = 0.0

    # ---------------------------------------------------------------------------- acting and learning
    def choose(self, features: np.ndarray, agents: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        acting = self.acting
        if acting is not None:
            q = acting.q_values(x)
            if allowed is not None:
                q[~np.asarray(allowed, dtype=bool)] = -np.inf
            return q.argmax(axis=1).astype(np.int64)
        with torch.no_grad():  # a network of other layers than Linear and ReLU: torch's forward pass
            q = self.actor(torch.from_numpy(x))
        if allowed is not None:
            q = q.masked_fill(~torch.from_numpy(np.asarray(allowed, dtype=bool)), -torch.inf)
        return q.argmax(dim=1).numpy().astype(np.int64)

    def choose_rows(self, rows: list[list[float]], x: np.ndarray, agents: list[int], kind: ActionKind) -> list[int]:
        """:meth:`choose` for a few rows (the same numpy forward pass and argmax: the first maximum, a NaN first)."""
        acting = self.acting
        if acting is None or not self._plain("choose", DQN):
            return super().choose_rows(rows, x, agents, kind)
        q = acting.q_values(x)
        mask = self._kind_mask(kind)
        if mask is not None:
            q[:, ~np.asarray(mask, dtype=bool)] = -np.inf
        return q.argmax(axis=1).tolist()

    def _kind_mask(self, kind: ActionKind) -> list[bool] | None:
        if not self.layout.rich:
            return None
        masks = self.__dict__.get("_kind_masks")
        if masks is None:
            masks = self._kind_masks = self.layout._masks.tolist()
        return masks[int(kind)]

    def bid(self, obs: AgentObservation) -> Bids:
        bids = super().bid(obs)
        time_s = obs.market_values()[0]
        if self.learning and time_s >= self._next_learn_s:
            self._next_learn_s = time_s + self.learn_every_s
            self.learning_round()
        return bids

    def learn(self, tr: Transitions) -> None:
        self.replay.add(tr)

    def learn_rows(self, agents: list[int], obs: np.ndarray, actions: list[int], rewards: list[float],
                   next_obs: np.ndarray, next_rows: list[list[float]], dt_s: list[float], terminal: bool) -> bool:
        """:meth:`learn` of a few transitions: into the replay row by row (:meth:`ReplayBuffer.add_few`)."""
        if not self._plain("learn", DQN):
            return False
        return self.replay.add_few(obs, actions, rewards, next_obs, dt_s, terminal)

    def _batch(self, buffer: ReplayBuffer) -> dict[str, np.ndarray]:
        b = buffer.sample(self.rng, self.batch_size)
        discount = np.where(b["terminal"], 0.0, self.gamma ** (b["dt_s"] / self.tau_s))
        batch = {"obs": b["obs"], "action": b["action"], "reward": b["reward"].astype(np.float32),
                 "next_obs": b["next_obs"], "discount": discount.astype(np.float32)}
        mask = self.next_mask(b["next_obs"])
        if mask is not None:  # richer layouts: the target's max runs over the next state's own kind
            batch["next_mask"] = mask
        return batch

    def learning_round(self) -> None:
        """``updates_per_round`` steps on the replay as it stands now, then refresh the acting network."""
        if len(self.replay) < max(self.min_replay, 1):
            return
        # one call per round: on a Cerebras cluster a round is one appliance run (docs/cerebras.md)
        losses = self.learner.steps([self._batch(self.replay) for _ in range(self.updates_per_round)])
        self.losses.extend(losses)
        self.updates += len(losses)
        self._sync()

    def finish_episode(self) -> None:
        if self.learning:
            self.learning_round()

    def pretrain(self, path: Path) -> None:
        """Offline training on exported transitions (``init_from``), which also seed the replay."""
        if path.is_dir():
            path = path / "transitions.npz"
        data = ReplayBuffer.load(path, features=self.features, n_actions=self.n_actions)
        if len(data) == 0:
            raise PolicyError(f"{path}: holds no transitions to pre-train on")
        for start in range(0, self.init_steps, 100):
            self.losses.extend(self.learner.steps([self._batch(data) for _ in range(min(100, self.init_steps - start))]))
        self.replay.add(Transitions(**data.snapshot(), agent=np.zeros(len(data), np.int64)))
        self.pretrained_on = (str(path), len(data))
        # each transition is a decision already made: the ε schedule continues from there instead of restarting
        # at epsilon_start, so a pre-trained network is not thrown into random play
        self.decisions += len(data)

    # ---------------------------------------------------------------------------- checkpoints
    def spec(self) -> dict[str, Any]:
        return {"policy": self.name, "features": list(self.features), "n_actions": self.n_actions,
                "actions": self.layout.name,
                "architecture": self.learner.architecture(), "learner": self.learner_kind, "gamma": self.gamma,
                "tau_s": self.tau_s, "decisions": self.decisions, "updates": self.updates}

    def save_checkpoint(self, path: Path) -> Path:
        """Write ``dqn.pt`` (learner state_dict: online, target, optimizer), ``dqn.json`` (architecture and
        observation spec) and ``replay.npz`` into folder ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        with replacing(path / "dqn.pt") as tmp:  # each file whole or not replaced, even if killed mid-write
            torch.save(self.learner.state_dict(), tmp)
        write_spec(path / "dqn.json", self.spec())
        with replacing(path / "replay.npz") as tmp:
            self.replay.save(tmp)
        return path / "dqn.pt"

    def load_checkpoint(self, path: Path) -> None:
        """Load ``dqn.pt`` (or the folder holding it with ``dqn.json``); the replay too when present."""
        pt = path / "dqn.pt" if path.is_dir() else path
        spec = read_spec(pt.with_suffix(".json"), self.name, self.layout)
        want = self.learner.architecture()
        if spec.get("architecture") != want:
            raise PolicyError(f"{pt.with_suffix('.json')}: network {spec.get('architecture')} does not match "
                              f"this policy's {want} (set policy.params.hidden to match)")
        if not pt.is_file():
            raise PolicyError(f"{pt}: checkpoint weights not found")
        try:
            sd = torch.load(pt, map_location="cpu", weights_only=True)
            self.learner.load_state_dict(sd)
        except Exception as exc:  # torch raises several kinds for a corrupt or foreign file
            raise PolicyError(f"{pt}: cannot load DQN weights ({exc})") from None
        replay = pt.parent / "replay.npz"
        if replay.is_file():
            self.replay = ReplayBuffer.load(replay, capacity=self.replay_capacity, features=self.features,
                                            n_actions=self.n_actions)
        self.decisions = int(spec.get("decisions", 0))
        self.updates = int(spec.get("updates", 0))
        self._sync()

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"hidden": list(self.hidden), "learner": self.learner_kind,
                                       "lr": self.lr, "batch_size": self.batch_size,
                                       "updates_per_round": self.updates_per_round, "init_from": self.init_from,
                                       "double": self.double}
