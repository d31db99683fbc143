"""Trains a serving learner (``serving_q`` or ``serving_dqn``) on a serving scenario and evaluates it against the rules.

A small trainer of its own beside :func:`dcsim.train.train` (which is written around the GPU-job engine's
per-agent feedback): each episode is one serving run on seed ``scenario.seed + episode`` with the learner
exploring; after it the run's closed requests are booked into the learner
(:meth:`policies.serving_learner.ServingLearner.learn_from`: a contextual-bandit update per request for the table
of ``serving_q``, replay and minibatch steps for the network of ``serving_dqn``). It writes what ``train`` writes
for job runs — ``learning_curve.csv/.png``, ``checkpoint/``, ``train_state.json`` and, with evaluation seeds,
``evaluation.md/.csv`` and ``evaluation_runs.csv`` with paired 95% CIs of profit against the serving rule
baselines — but has no ``--resume`` and keeps no transitions file (docs/serving.md, "Learning policy").
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from dcsim.errors import DcsimError
from dcsim.train import plot_learning_curve

#: The serving learners by name, and their import targets.
LEARNERS = {"serving_q": "policies.serving_learner:ServingQ", "serving_dqn": "policies.serving_dqn:ServingDQN"}
#: The tabular learner's import target (the default learner).
LEARNER = LEARNERS["serving_q"]
#: The names ``train --policy`` accepts on a serving scenario.
LEARNER_NAMES = tuple(LEARNERS) + tuple(LEARNERS.values())
#: The serving rule baselines (policies/serving.py) the evaluation compares against by default.
BASELINES = {"serving_full_kv": "policies.serving:FullKV",
             "serving_quality_floor": "policies.serving:QualityFloor",
             "serving_price_aware": "policies.serving:PriceAware",
             "serving_deny_over_slo": "policies.serving:DenyOverSlo"}
#: Files a training writes into its folder, beside ``checkpoint/`` (the learner's checkpoint files).
OUTPUT_FILES = ("learning_curve.csv", "learning_curve.png", "train_state.json", "evaluation.md", "evaluation.csv",
                "evaluation_runs.csv")
#: Headline columns of an evaluation row.
EVAL_COLUMNS = ("profit_usd", "revenue_usd", "energy_cost_usd", "success_rate", "denial_rate", "mean_quality",
                "slo_ttft")


def _target(name: str) -> str:
    return BASELINES.get(name, name)


def learner_name(name: str) -> str:
    """The serving learner ``name`` (a registered name or its import target) stands for."""
    for short, target in LEARNERS.items():
        if name in (short, target):
            return short
    raise DcsimError(f"--policy {name}: allowed on a serving scenario: {', '.join(LEARNER_NAMES)}")


def train_serving(scenario: Any, episodes: int, out: Path, *, params: dict[str, Any] | None = None,
                  on_episode: Callable[[dict[str, Any]], None] | None = None, overwrite: bool = False,
                  command: str = "", learner: str = "serving_q") -> pd.DataFrame:
    """Train a serving learner for ``episodes`` serving runs; write ``out``.

    Args:
        scenario: A scenario with ``workload.llm_serving``.
        episodes: Runs to train on (>= 1); episode ``e`` uses seed ``scenario.seed + e``.
        out: The training folder (must not exist unless ``overwrite``).
        params: The learner's parameters (``slo_penalty``, ``epsilon_*``, ``checkpoint`` to start from).
        on_episode: Called with each learning-curve row.
        overwrite: Replace an existing ``out``.
        command: The command line, recorded in ``train_state.json``.
        learner: ``serving_q`` (:class:`policies.serving_learner.ServingQ`) or ``serving_dqn``
            (:class:`policies.serving_dqn.ServingDQN`, needs torch).

    Returns:
        The learning curve: one row per episode (profit, the learner's reward, epsilon, action shares).
    """
    from dcsim.policy import load_policy
    from dcsim.runner import run_scenario

    name = learner_name(learner)
    if scenario.workload.llm_serving is None:
        raise DcsimError(f"train --policy {name}: the scenario has no workload.llm_serving section; the serving "
                         "learner trains on serving scenarios only (docs/serving.md)")
    if int(episodes) != episodes or episodes < 1:
        raise DcsimError(f"--episodes {episodes}: allowed: an integer >= 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DcsimError(f"{out}: already exists; give --overwrite to replace it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    for file in OUTPUT_FILES:  # --overwrite: no file of an earlier training is left to be mistaken for this one's
        (out / file).unlink(missing_ok=True)
    if (out / "checkpoint").is_dir():
        shutil.rmtree(out / "checkpoint")
    params = dict(params or {})
    params["learn"] = True
    policy = load_policy(LEARNERS[name], params)
    rows = []
    for episode in range(int(episodes)):
        sc = scenario.model_copy(update={"seed": scenario.seed + episode})
        wall0 = time.perf_counter()
        epsilon = policy.exploration_rate()  # constant within an episode: the table changes only between them
        run = run_scenario(sc, policy=policy)
        stats = policy.learn_from(run.result)
        s = run.summary
        row = {"episode": episode, "seed": sc.seed, "profit_usd": s["profit_usd"], "revenue_usd": s["revenue_usd"],
               "energy_cost_usd": s["energy_cost_usd"], "success_rate": s["success_rate"],
               "denial_rate": s["denial_rate"], "mean_quality": s["mean_quality"],
               "learner_reward_usd": stats["reward_usd"], "learner_penalty_usd": stats["penalty_usd"],
               "updates": stats["updates"], "epsilon": epsilon,
               "wall_s": time.perf_counter() - wall0}
        row |= {k: v for k, v in stats.items() if k.startswith("share_")}
        rows.append(row)
        if on_episode is not None:
            on_episode(row)
    curve = pd.DataFrame(rows)
    policy.save_checkpoint(out / "checkpoint")
    curve.to_csv(out / "learning_curve.csv", index=False)
    plot_learning_curve(curve, out / "learning_curve.png", f"{scenario.name}: {name}", value="profit_usd",
                        value_label="profit (USD)", point_label="profit (episode)", epsilon="epsilon",
                        epsilon_label="ε in the episode")
    state = {"kind": "llm_serving", "policy": name, "target": LEARNERS[name], "episodes_done": int(episodes),
             "scenario": scenario.name, "seed": scenario.seed, "params": {k: v for k, v in params.items()},
             "decisions": policy.decisions, "command": command}
    (out / "train_state.json").write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")
    return curve


def evaluate_serving(scenario: Any, checkpoint: Path, seeds: list[int], baselines: list[str] | None = None,
                     on_run: Callable[[], None] | None = None, learner: str = "serving_q") -> pd.DataFrame:
    """Run the frozen learner (greedy, from ``checkpoint``) and each baseline on every seed; one row per run.

    Every arm sees the same requests on a seed (arrivals draw from their own streams, not the policy's).
    """
    from dcsim.policy import load_policy
    from dcsim.runner import run_scenario

    name = learner_name(learner)
    arms = {name: (LEARNERS[name], {"checkpoint": str(checkpoint), "learn": False})}
    arms |= {b: (_target(b), {}) for b in (baselines if baselines is not None else list(BASELINES))}
    for label, (target, params) in arms.items():  # an unknown baseline fails before any run
        load_policy(target, params)
    rows = []
    for label, (target, params) in arms.items():
        for seed in seeds:
            s = run_scenario(scenario.model_copy(update={"seed": seed}), policy=load_policy(target, params)).summary
            rows.append({"arm": label, "policy": target, "seed": seed, "profit_usd": s["profit_usd"],
                         "revenue_usd": s["revenue_usd"], "energy_cost_usd": s["energy_cost_usd"],
                         "success_rate": s["success_rate"], "denial_rate": s["denial_rate"],
                         "mean_quality": s["mean_quality"], "slo_ttft": s["slo_attainment"]["ttft"],
                         "served_by_config": json.dumps(s["requests"]["served_by_config"], sort_keys=True)})
            if on_run is not None:
                on_run()
    return pd.DataFrame(rows)


def serving_evaluation_table(runs: pd.DataFrame, learned: str = "serving_q") -> tuple[pd.DataFrame, str]:
    """Mean ± 95% CI of profit per arm and the learner's paired profit difference against every other arm."""
    from dcsim.compare import markdown_table, mean_ci, paired_difference

    wide = runs.pivot(index="seed", columns="arm", values="profit_usd")
    rows = []
    for arm in runs["arm"].unique():
        n, mean, _, lo, hi = mean_ci(wide[arm].to_numpy(float))
        sub = runs[runs.arm == arm]
        row = {"arm": arm, "seeds": n, "profit_mean": mean, "ci_low": lo, "ci_high": hi}
        row |= {c: float(sub[c].mean()) for c in EVAL_COLUMNS if c != "profit_usd"}
        if arm != learned and learned in wide:
            _, d, dlo, dhi, p = paired_difference(wide[learned].to_numpy(float), wide[arm].to_numpy(float))
            row |= {"learner_minus_arm": d, "diff_ci_low": dlo, "diff_ci_high": dhi, "p_value": p}
        rows.append(row)
    table = pd.DataFrame(rows)
    md = markdown_table(
        ["arm", "seeds", "profit USD (mean, 95% CI)", "revenue", "energy cost", "success", "denied", "quality",
         "TTFT SLO"],
        [[r.arm, str(r.seeds), f"{r.profit_mean:,.2f} [{r.ci_low:,.2f}, {r.ci_high:,.2f}]", f"{r.revenue_usd:,.2f}",
          f"{r.energy_cost_usd:,.2f}", f"{r.success_rate:.2%}", f"{r.denial_rate:.2%}", f"{r.mean_quality:.3f}",
          f"{r.slo_ttft:.2%}"] for r in table.itertuples()])
    lines = []
    for r in table.itertuples():
        if r.arm == learned or not hasattr(r, "learner_minus_arm") or pd.isna(r.learner_minus_arm):
            continue
        verdict = "beats" if r.diff_ci_low > 0 else "loses to" if r.diff_ci_high < 0 else "is not distinguishable from"
        lines.append(f"- **{learned}** {verdict} **{r.arm}**: paired profit difference {r.learner_minus_arm:+,.4f} USD "
                     f"(95% CI {r.diff_ci_low:+,.4f} to {r.diff_ci_high:+,.4f}, p = {r.p_value:.3g}).")
    return table, md + ("\n\n" + "\n".join(lines) if lines else "")


def write_serving_evaluation(out: Path, runs: pd.DataFrame, seeds: list[int], learned: str = "serving_q") -> str:
    """Write ``evaluation_runs.csv``, ``evaluation.csv`` and ``evaluation.md`` into ``out``; returns the Markdown."""
    table, md = serving_evaluation_table(runs, learned)
    runs.to_csv(out / "evaluation_runs.csv", index=False)
    table.to_csv(out / "evaluation.csv", index=False)
    (out / "evaluation.md").write_text(f"Evaluation on seeds {seeds[0]}..{seeds[-1]} ({learned} greedy, frozen):\n\n"
                                       + md + "\n", encoding="utf-8")
    return md
