"""MAPPO through the PettingZoo env: a cooperative multi-agent PPO with a centralised critic, in one file.

``python -m dcsim train SCENARIO --algo mappo --episodes N`` trains it; :class:`MappoPolicy` runs the trained
actor inside dcsim (``python -m dcsim run SCENARIO --policy policies.mappo:MappoPolicy --checkpoint DIR``).
Written CleanRL-style (read top to bottom) because no maintained MAPPO library installs next to this torch
(``docs/rl.md`` says why). The algorithm is MAPPO as in Yu et al. (2022), "The Surprising Effectiveness of PPO
in Cooperative Multi-Agent Games", adapted to dcsim's irregular decisions:

- **Agents and actors.** The agents of :class:`dcsim.envs.DcsimParallelEnv`: one per GPU and the admission
  agent. Every GPU agent shares one actor (parameter sharing) over its own observation (the global block and its
  per-GPU row); it has a :class:`~dcsim.learning.BidAction` head and an :class:`~dcsim.policy.IdleAction` head.
  The admission agent's actor is shared over its slots: one :class:`~dcsim.policy.Admission` per waiting job from
  the global block and that job's row.
- **Masks.** A step is one engine decision. Only the agents deciding at it (``infos[a]["deciding"]``) contribute
  samples, and each only through the head its decision uses (the bid head at ``bid`` steps, the idle head at
  ``on_idle`` steps, the admission head for the slots holding a job); every other column is ignored by the env
  and left out of the loss.
- **Centralised critic.** ``V(s)`` of the global state: the global block, the per-GPU rows pooled (mean and
  max over GPUs, so one critic fits any cluster size) and the admission rows pooled (mean). It is trained on the
  team reward, the mean over GPU agents of their rewards (summed over an episode: the run's reward per GPU,
  whatever ``reward.team_fraction`` says about the individual ones).
- **Semi-Markov GAE.** Step ``t`` is followed by ``dt`` seconds of simulated time before the next decision; the
  continuation is discounted by ``γ^(dt/τ)`` (0 s apart: no discount), in the TD error and in the λ-return:
  ``δ_t = r_t + γ^(dt_t/τ)·V(s_{t+1}) − V(s_t)``, ``A_t = δ_t + γ^(dt_t/τ)·λ·A_{t+1}``
  (:func:`semi_markov_gae`). The reward accrued within an interval is not discounted inside it.
- **Loss.** PPO's clipped surrogate per agent-sample (each decider's own ratio, the step's team advantage),
  a squared value error, an entropy bonus over the used heads (:func:`clipped_policy_loss`).

One training episode is one update: collect the whole episode (episode ``k`` runs seed ``seed + k``, as
``train --policy`` does), then ``update_epochs`` passes of ``minibatches`` minibatches. Torch is imported only
by what needs it, so ``import policies.mappo`` (and the GAE) work without it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dcsim.errors import DcsimError, PolicyError
from dcsim.learning import BidAction, bids_from_actions
from dcsim.policy import Admission, AgentObservation, Bids, GpuSpecView, IdleAction, JobObservation, Policy

ALGO = "mappo"
#: The policy that runs a trained actor inside dcsim (the evaluation's arm and ``run --policy``).
POLICY_TARGET = "policies.mappo:MappoPolicy"
CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "mappo.pt"
META_FILE = "mappo.json"
FORMAT = 1
_N_BID, _N_IDLE, _N_ADMIT = len(BidAction), len(IdleAction), len(Admission)
_LOG_ZERO = -1e9  # the log-probability of a choice a head does not have


@dataclass
class MappoConfig:
    """Settings of a MAPPO training (``--algo-option KEY=VALUE`` sets any of them)."""

    learning_rate: float = 3e-4
    """Adam step size."""
    gamma: float = 0.99
    """Discount per ``tau_s`` of simulated time: ``dt`` seconds discount the continuation by γ^(dt/τ)."""
    tau_s: float = 3600.0
    """Time unit of the discount, s."""
    gae_lambda: float = 0.95
    """λ of the generalised advantage estimate (per step)."""
    clip_coef: float = 0.2
    """PPO's ratio clip ε: the surrogate is flat outside [1 − ε, 1 + ε] on the side the advantage favours."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the critic's squared error."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    update_epochs: int = 4
    """Passes over each episode's samples."""
    minibatches: int = 4
    """Minibatches per pass."""
    hidden: int = 64
    """Width of the two hidden layers of each network."""
    norm_adv: bool = True
    """Normalise the advantages of each update to mean 0, standard deviation 1."""
    admission_slots: int = 8
    """Deferrable jobs per admission step of the env."""
    forecast_hours: tuple[float, ...] = (1.0, 2.0, 3.0)
    """Hours ahead of the renewable-forecast features."""

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> "MappoConfig":
        """A config from ``--algo-option`` keys; an unknown key or a bad value is a :class:`DcsimError`."""
        options = dict(options or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise DcsimError(f"--algo-option {', '.join(unknown)}: not a setting of --algo mappo; allowed: "
                             f"{', '.join(names)}")
        if "forecast_hours" in options:
            options["forecast_hours"] = tuple(np.atleast_1d(np.asarray(options["forecast_hours"], float)).tolist())
        cfg = cls(**options)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Refuse values outside the ranges the algorithm is defined on."""
        rules = {"learning_rate": (self.learning_rate > 0, "> 0"), "gamma": (0 < self.gamma <= 1, "in (0, 1]"),
                 "tau_s": (self.tau_s > 0, "> 0"), "gae_lambda": (0 <= self.gae_lambda <= 1, "in [0, 1]"),
                 "clip_coef": (self.clip_coef > 0, "> 0"), "ent_coef": (self.ent_coef >= 0, ">= 0"),
                 "vf_coef": (self.vf_coef >= 0, ">= 0"), "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
                 "update_epochs": (_is_int(self.update_epochs) and self.update_epochs >= 1, "an integer >= 1"),
                 "minibatches": (_is_int(self.minibatches) and self.minibatches >= 1, "an integer >= 1"),
                 "hidden": (_is_int(self.hidden) and self.hidden >= 1, "an integer >= 1"),
                 "admission_slots": (_is_int(self.admission_slots) and self.admission_slots >= 1, "an integer >= 1"),
                 "forecast_hours": (all(h >= 0 for h in self.forecast_hours), "hours >= 0")}
        for name, (good, allowed) in rules.items():
            try:
                fine = bool(good)
            except (TypeError, ValueError):
                fine = False
            if not fine:
                raise DcsimError(f"--algo-option {name}={getattr(self, name)!r}: allowed: {allowed}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# --------------------------------------------------------------------------------------------- the algorithm
def semi_markov_gae(rewards: np.ndarray, values: np.ndarray, discounts: np.ndarray, dones: np.ndarray,
                    lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates of one trajectory with a discount per step.

    Args:
        rewards: ``(T,)`` reward accrued after the action of step ``t`` until the next step.
        values: ``(T + 1,)`` ``V(s_t)``; the last entry is the value after the last step (ignored where it ends
            the episode).
        discounts: ``(T,)`` the discount of the continuation after step ``t``: γ^(dt/τ), dt the simulated time
            to the next step.
        dones: ``(T,)`` 1 where step ``t`` ended the episode (no bootstrap past it).
        lam: GAE's λ.

    Returns:
        ``(advantages, returns)``, each ``(T,)``; ``returns = advantages + values[:-1]`` (the critic's target).
    """
    rewards, values = np.asarray(rewards, float), np.asarray(values, float)
    discounts, dones = np.asarray(discounts, float), np.asarray(dones, float)
    advantages = np.zeros_like(rewards)
    last = 0.0
    for t in range(rewards.size - 1, -1, -1):
        carry = discounts[t] * (1.0 - dones[t])
        delta = rewards[t] + carry * values[t + 1] - values[t]
        last = delta + carry * lam * last
        advantages[t] = last
    return advantages, advantages + values[:-1]


def clipped_policy_loss(new_logp, old_logp, advantages, clip_coef: float):
    """PPO's clipped surrogate loss (to minimise), the mean over samples of
    ``max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε))`` with ``ρ = exp(new_logp − old_logp)``; torch tensors in and out.
    Also returns the fraction of samples whose ratio was clipped."""
    torch = _torch()
    ratio = torch.exp(new_logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return torch.max(unclipped, clipped).mean(), clipfrac


def critic_state(glob: np.ndarray, gpu_rows: np.ndarray, slot_rows: np.ndarray) -> np.ndarray:
    """The centralised critic's input: the global block, the per-GPU rows pooled (mean, max) and the admission
    rows pooled (mean)."""
    return np.concatenate([glob, gpu_rows.mean(axis=0), gpu_rows.max(axis=0), slot_rows.mean(axis=0)]
                          ).astype(np.float32)


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise DcsimError(f"--algo mappo and policies.mappo need torch ({exc}); install dcsim[rl]: "
                         "pip install -e '.[rl]'") from None
    return torch


def build_networks(gpu_in: int, slot_in: int, critic_in: int, hidden: int, seed: int):
    """The GPU actor (``BidAction`` then ``IdleAction`` logits), the admission actor and the critic, as one
    ``torch.nn.ModuleDict``; orthogonal initialisation from a generator seeded by ``seed`` (no global RNG)."""
    torch = _torch()
    nn = torch.nn
    gen = torch.Generator().manual_seed(int(seed))

    def mlp(n_in: int, n_out: int, head_gain: float) -> Any:
        layers = [nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_out)]
        for layer, gain in zip(layers[::2], (math.sqrt(2.0), math.sqrt(2.0), head_gain)):
            nn.init.orthogonal_(layer.weight, gain, generator=gen)
            nn.init.zeros_(layer.bias)
        return nn.Sequential(*layers)

    return nn.ModuleDict({"gpu": mlp(gpu_in, _N_BID + _N_IDLE, 0.01), "admit": mlp(slot_in, _N_ADMIT, 0.01),
                          "critic": mlp(critic_in, 1, 1.0)})


def gpu_log_probs(nets, x, column):
    """Log-probabilities ``(k, len(BidAction))`` of a GPU actor's used head: rows with ``column`` 0 use the bid
    head, rows with 1 the idle head (``len(IdleAction)`` choices; the entries past them are ``_LOG_ZERO``)."""
    torch = _torch()
    logits = nets["gpu"](x)
    bid = torch.log_softmax(logits[:, :_N_BID], dim=-1)
    idle = torch.log_softmax(logits[:, _N_BID:], dim=-1)
    # the idle head's missing choices get a finite floor (exp() is exactly 0 there, and no inf·0 in gradients)
    idle = torch.cat([idle, torch.full((idle.shape[0], _N_BID - _N_IDLE), _LOG_ZERO)], dim=-1)
    return torch.where(column.reshape(-1, 1) == 0, bid, idle)


def _entropy(logp):
    return -(logp.exp() * logp).sum(dim=-1)


def _sample(logp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per row of the categorical distributions with log-probabilities ``logp`` (inverse CDF)."""
    cdf = np.cumsum(np.exp(logp.astype(np.float64)), axis=1)
    u = rng.random((logp.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), logp.shape[1] - 1).astype(np.int64)


# --------------------------------------------------------------------------------------------- training
@dataclass
class _Episode:
    """One episode's samples: per step (critic) and per agent-sample (actors)."""

    states: list = dataclasses.field(default_factory=list)
    rewards: list = dataclasses.field(default_factory=list)
    discounts: list = dataclasses.field(default_factory=list)
    dones: list = dataclasses.field(default_factory=list)
    gpu_x: list = dataclasses.field(default_factory=list)
    gpu_col: list = dataclasses.field(default_factory=list)
    gpu_a: list = dataclasses.field(default_factory=list)
    gpu_logp: list = dataclasses.field(default_factory=list)
    gpu_step: list = dataclasses.field(default_factory=list)
    adm_x: list = dataclasses.field(default_factory=list)
    adm_a: list = dataclasses.field(default_factory=list)
    adm_logp: list = dataclasses.field(default_factory=list)
    adm_step: list = dataclasses.field(default_factory=list)


class MappoTrainer:
    """Collects episodes through a :class:`~dcsim.envs.DcsimParallelEnv` and updates the actors and critic.

    Args:
        scenario: The scenario (its ``policy:`` is ignored).
        config: The settings.
    """

    def __init__(self, scenario, config: MappoConfig):
        from dcsim.envs import require
        from dcsim.seeding import Streams

        require("pettingzoo", "--algo mappo")
        torch = _torch()
        from dcsim.envs.features import GPU_FEATURES, JOB_FEATURES
        from dcsim.envs.parallel_env import DcsimParallelEnv

        self.scenario, self.config = scenario, config
        self.env = DcsimParallelEnv(scenario, admission_slots=config.admission_slots,
                                    forecast_hours=config.forecast_hours,
                                    facility_agent=False)  # no facility actor: the battery keeps its fixed rule
        self.g = len(self.env.global_names)
        self.dims = {"gpu_in": self.g + len(GPU_FEATURES), "slot_in": self.g + len(JOB_FEATURES),
                     "critic_in": self.g + 2 * len(GPU_FEATURES) + len(JOB_FEATURES)}
        seq = Streams(scenario.seed).seed_sequence("policy")
        init_seed, = seq.generate_state(1)
        self.rng = np.random.default_rng(seq.spawn(1)[0])
        self.nets = build_networks(**self.dims, hidden=config.hidden, seed=int(init_seed))
        self.optimizer = torch.optim.Adam(self.nets.parameters(), lr=config.learning_rate, eps=1e-5)
        self.updates = 0

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------------ collecting
    def collect(self, seed: int) -> tuple[_Episode, Any]:
        """Run one episode on root seed ``seed`` with the current actors (sampling); its samples and result."""
        torch = _torch()
        env, g, cfg = self.env, self.g, self.config
        gpu_agents, slots = env.gpu_agents, cfg.admission_slots
        gamma_per_s = math.log(cfg.gamma) / cfg.tau_s
        ep = _Episode()
        obs, infos = env.reset(seed=seed)
        done = False
        while not done:
            t = len(ep.states)
            kind = infos[gpu_agents[0]]["decision"]
            glob = obs[gpu_agents[0]][:g]
            gpu_mat = np.stack([obs[a] for a in gpu_agents])
            slot_mat = obs["admission"][g:].reshape(slots, -1)
            ep.states.append(critic_state(glob, gpu_mat[:, g:], slot_mat))
            if kind == "admit":
                k = int((slot_mat[:, 0] > 0.5).sum())  # the env fills the first k slots
                x = np.concatenate([np.tile(glob, (k, 1)), slot_mat[:k]], axis=1).astype(np.float32)
                with torch.no_grad():
                    logp = torch.log_softmax(self.nets["admit"](torch.from_numpy(x)), dim=-1).numpy()
                a = _sample(logp, self.rng)
                choice = np.zeros(slots, np.int64)
                choice[:k] = a
                actions = {"admission": choice}
                ep.adm_x.append(x)
                ep.adm_a.append(a)
                ep.adm_logp.append(logp[np.arange(k), a])
                ep.adm_step.append(np.full(k, t))
            else:
                col = 0 if kind == "bid" else 1
                who = [i for i, agent in enumerate(gpu_agents) if infos[agent]["deciding"]]
                x = gpu_mat[who].astype(np.float32).reshape(len(who), -1)
                cols = torch.full((len(who),), col)
                with torch.no_grad():
                    logp = gpu_log_probs(self.nets, torch.from_numpy(x), cols).numpy()
                a = _sample(logp[:, :(_N_BID if col == 0 else _N_IDLE)], self.rng)
                actions = {gpu_agents[i]: np.array([a[j], 0] if col == 0 else [0, a[j]], np.int64)
                           for j, i in enumerate(who)}
                ep.gpu_x.append(x)
                ep.gpu_col.append(np.full(len(who), col))
                ep.gpu_a.append(a)
                ep.gpu_logp.append(logp[np.arange(len(who)), a])
                ep.gpu_step.append(np.full(len(who), t))
            obs, rewards, terminations, _, infos = env.step(actions)
            done = bool(terminations[gpu_agents[0]])
            ep.rewards.append(float(np.mean([rewards[a] for a in gpu_agents])))
            ep.discounts.append(math.exp(gamma_per_s * infos[gpu_agents[0]]["dt_s"]))
            ep.dones.append(float(done))
        return ep, env.last_result

    # ------------------------------------------------------------------ updating
    def update(self, ep: _Episode) -> dict[str, float]:
        """PPO epochs over one episode's samples; the mean losses and diagnostics."""
        torch = _torch()
        cfg = self.config
        states = torch.from_numpy(np.stack(ep.states))
        with torch.no_grad():
            values = self.nets["critic"](states).squeeze(-1).numpy().astype(float)
        adv, ret = semi_markov_gae(np.array(ep.rewards), np.append(values, 0.0), np.array(ep.discounts),
                                   np.array(ep.dones), cfg.gae_lambda)

        def cat(parts: list, dtype) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        gx = torch.from_numpy(np.concatenate(ep.gpu_x)) if ep.gpu_x else torch.zeros((0, self.dims["gpu_in"]))
        ax = torch.from_numpy(np.concatenate(ep.adm_x)) if ep.adm_x else torch.zeros((0, self.dims["slot_in"]))
        gcol, ga = torch.from_numpy(cat(ep.gpu_col, np.int64)), torch.from_numpy(cat(ep.gpu_a, np.int64))
        aa = torch.from_numpy(cat(ep.adm_a, np.int64))
        glp, alp = torch.from_numpy(cat(ep.gpu_logp, np.float32)), torch.from_numpy(cat(ep.adm_logp, np.float32))
        sample_adv = np.concatenate([adv[cat(ep.gpu_step, np.int64)], adv[cat(ep.adm_step, np.int64)]])
        if cfg.norm_adv and sample_adv.size > 1:
            sample_adv = (sample_adv - sample_adv.mean()) / (sample_adv.std() + 1e-8)
        n_gpu = gx.shape[0]
        sadv = torch.from_numpy(sample_adv.astype(np.float32))
        ret_t = torch.from_numpy(ret.astype(np.float32))
        n_samples, n_steps = sadv.shape[0], len(ep.states)
        stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "v_loss", "entropy", "approx_kl", "clipfrac")}
        for _ in range(cfg.update_epochs):
            s_order = np.array_split(self.rng.permutation(n_samples), cfg.minibatches)
            t_order = np.array_split(self.rng.permutation(n_steps), cfg.minibatches)
            for s_idx, t_idx in zip(s_order, t_order):
                gi = torch.from_numpy(s_idx[s_idx < n_gpu])
                ai = torch.from_numpy(s_idx[s_idx >= n_gpu] - n_gpu)
                logp_g = gpu_log_probs(self.nets, gx[gi], gcol[gi])
                logp_a = torch.log_softmax(self.nets["admit"](ax[ai]), dim=-1)
                new = torch.cat([logp_g.gather(1, ga[gi].reshape(-1, 1)).squeeze(1),
                                 logp_a.gather(1, aa[ai].reshape(-1, 1)).squeeze(1)])
                old = torch.cat([glp[gi], alp[ai]])
                mb_adv = torch.cat([sadv[gi], sadv[ai + n_gpu]])
                loss = torch.zeros(())
                if new.numel():
                    pg_loss, clipfrac = clipped_policy_loss(new, old, mb_adv, cfg.clip_coef)
                    entropy = torch.cat([_entropy(logp_g), _entropy(logp_a)]).mean()
                    loss = loss + pg_loss - cfg.ent_coef * entropy
                    with torch.no_grad():
                        log_ratio = new - old
                        stats["approx_kl"].append(float(((log_ratio.exp() - 1) - log_ratio).mean()))
                    stats["pg_loss"].append(pg_loss.item())
                    stats["entropy"].append(entropy.item())
                    stats["clipfrac"].append(clipfrac.item())
                if t_idx.size:
                    ti = torch.from_numpy(t_idx)
                    v_loss = 0.5 * ((self.nets["critic"](states[ti]).squeeze(-1) - ret_t[ti]) ** 2).mean()
                    loss = loss + cfg.vf_coef * v_loss
                    stats["v_loss"].append(v_loss.item())
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.nets.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
        self.updates += 1
        var = float(np.var(ret))
        out = {k: float(np.mean(v)) if v else math.nan for k, v in stats.items()}
        out["explained_variance"] = math.nan if var == 0 else 1.0 - float(np.var(ret - values)) / var
        out["agent_samples"] = float(n_samples)
        return out

    # ------------------------------------------------------------------ saving
    def save(self, folder: Path) -> Path:
        """Write the checkpoint folder (weights and what :class:`MappoPolicy` needs to act) and return it."""
        torch = _torch()
        from dcsim.config import scenario_to_dict
        from dcsim.envs.features import GPU_FEATURES, JOB_FEATURES

        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().clone() for k, v in self.nets.state_dict().items()}, folder / WEIGHTS_FILE)
        meta = {"format": FORMAT, "algo": ALGO, "dims": self.dims, "hidden": self.config.hidden,
                "config": _plain(dataclasses.asdict(self.config)), "action_set": action_set(),
                "features": {"global": list(self.env.global_names), "gpu": list(GPU_FEATURES),
                             "job": list(JOB_FEATURES)},
                "n_gpus": self.env.n_gpus, "interval_s": self.scenario.market.interval_s,
                "updates": self.updates, "scenario": scenario_to_dict(self.scenario)}
        (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return folder


def action_set() -> dict[str, list[str]]:
    """The action enums' member names: a checkpoint of another action set is refused."""
    return {"bid": [m.name for m in BidAction], "idle": [m.name for m in IdleAction],
            "admit": [m.name for m in Admission]}


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _tensorboard_dir(root: Path) -> Path:
    """``root/MAPPO_<n>``, n one more than the highest there (as SB3 numbers its runs)."""
    taken = [int(m.group(1)) for p in root.glob("MAPPO_*") if (m := re.fullmatch(r"MAPPO_(\d+)", p.name))]
    return root / f"MAPPO_{max(taken, default=0) + 1}"


def check_training(episodes: int, algo_options: dict[str, Any] | None, tensorboard: Path | None) -> MappoConfig:
    """Refuse a bad budget, a bad ``--algo-option`` or a missing library before anything runs; the config."""
    from dcsim.envs import require

    if not _is_int(episodes) or episodes < 1:
        raise DcsimError(f"--episodes {episodes!r}: allowed: an integer >= 1")
    config = MappoConfig.from_options(algo_options)
    require("pettingzoo", "--algo mappo")
    _torch()
    if tensorboard is not None:
        require("tensorboard", "--tensorboard")
    return config


def train_mappo(scenario, episodes: int, out: Path, *, overwrite: bool = False,
                algo_options: dict[str, Any] | None = None, tensorboard: Path | None = None,
                finish: Callable[[Path, Path], None] | None = None, command: str = "",
                on_episode: Callable[[dict[str, Any]], None] | None = None):
    """Train MAPPO on ``scenario`` for ``episodes`` episodes (one update each), writing into ``out`` atomically.

    Writes ``checkpoint/`` (``mappo.pt``, ``mappo.json``), ``learning_curve.csv`` (one row per episode: seed,
    return per GPU, steps, losses) and ``train_metadata.yaml``; with ``tensorboard`` the event files go to
    ``tensorboard/MAPPO_<n>``.

    Args:
        algo_options: :class:`MappoConfig` fields.
        finish: Called with the working folder and its checkpoint folder before the folder is renamed to ``out``
            (the CLI's evaluation writes there).

    Returns:
        The learning curve.
    """
    import pandas as pd
    import yaml

    from dcsim.atomic import atomic_output_dir, write_text_atomic
    from dcsim.config import scenario_to_dict
    from dcsim.learning import episode_reward, episode_totals

    config = check_training(episodes, algo_options, tensorboard)
    writer = None
    trainer = MappoTrainer(scenario, config)
    rows = []
    try:
        with atomic_output_dir(out, overwrite=overwrite) as work:
            meta = {"command": command, "algo": ALGO, "episodes": episodes,
                    "algo_options": _plain(dataclasses.asdict(config)), "scenario": scenario_to_dict(scenario)}
            write_text_atomic(work / "train_metadata.yaml", yaml.safe_dump(meta, sort_keys=False))
            if tensorboard is not None:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=str(_tensorboard_dir(Path(tensorboard))))
            n = scenario.cluster.gpus
            for k in range(episodes):
                seed = scenario.seed + k
                ep, result = trainer.collect(seed)
                stats = trainer.update(ep)
                ret = episode_reward(episode_totals(result), scenario.reward) / n
                row = {"episode": k, "seed": seed, "return_per_gpu": ret, "steps": len(ep.states),
                       "team_return_per_gpu": float(np.sum(ep.rewards))} | stats
                rows.append(row)
                if writer is not None:
                    for key, value in row.items():
                        if key not in ("episode", "seed") and math.isfinite(value):
                            writer.add_scalar(("charts/" if "return" in key or key == "steps" else "losses/") + key,
                                              value, k)
                    writer.flush()
                if on_episode is not None:
                    on_episode(row)
            curve = pd.DataFrame(rows)
            curve.to_csv(work / "learning_curve.csv", index=False)
            checkpoint = trainer.save(work / CHECKPOINT_DIR)
            if finish is not None:
                finish(work, checkpoint)
    finally:
        trainer.close()
        if writer is not None:
            writer.close()
    return curve


