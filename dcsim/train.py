"""Training learning policies over episodes: ``python -m dcsim train SCENARIO --policy qlearning|dqn``.

Episode ``k`` runs the scenario with seed ``seed + k`` (fresh workload and supply noise each episode) and the
same policy object, which keeps learning. After every episode the trainer appends a row to
``learning_curve.csv`` and writes a checkpoint, so an interrupted run loses at most one episode and
``--resume`` continues it. At the end it draws ``learning_curve.png`` and exports the last transitions
(``transitions.npz``, what ``dqn --init-from`` pre-trains on).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from dcsim.config import Scenario, scenario_to_dict
from dcsim.errors import DcsimError, PolicyError
from dcsim.learning import REWARD_COMPONENTS, episode_reward, episode_totals
from dcsim.policy import Policy, load_policy
from dcsim.runner import run_scenario

LEARNING_POLICIES = ("qlearning", "dqn")
LEARNERS = ("torch", "cerebras-cpu", "csx")
STATE_FILE = "train_state.json"
CURVE_FILE = "learning_curve.csv"


def make_learning_policy(scenario: Scenario, name: str, extra: dict[str, Any] | None = None) -> Policy:
    """The learning policy ``name`` with the scenario's ``policy.params`` (when it names the same policy) and
    ``extra`` on top; it must be a policy that learns (``wants_feedback`` and checkpoints)."""
    params = dict(scenario.policy.params) if scenario.policy.name == name else {}
    params.update(extra or {})
    policy = load_policy(name, params)
    if not (policy.wants_feedback and hasattr(policy, "save_checkpoint")):
        raise PolicyError(f"policy {name!r} does not learn; `train` takes {', '.join(LEARNING_POLICIES)} "
                          "(or a policy subclassing policies.learning.LearningPolicy)")
    return policy


def episode_row(episode: int, run, policy: Policy, wall_s: float) -> dict[str, Any]:
    r = run.result
    sc = r.scenario
    totals = episode_totals(r)
    n = sc.cluster.gpus
    losses = getattr(policy, "losses", [])
    row = {"episode": episode, "seed": sc.seed, "return_per_gpu": episode_reward(totals, sc.reward) / n,
           "epsilon_end": policy.epsilon(), "decisions": policy.decisions, "updates": policy.updates,
           "loss_mean": float(np.mean(losses)) if losses else math.nan,
           "jobs_completed": run.summary["jobs"]["completed"], "jobs_dropped": run.summary["jobs"]["dropped"],
           "renewable_coverage": run.summary["renewable_coverage"], "wall_s": wall_s}
    row.update({f"total_{k}": totals[k] for k in REWARD_COMPONENTS})
    if losses:
        losses.clear()
    return row


def train(scenario: Scenario, policy_name: str, episodes: int, out: Path, *, resume: bool = False,
          overwrite: bool = False, learner: str | None = None, learner_options: dict[str, Any] | None = None,
          init_from: Path | None = None,
          keep_transitions: int = 50_000, on_episode: Callable[[dict[str, Any]], None] | None = None,
          command: str = "") -> pd.DataFrame:
    """Train ``policy_name`` on ``scenario`` for ``episodes`` episodes in total, writing into ``out``.

    Returns:
        The learning curve (one row per episode, including any from before ``resume``).
    """
    if policy_name not in LEARNING_POLICIES and ":" not in policy_name:
        raise PolicyError(f"train --policy {policy_name!r}: allowed: {', '.join(LEARNING_POLICIES)} "
                          "(or 'package.module:Class' of a LearningPolicy)")
    if episodes < 1:
        raise DcsimError(f"--episodes {episodes}: allowed: an integer >= 1")
    extra: dict[str, Any] = {"keep_transitions": keep_transitions}
    if learner is not None:
        if learner not in LEARNERS:
            raise DcsimError(f"--learner {learner!r}: allowed: {', '.join(LEARNERS)}")
        if policy_name != "dqn" and learner != "torch":
            raise DcsimError(f"--learner {learner!r} applies to --policy dqn only (Q-learning is tabular numpy)")
        if policy_name == "dqn":
            extra["learner"] = learner
    if learner_options:
        if policy_name != "dqn":
            raise DcsimError("--learner-option applies to --policy dqn (settings of its learner)")
        base = scenario.policy.params.get("learner_options", {}) if scenario.policy.name == policy_name else {}
        extra["learner_options"] = dict(base) | learner_options
    if init_from is not None:
        if policy_name != "dqn":
            raise DcsimError("--init-from applies to --policy dqn (it pre-trains the network on transitions)")
        src = init_from / "transitions.npz" if init_from.is_dir() else init_from
        if not src.is_file():
            raise DcsimError(f"--init-from {init_from}: no transitions.npz there (run `dcsim train ... --policy "
                             "qlearning` first; it writes one into its output folder)")
        extra["init_from"] = str(src)

    state_path, curve_path, ckpt = out / STATE_FILE, out / CURVE_FILE, out / "checkpoint"
    rows: list[dict[str, Any]] = []
    start = 0
    if resume:
        if not state_path.is_file():
            raise DcsimError(f"--resume: {state_path} not found; nothing to resume in {out} "
                             "(train without --resume to start)")
        state = json.loads(state_path.read_text())
        if state["policy"] != policy_name or state["scenario"] != scenario.name:
            raise DcsimError(f"--resume: {out} holds {state['policy']!r} trained on {state['scenario']!r}; "
                             f"asked for {policy_name!r} on {scenario.name!r}")
        start = int(state["episodes_done"])
        rows = pd.read_csv(curve_path).to_dict("records")[:start]
        extra["checkpoint"] = str(ckpt)
        extra.pop("init_from", None)
        if start >= episodes:
            return pd.DataFrame(rows)
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise DcsimError(f"--out {out}: directory exists and is not empty; choose another, pass --resume to "
                         "continue its training, or --overwrite")

    policy = make_learning_policy(scenario, policy_name, extra)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "scenario": scenario_to_dict(scenario), "policy": policy_name,
            "params": {k: v for k, v in extra.items() if k != "checkpoint"}, "episodes": episodes}
    (out / "train_metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    for k in range(start, episodes):
        sc = scenario.model_copy(update={"seed": scenario.seed + k})
        t0 = time.perf_counter()
        try:
            run = run_scenario(sc, policy=policy)
        except DcsimError:
            if created and k == start:  # a bad setting surfaced in the first episode: leave nothing behind
                import shutil

                shutil.rmtree(out, ignore_errors=True)
            raise
        rows.append(episode_row(k, run, policy, time.perf_counter() - t0))
        pd.DataFrame(rows).to_csv(curve_path, index=False)
        policy.save_checkpoint(ckpt)
        state_path.write_text(json.dumps({"policy": policy_name, "scenario": scenario.name, "episodes_done": k + 1,
                                          "root_seed": scenario.seed, "state": policy.state_dict()}, indent=2))
        if on_episode is not None:
            on_episode(rows[-1])
    curve = pd.DataFrame(rows)
    n = policy.export_transitions(out / "transitions.npz")
    (out / "train_metadata.yaml").write_text(
        yaml.safe_dump(meta | {"transitions_exported": n, "final_state": policy.state_dict()}, sort_keys=False),
        encoding="utf-8")
    plot_learning_curve(curve, out / "learning_curve.png", f"{policy_name} on {scenario.name}")
    return curve


def plot_learning_curve(curve: pd.DataFrame, path: Path, title: str) -> Path:
    """Return per GPU by episode (with a moving average), and ε and loss, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=[2, 1])
    ep = curve["episode"] + 1
    ax.plot(ep, curve["return_per_gpu"], ".", alpha=0.5, label="episode")
    window = max(1, len(curve) // 10)
    ax.plot(ep, curve["return_per_gpu"].rolling(window, min_periods=1).mean(), "-", label=f"mean of {window}")
    ax.set_ylabel("return per GPU (reward units)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    ax2.plot(ep, curve["epsilon_end"], color="tab:gray", label="ε at episode end")
    ax2.set_ylabel("ε")
    ax2.set_xlabel("episode")
    if curve["loss_mean"].notna().any():
        ax3 = ax2.twinx()
        ax3.plot(ep, curve["loss_mean"], color="tab:red", label="mean Huber loss")
        ax3.set_ylabel("loss", color="tab:red")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate(scenario: Scenario, arms: dict[str, tuple[str, dict[str, Any]]], seeds: list[int],
             on_run: Callable[[], None] | None = None, *, backend: str | None = "local", jobs: int | None = 1,
             address: str | None = None) -> pd.DataFrame:
    """Run every arm (label → policy name and params) on every seed; one row per run with the reward per GPU
    and headline metrics. Seeds pair the arms: a seed gives every arm the same jobs and supply.

    Args:
        scenario: The scenario; each run replaces its seed.
        arms: Label → ``(policy name, params)``.
        seeds: The evaluation seeds.
        on_run: Called after each run finishes.
        backend: ``"local"``, ``"ray"`` or None (see :func:`dcsim.backends.make_backend`); rows are identical
            on every backend and come back in arm-then-seed order.
        jobs: Workers (1: every run in this process).
        address: A Ray cluster to run on; the checkpoint named in ``params`` must be readable on its nodes.
    """
    from dcsim.backends import make_backend

    runner = make_backend(backend, jobs, address)
    tasks = [(label, name, params, scenario.model_copy(update={"seed": seed}))
             for label, (name, params) in arms.items() for seed in seeds]
    rows: list[dict[str, Any] | None] = [None] * len(tasks)

    def on_done(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        if on_run is not None:
            on_run()

    with runner:
        runner.run(_evaluate_one, tasks, on_done)
    return pd.DataFrame(rows)


def _evaluate_one(task: tuple[str, str, dict[str, Any], Scenario]) -> dict[str, Any]:
    """One evaluation run (a fresh policy from its name and params) as a row of :func:`evaluate`."""
    label, name, params, sc = task
    s = run_scenario(sc, policy=load_policy(name, params)).summary
    return {"arm": label, "policy": name, "seed": sc.seed, "return_per_gpu": s["reward"]["per_gpu"],
            "jobs_completed": s["jobs"]["completed"], "jobs_dropped": s["jobs"]["dropped"],
            "deadline_misses": s["jobs"]["deadline_misses"], "tokens_spent": s["tokens"]["spent"],
            "energy_kwh": s["energy_j"]["consumed"] / 3.6e6, "renewable_coverage": s["renewable_coverage"],
            "carbon_kg": s["carbon_kg"]}


def evaluation_table(runs: pd.DataFrame, learned: list[str], references: list[str] | tuple[str, ...] = ()
                     ) -> tuple[pd.DataFrame, str]:
    """Mean ± 95% CI of the return per GPU per arm, and each learned arm's paired difference against the best
    baseline (the best arm by mean return that is neither learned nor a reference rule). With ``references``
    (arms of fixed rules over the learners' own action set, :mod:`policies.reference`) the Markdown also gives
    each learned arm's paired difference against the best reference rule (how far it is from the best rule its
    action set expresses) and each reference rule's against the best baseline. Returns the table and its
    Markdown."""
    from dcsim.compare import markdown_table, mean_ci, paired_difference

    wide = runs.pivot(index="seed", columns="arm", values="return_per_gpu")
    rows = []
    for arm in runs["arm"].unique():
        n, mean, _, lo, hi = mean_ci(wide[arm].to_numpy(float))
        rows.append({"arm": arm, "seeds": n, "return_mean": mean, "ci_low": lo, "ci_high": hi,
                     "jobs_completed": runs.loc[runs.arm == arm, "jobs_completed"].mean(),
                     "tokens_spent": runs.loc[runs.arm == arm, "tokens_spent"].mean(),
                     "energy_kwh": runs.loc[runs.arm == arm, "energy_kwh"].mean()})
    table = pd.DataFrame(rows)
    others = table[~table["arm"].isin(list(learned) + list(references))]
    best = str(others.sort_values("return_mean", ascending=False)["arm"].iloc[0]) if len(others) else None
    lines = []
    for arm in learned:
        if best is None or arm not in wide:
            continue
        _, diff, lo, hi, p = paired_difference(wide[arm].to_numpy(float), wide[best].to_numpy(float))
        table.loc[table.arm == arm, "vs"] = best
        table.loc[table.arm == arm, ["diff_mean", "diff_ci_low", "diff_ci_high", "p_value"]] = [diff, lo, hi, p]
        verdict = "beats" if lo > 0 else "loses to" if hi < 0 else "is not distinguishable from"
        lines.append(f"- **{arm}** {verdict} the best baseline **{best}**: paired difference "
                     f"{diff:+.3f} per GPU (95% CI {lo:+.3f} to {hi:+.3f}, p = {p:.3g}).")
    refs = table[table["arm"].isin(list(references))]
    best_ref = str(refs.sort_values("return_mean", ascending=False)["arm"].iloc[0]) if len(refs) else None
    for arm, against, what in ([(a, best_ref, "the best reference rule") for a in learned if best_ref]
                               + [(r, best, "the best baseline") for r in references if best]):
        if arm not in wide or against not in wide:
            continue
        _, diff, lo, hi, p = paired_difference(wide[arm].to_numpy(float), wide[against].to_numpy(float))
        verdict = "beats" if lo > 0 else "loses to" if hi < 0 else "is not distinguishable from"
        lines.append(f"- **{arm}** {verdict} {what} **{against}**: paired difference "
                     f"{diff:+.3f} per GPU (95% CI {lo:+.3f} to {hi:+.3f}, p = {p:.3g}).")
    md = markdown_table(["arm", "seeds", "return per GPU (mean, 95% CI)", "jobs completed", "tokens spent",
                         "energy (kWh)"],
                        [[r.arm, str(r.seeds), f"{r.return_mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]",
                          f"{r.jobs_completed:.1f}", f"{r.tokens_spent:.1f}", f"{r.energy_kwh:.1f}"]
                         for r in table.itertuples()])
    return table, md + ("\n\n" + "\n".join(lines) if lines else "")
