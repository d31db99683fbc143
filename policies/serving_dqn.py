"""A DQN-style learner for LLM serving runs: per request, deny or serve with one configuration, valued by a torch MLP.

The serving counterpart of :class:`policies.serving_learner.ServingQ`, sharing everything but the value function
(:class:`policies.serving_learner.ServingLearner`): the actions (0 deny, ``1 + k`` serve with row ``k``), the
request context, epsilon-greedy acting on the requests learnt from so far, the per-request reward

    r_i = revenue_i − energy_i / 3.6e9 × price(start_i) − slo_penalty × V_i × missed_i

(:func:`policies.serving_learner.request_rewards`) and the trainer (:mod:`dcsim.serving.training`).

Instead of a table over binned contexts, an MLP (:class:`policies.dqn_core.QNetwork`, trained by
:class:`policies.dqn_core.TorchLearner`: Adam, Huber loss, gradient clipping) maps the continuous context
(:data:`FEATURES`, scaled to about [0, 1]) to one value per action, so similar contexts share what was learnt.
Closed requests go into a replay ring after each run; then ``updates_per_episode`` minibatch steps. As for
``serving_q`` a request decides once and its reward is its own, so every transition is terminal (discount 0):
the DQN loss is a regression of ``Q(x, a)`` on ``r`` — a contextual bandit with a neural value function, not a
sequential value learner. Rewards are multiplied by ``reward_scale`` (by default 1 / the mean |reward| of the
first batch learnt from, kept in the checkpoint) so that the network sees values of order 1; the greedy choice
does not depend on the scale. Acting runs the online network's weights in numpy (refreshed after each learning
step batch), so a decision costs microseconds, not a torch call.

Needs torch (the ``dqn`` extra); without it the policy refuses to load with a message saying what to install.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dcsim.atomic import replacing
from dcsim.errors import PolicyError
from policies.serving_learner import ServingLearner

try:
    import torch

    from policies.dqn_core import TorchLearner
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None

#: The network's inputs, in order: the request context of :meth:`ServingLearner.features`, scaled.
FEATURES = ("wait_over_ttft", "occupancy", "price_position", "log_prompt_tokens", "log_output_tokens",
            "hour_sin", "hour_cos")
#: Estimated waits are clipped at this many TTFT targets (an infinite estimate reads as this).
WAIT_CLIP = 4.0
#: Checkpoint file names inside a checkpoint folder.
WEIGHTS_FILE, META_FILE = "serving_dqn.pt", "serving_dqn.json"


def feature_matrix(features: dict[str, np.ndarray]) -> np.ndarray:
    """``(m, len(FEATURES))`` float32 network inputs from :meth:`ServingLearner.features`: the wait ÷ TTFT target
    clipped to [0, WAIT_CLIP] and divided by it, occupancy and price position as they are (in [0, 1]), prompt and
    output tokens as ``log1p(tokens) / 10``, the hour as a point on the unit circle."""
    wait = np.nan_to_num(np.asarray(features["wait_over_ttft"], dtype=float), nan=WAIT_CLIP, posinf=WAIT_CLIP)
    hour = 2 * math.pi * np.asarray(features["hour_utc"], dtype=float) / 24.0
    cols = [np.clip(wait, 0.0, WAIT_CLIP) / WAIT_CLIP, features["occupancy"], features["price_position"],
            np.log1p(np.maximum(features["prompt_tokens"], 0.0)) / 10.0,
            np.log1p(np.maximum(features["output_tokens"], 0.0)) / 10.0, np.sin(hour), np.cos(hour)]
    return np.stack([np.asarray(c, dtype=float) for c in cols], axis=1).astype(np.float32)


class ServingDQN(ServingLearner):
    """DQN-style admission and configuration choice for serving runs (module docstring; needs torch).

    Args:
        learn: Explore (epsilon-greedy) and record decisions for :meth:`learn_from`; False: greedy, frozen.
        checkpoint: A checkpoint folder (or its ``serving_dqn.pt``) written by :meth:`save_checkpoint`.
        slo_penalty: Share of a request's full value (USD) charged when it is dropped or misses an SLO (>= 0).
        epsilon_start, epsilon_end, epsilon_decay_decisions: The exploration schedule over the requests learnt
            from so far (as ``serving_q``'s).
        hidden: Hidden layer widths of the MLP.
        lr: Adam's learning rate.
        batch_size: Transitions per gradient step.
        replay_capacity: Closed requests kept (the oldest are overwritten).
        updates_per_episode: Gradient steps after each run.
        huber_delta: Smooth-L1 threshold, in scaled reward units.
        reward_scale: Rewards (USD) are multiplied by this before learning; None: 1 / the mean |reward| of the
            first batch learnt from.
        seed: Seeds the network's initial weights.
        torch_threads: ``torch.set_num_threads`` for this process, or None to leave torch's default (1: on a
            2-core machine a second thread slows small steps, see :class:`policies.dqn.DQN`).
    """

    name = "serving_dqn"

    def __init__(self, learn: bool = True, checkpoint: str | None = None, slo_penalty: float = 1.0,
                 epsilon_start: float = 1.0, epsilon_end: float = 0.02, epsilon_decay_decisions: float = 20_000.0,
                 hidden: list[int] | tuple[int, ...] = (64, 64), lr: float = 1e-3, batch_size: int = 256,
                 replay_capacity: int = 200_000, updates_per_episode: int = 300, huber_delta: float = 1.0,
                 reward_scale: float | None = None, seed: int = 0, torch_threads: int | None = 1):
        if torch is None:
            raise PolicyError("policy 'serving_dqn' needs torch: install it with `pip install torch==2.13.0` "
                              "(or `pip install -e '.[dqn]'`); the tabular serving learner `serving_q` needs none")
        super().__init__(learn, slo_penalty, epsilon_start, epsilon_end, epsilon_decay_decisions)
        checks = (("batch_size", batch_size, int(batch_size) >= 1), ("replay_capacity", replay_capacity,
                  int(replay_capacity) >= 1), ("updates_per_episode", updates_per_episode,
                  int(updates_per_episode) >= 0), ("lr", lr, float(lr) > 0), ("huber_delta", huber_delta,
                  float(huber_delta) > 0), ("hidden", hidden, len(hidden) >= 1 and all(int(h) >= 1 for h in hidden)),
                  ("reward_scale", reward_scale, reward_scale is None or (math.isfinite(float(reward_scale))
                                                                         and float(reward_scale) > 0)))
        for field, value, fine in checks:
            if not fine:
                raise PolicyError(f"policy serving_dqn: params.{field}: got {value!r}; expected "
                                  + ("a list of widths >= 1" if field == "hidden" else "a positive number"
                                     if field != "updates_per_episode" else "an integer >= 0"))
        self.hidden = tuple(int(h) for h in hidden)
        self.lr, self.batch_size, self.huber_delta = float(lr), int(batch_size), float(huber_delta)
        self.replay_capacity, self.updates_per_episode = int(replay_capacity), int(updates_per_episode)
        self.reward_scale = None if reward_scale is None else float(reward_scale)
        self.seed = int(seed)
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.learner: Any = None
        self._weights: list[tuple[np.ndarray, np.ndarray]] = []
        self._source: Path | None = None
        self._replay = {"x": np.zeros((0, len(FEATURES)), np.float32), "a": np.zeros(0, np.int64),
                        "r": np.zeros(0, np.float32)}
        self._next = 0
        self.losses: list[float] = []
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    # ------------------------------------------------------------------------------------ the network
    def _network_for(self, n_configs: int) -> None:
        n_actions = 1 + n_configs
        if self.learner is None:
            self.learner = TorchLearner(len(FEATURES), n_actions, self.hidden, lr=self.lr, polyak_tau=1.0,
                                        huber_delta=self.huber_delta, device="cpu", seed=self.seed)
            self._refresh()
        elif self.learner.n_actions != n_actions:
            self._refuse_action_count("the policy's network", "architecture.n_actions", self.learner.n_actions,
                                      n_configs)

    def _refresh(self) -> None:
        """Copy the online network's weights for acting in numpy."""
        sd = self.learner.online_state_dict()
        layers = sorted({k.rsplit(".", 1)[0] for k in sd}, key=lambda k: int(k.split(".")[-1]))
        self._weights = [(sd[f"{k}.weight"].numpy().T.copy(), sd[f"{k}.bias"].numpy().copy()) for k in layers]

    def q_values(self, x: np.ndarray) -> np.ndarray:
        """``(m, n_actions)`` values (scaled reward units) of inputs ``x`` (:func:`feature_matrix` rows)."""
        h = np.asarray(x, dtype=np.float32)
        last = len(self._weights) - 1
        for i, (w, b) in enumerate(self._weights):
            h = h @ w + b
            if i < last:
                np.maximum(h, 0.0, out=h)
        return h

    # ------------------------------------------------------------------------------------ ServingLearner hooks
    def encode(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return feature_matrix(features)

    def action_values(self, context: np.ndarray, n_configs: int) -> np.ndarray:
        self._network_for(n_configs)
        return self.q_values(context)

    def fit(self, context: np.ndarray, action: np.ndarray, reward_usd: np.ndarray) -> None:
        """Add the closed requests to the replay ring, then ``updates_per_episode`` minibatch steps on it."""
        n = int(np.asarray(action).size)
        if n == 0:
            return
        if self.reward_scale is None:
            mean_abs = float(np.mean(np.abs(reward_usd)))
            self.reward_scale = 1.0 / mean_abs if mean_abs > 0 else 1.0
        self._add(np.asarray(context, np.float32), np.asarray(action, np.int64),
                  (np.asarray(reward_usd, float) * self.reward_scale).astype(np.float32))
        self.learnt += n
        size = self._replay["a"].size
        zeros = np.zeros(min(self.batch_size, size), np.float32)
        for _ in range(self.updates_per_episode):
            pick = self.rng.integers(0, size, size=zeros.size)
            x = self._replay["x"][pick]
            self.losses.append(self.learner.step({"obs": x, "action": self._replay["a"][pick],
                                                  "reward": self._replay["r"][pick], "next_obs": x,
                                                  "discount": zeros}))
        self._refresh()

    def _add(self, x: np.ndarray, a: np.ndarray, r: np.ndarray) -> None:
        rep, cap = self._replay, self.replay_capacity
        if rep["a"].size < cap:  # still growing: append what fits, then wrap
            room = cap - rep["a"].size
            rep["x"] = np.concatenate([rep["x"], x[:room]])
            rep["a"] = np.concatenate([rep["a"], a[:room]])
            rep["r"] = np.concatenate([rep["r"], r[:room]])
            x, a, r = x[room:], a[room:], r[room:]
        for i in range(a.size):  # full: overwrite the oldest
            j = self._next
            rep["x"][j], rep["a"][j], rep["r"][j] = x[i], a[i], r[i]
            self._next = (j + 1) % cap

    # ------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, folder: str | Path) -> Path:
        """Write the learner (``serving_dqn.pt``: weights, optimizer) and the settings (``serving_dqn.json``)."""
        if self.learner is None:
            raise PolicyError("policy serving_dqn: nothing to save (no serving decision made yet)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with replacing(folder / WEIGHTS_FILE) as tmp:
            torch.save(self.learner.state_dict(), tmp)
        meta = {"policy": self.name, "features": list(FEATURES), "wait_clip": WAIT_CLIP,
                "architecture": self.learner.architecture(), "reward_scale": self.reward_scale,
                "learnt": self.learnt, "decisions": self.decisions, "slo_penalty": self.slo_penalty,
                "price_lo_usd_per_mwh": self.price_lo if math.isfinite(self.price_lo) else None,
                "price_hi_usd_per_mwh": self.price_hi if math.isfinite(self.price_hi) else None}
        with replacing(folder / META_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    def load_checkpoint(self, path: str | Path) -> None:
        """Read a checkpoint folder (or its ``serving_dqn.pt``) written by :meth:`save_checkpoint`.

        Raises:
            PolicyError: A file is missing or malformed, or it was written for other input features (naming the
                file, the field, the value and what was expected). A network of another number of actions is
                refused at the first decision, where the run's configuration table is known.
        """
        path = Path(path)
        folder = path.parent if path.suffix == ".pt" else path
        weights, meta_path = folder / WEIGHTS_FILE, folder / META_FILE
        for f in (weights, meta_path):
            if not f.is_file():
                raise PolicyError(f"{f}: file not found; expected the {WEIGHTS_FILE} and {META_FILE} a serving_dqn "
                                  "training writes into its checkpoint/ folder")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{meta_path}: not JSON ({exc})") from None
        if meta.get("features") != list(FEATURES):
            raise PolicyError(f"{meta_path}: field 'features': got {meta.get('features')!r}; expected "
                              f"{list(FEATURES)!r} (the inputs of this version of policies/serving_dqn.py)")
        arch = meta.get("architecture") or {}
        try:
            sd = torch.load(weights, map_location="cpu", weights_only=False)
            self.hidden = tuple(int(h) for h in arch["hidden"])
            self.learner = TorchLearner(len(FEATURES), int(arch["n_actions"]), self.hidden, lr=self.lr,
                                        polyak_tau=1.0, huber_delta=self.huber_delta, device="cpu", seed=self.seed)
            self.learner.load_state_dict(sd)
        except (KeyError, TypeError, ValueError, RuntimeError, OSError) as exc:
            raise PolicyError(f"{weights}: not a serving_dqn checkpoint matching {meta_path.name}'s architecture "
                              f"{arch!r} ({exc.__class__.__name__}: {exc})") from None
        self._source = weights
        self._refresh()
        self.reward_scale = meta.get("reward_scale")
        self.learnt, self.decisions = int(meta.get("learnt", 0)), int(meta.get("decisions", 0))
        lo, hi = meta.get("price_lo_usd_per_mwh"), meta.get("price_hi_usd_per_mwh")
        self.price_lo = math.inf if lo is None else float(lo)
        self.price_hi = -math.inf if hi is None else float(hi)

    def state_dict(self) -> dict:
        return super().state_dict() | {"hidden": list(self.hidden), "reward_scale": self.reward_scale,
                                       "learnt": self.learnt,
                                       "n_actions": None if self.learner is None else self.learner.n_actions}