# --------------------------------------------------------------------------------------------- acting in dcsim
class MappoPolicy(Policy):
    """Runs a trained MAPPO actor inside dcsim, greedily (the most likely action of each decider).

    It builds the PettingZoo env's observations from what the engine hands a policy
    (:func:`dcsim.envs.features.global_features_of`, ``gpu_rows``, ``job_rows``), so a run with it is the run
    the trained actor makes through the env. The forecast features read the renewable series of ``scenario``
    (default: the training scenario saved in the checkpoint), since a policy does not see the run's supply.

    Args:
        checkpoint: The ``checkpoint`` folder (or its ``mappo.json``) written by ``train --algo mappo``.
        learn: Must be False: MAPPO learns in ``train --algo mappo``, not inside a run.
        scenario: A scenario file whose supply series and horizon feed the forecast features.
    """

    name = "mappo"
    wants_feedback = True  # a learning policy's run (``run --checkpoint`` takes it); the same run as the env's

    def __init__(self, checkpoint: str | None = None, learn: bool = False, scenario: str | None = None):
        super().__init__()
        if checkpoint is None:
            raise PolicyError(f"policy {self.name!r}: give checkpoint=<the checkpoint folder of train --algo mappo> "
                              "(or --checkpoint DIR)")
        if learn:
            raise PolicyError(f"policy {self.name!r}: learn=true: MAPPO learns in `train --algo mappo`; "
                              "a run acts with the trained actor (learn=false)")
        self.checkpoint = Path(checkpoint)
        self.scenario_path = scenario
        self.meta, self.nets = read_checkpoint(self.checkpoint)
        self._supply = None

    def load_checkpoint(self, path: str | Path) -> None:
        """Replace the actor by the one in ``path``."""
        self.checkpoint = Path(path)
        self.meta, self.nets = read_checkpoint(self.checkpoint)

    def reset(self, rng: np.random.Generator, gpu: GpuSpecView, n_gpus: int) -> None:
        from dcsim.config import Scenario, load_scenario
        from dcsim.supply import build_supply

        self.rng, self.n_gpus = rng, n_gpus
        self.full_power_w = gpu.full_power_w * n_gpus
        if self._supply is None:
            if self.scenario_path is not None:
                sc = load_scenario(self.scenario_path)
            else:
                try:
                    sc = Scenario.model_validate(self.meta["scenario"])
                except Exception as exc:  # a pydantic error: the saved scenario no longer validates
                    raise PolicyError(f"{self.checkpoint}: {META_FILE}: scenario: the training scenario saved "
                                      f"there does not load ({exc.__class__.__name__}); give scenario=PATH") from None
            self._supply, self._horizon_s = build_supply(sc), sc.horizon_s
        cfg = self.meta["config"]
        self._slots = int(cfg["admission_slots"])
        self._hours = tuple(float(h) for h in cfg["forecast_hours"])
        self._interval_s = float(self.meta["interval_s"])

    def _glob(self, kind, market) -> np.ndarray:
        from dcsim.envs.features import global_features_of

        return global_features_of(kind, market, self.n_gpus, self._supply, self._horizon_s, self._hours,
                                  self.full_power_w)

    def _gpu_actions(self, obs: AgentObservation, kind, column: int) -> np.ndarray:
        torch = _torch()
        from dcsim.envs.features import gpu_rows

        rows = gpu_rows(obs, self.n_gpus, self._interval_s, np.ones(len(obs)))
        x = np.concatenate([np.tile(self._glob(kind, obs.market), (len(obs), 1)), rows], axis=1)
        with torch.no_grad():
            logp = gpu_log_probs(self.nets, torch.from_numpy(x.astype(np.float32)),
                                 torch.full((len(obs),), column)).numpy()
        return np.argmax(logp, axis=1)

    def bid(self, obs: AgentObservation) -> Bids:
        from dcsim.envs.bridge import DecisionKind

        return bids_from_actions(self._gpu_actions(obs, DecisionKind.BID, 0), obs)

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        from dcsim.envs.bridge import DecisionKind

        return self._gpu_actions(obs, DecisionKind.IDLE, 1).astype(np.int8)

    def admit(self, obs: JobObservation) -> np.ndarray:
        torch = _torch()
        from dcsim.envs.bridge import DecisionKind
        from dcsim.envs.features import job_rows

        glob = self._glob(DecisionKind.ADMIT, obs.market)
        parts = []
        for first in range(0, len(obs), self._slots):  # the env asks about `slots` jobs per step
            k = min(self._slots, len(obs) - first)
            x = np.concatenate([np.tile(glob, (k, 1)), job_rows(obs, self._slots, self.n_gpus, first)[:k]], axis=1)
            with torch.no_grad():
                parts.append(self.nets["admit"](torch.from_numpy(x.astype(np.float32))).argmax(dim=-1).numpy())
        return (np.concatenate(parts) if parts else np.zeros(0)).astype(np.int8)

    def state_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "updates": self.meta.get("updates")}


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], Any]:
    """The metadata and networks of a checkpoint folder (or its ``mappo.json``); clear errors for a missing or
    foreign checkpoint and for one of another action set."""
    torch = _torch()
    path = Path(path)
    folder = path.parent if path.name == META_FILE else path
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise PolicyError(f"checkpoint {path}: no {META_FILE} there; give the checkpoint folder written by "
                          "`python -m dcsim train SCENARIO --algo mappo` (<out>/checkpoint)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PolicyError(f"checkpoint {meta_file}: not JSON ({exc})") from None
    if meta.get("algo") != ALGO or meta.get("format") != FORMAT:
        raise PolicyError(f"checkpoint {meta_file}: algo={meta.get('algo')!r}, format={meta.get('format')!r}; "
                          f"allowed: algo={ALGO!r}, format={FORMAT}")
    if meta.get("action_set") != action_set():
        raise PolicyError(f"checkpoint {meta_file}: action_set: {meta.get('action_set')!r} is another action set "
                          f"than this dcsim's {action_set()!r}; retrain with `train --algo mappo`")
    from dcsim.envs.features import GPU_FEATURES, JOB_FEATURES, global_feature_names

    features = {"global": list(global_feature_names(tuple(float(h) for h in meta["config"]["forecast_hours"]))),
                "gpu": list(GPU_FEATURES), "job": list(JOB_FEATURES)}
    if meta.get("features") != features:
        raise PolicyError(f"checkpoint {meta_file}: features: {meta.get('features')!r} differ from this dcsim's "
                          f"observation {features!r}; retrain with `train --algo mappo`")
    d = meta["dims"]
    nets = build_networks(d["gpu_in"], d["slot_in"], d["critic_in"], int(meta["hidden"]), seed=0)
    try:
        nets.load_state_dict(torch.load(folder / WEIGHTS_FILE, weights_only=True))
    except (OSError, RuntimeError) as exc:
        raise PolicyError(f"checkpoint {folder / WEIGHTS_FILE}: cannot load the weights ({exc})") from None
    nets.eval()
    return meta, nets
