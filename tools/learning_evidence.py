"""Runs the learning evidence pipeline of docs/learning.md end to end and prints its Markdown.

For each scenario (default ``scenarios/learn_solar.yaml`` and ``scenarios/learn_grid.yaml``):

1. ``python -m dcsim train SCENARIO --policy qlearning --episodes N --eval-seeds K``: tabular Q-learning from
   scratch, then the frozen greedy table and the six rule-based baselines on K held-out seeds (seed + 10000..).
2. ``python -m dcsim train SCENARIO --policy dqn --episodes M --init-from <step 1's folder> --eval-seeds K``:
   DQN pre-trained on the transitions Q-learning exported, trained online, evaluated on the same seeds.
3. Merges both evaluations into one table (the baselines' runs must agree between the two, a determinism
   check), with each learner's paired difference against the best baseline, against the best baseline that
   runs every job as the learners must (no deferral), and against the best of :data:`REFERENCES`, fixed rules
   over the learners' own actions (``--reference``; what the action set can at least achieve).
4. Replays the frozen learners, the best baseline and the best non-deferring baseline on the first few
   evaluation seeds in this process, to show *why*: reward components per GPU, and the learners' actions by
   price level; and lists the most visited Q-table states with their greedy action.
5. Draws learning curves and an evaluation chart into ``--img`` (docs/img/learning by default) and prints the
   Markdown (also written to ``OUT/evidence.md``).

The DQN runs torch on one thread by default (its ``torch_threads=1`` policy parameter): on a 2-core machine,
torch's default thread pool made DQN episodes ~10x slower. The trainings' subprocesses also get
``OMP_NUM_THREADS=1`` (numpy's BLAS and torch alike); that is belt and braces, no longer needed for the DQN.
All learner settings are the defaults (``dqn --init-from`` continues the ε schedule from the pre-training
transitions by itself).

    python tools/learning_evidence.py            # the full run behind docs/learning.md (60 + 15 episodes per scenario)
    python tools/learning_evidence.py --quick    # smoke run: a few episodes, 2 seeds, images under OUT/img
    python tools/learning_evidence.py --reuse    # redo the tables and plots from the finished trainings in OUT

6. With ``--train-seeds N`` (default 3), repeats steps 1–2 from N root seeds (``seed + 1000·j``, each evaluated on
   the same held-out seeds through ``--eval-offset``) and tabulates how much each verdict depends on the training
   run. Steps 4–5 use the first run (the scenario's own seed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS = ("scenarios/learn_solar.yaml", "scenarios/learn_grid.yaml")
BASELINES = ("always_on", "race_to_idle", "renewable_follower", "price_threshold", "deadline_slack", "truthful")
#: Baselines whose ``admit`` can hold deferrable jobs back; the learners always run the jobs they are given.
DEFERRING = frozenset({"renewable_follower", "price_threshold", "deadline_slack"})
LEARNED = ("qlearning", "dqn")
#: A diagnostic arm of the behaviour tables: the trained Q-table kept learning (ε = 0.05) on the evaluation seeds.
STILL_LEARNING = "qlearning, still learning"
ACTION_NAMES = ("FULL", "FULL_IF_CHEAP", "HALF", "MIN_CAP", "PAUSE", "FLOOR_THEN_VALUE", "FLOOR_THEN_LIMIT", "PACE")
#: Fixed rules over the learners' own actions (policies/reference.py), evaluated as arms: the best of them is what
#: the learners' action set can at least achieve (issue 14).
REFERENCES = ("full_cheap_else_min", "full_cheap_else_pace", "floor_limit", "floor_value", "pace")
FULL = {"q_episodes": 60, "dqn_episodes": 15, "eval_seeds": 10, "analysis_seeds": 3, "train_seeds": 3}
QUICK = {"q_episodes": 4, "dqn_episodes": 2, "eval_seeds": 2, "analysis_seeds": 1, "train_seeds": 2}
#: Training replicate j trains on root seed ``seed + TRAIN_SEED_STRIDE·j`` (episodes ``seed + stride·j + k``) and
#: evaluates with ``--eval-offset 10000 − stride·j``, so every replicate is evaluated on the same held-out seeds.
TRAIN_SEED_STRIDE = 1000
EVAL_OFFSET = 10000


def _env() -> dict[str, str]:
    """The trainings' environment. The thread caps are belt and braces: the DQN already defaults to one torch
    thread (``torch_threads=1``); they also keep numpy's BLAS from spreading over the 2 cores."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    return env


def run_cmd(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repository root (output to ``log``); returns wall seconds; raises on failure."""
    shown = " ".join(cmd[1:]) if cmd[0] == sys.executable else " ".join(cmd)
    print(f"$ python {shown}" if cmd[0] == sys.executable else f"$ {shown}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed (exit {proc.returncode}), see {log}:\n{log.read_text()[-3000:]}")
    print(f"  ... {wall:.0f} s", file=sys.stderr, flush=True)
    return wall


def train_commands(scenario: str, out: Path, cfg: dict, seed: int | None = None, rep: int = 0) -> dict[str, list[str]]:
    """The two ``train`` commands of one training replicate (``rep`` 0: the scenario's own seed)."""
    py = [sys.executable, "-m", "dcsim", "train", scenario]
    if rep:
        py += ["--seed", str(seed + TRAIN_SEED_STRIDE * rep), "--eval-offset", str(EVAL_OFFSET - TRAIN_SEED_STRIDE * rep)]
    q_out, d_out = out / "qlearning", out / "dqn"
    refs = [x for r in REFERENCES for x in ("--reference", r)]
    return {
        "qlearning": py + ["--policy", "qlearning", "--episodes", str(cfg["q_episodes"]), "--eval-seeds",
                           str(cfg["eval_seeds"]), "--out", str(q_out), "--overwrite", "--quiet"] + refs,
        "dqn": py + ["--policy", "dqn", "--episodes", str(cfg["dqn_episodes"]), "--init-from", str(q_out),
                     "--eval-seeds", str(cfg["eval_seeds"]), "--out", str(d_out), "--overwrite", "--quiet"] + refs,
    }


def _rel(cmd: list[str]) -> str:
    """The command as a reader would type it (python, paths relative to the repository root)."""
    parts = ["python"] + [os.path.relpath(c, ROOT) if os.path.isabs(c) and c.startswith(str(ROOT)) else c
                          for c in cmd[1:]]
    return " ".join(p for p in parts if p not in ("--overwrite", "--quiet"))


# --------------------------------------------------------------------------------------------- evaluation
def merged_runs(out: Path) -> pd.DataFrame:
    """Both trainings' evaluation runs in one table; the baselines' runs must agree between the two."""
    q = pd.read_csv(out / "qlearning" / "evaluation_runs.csv")
    d = pd.read_csv(out / "dqn" / "evaluation_runs.csv")
    qb = q[q.arm != "qlearning"].sort_values(["arm", "seed"]).reset_index(drop=True)
    db = d[d.arm != "dqn"].sort_values(["arm", "seed"]).reset_index(drop=True)
    if not np.allclose(qb["return_per_gpu"], db["return_per_gpu"], rtol=1e-9, atol=1e-9):
        sys.exit(f"{out}: the baselines' evaluation differs between the two trainings (not deterministic?)")
    return pd.concat([q, d[d.arm == "dqn"]], ignore_index=True)


def evaluation_markdown(runs: pd.DataFrame) -> tuple[pd.DataFrame, str, dict[str, str]]:
    """Table of every arm (mean ± 95% CI) and each learner's paired differences; returns the table, its
    Markdown and the names of the best baseline and the best baseline that never defers a job."""
    from dcsim.compare import markdown_table, mean_ci, paired_difference

    wide = runs.pivot(index="seed", columns="arm", values="return_per_gpu")
    rows = []
    for arm, g in runs.groupby("arm", sort=False):
        n, mean, _, lo, hi = mean_ci(wide[arm].to_numpy(float))
        rows.append({"arm": arm, "seeds": n, "mean": mean, "lo": lo, "hi": hi,
                     **{c: g[c].mean() for c in ("jobs_completed", "jobs_dropped", "deadline_misses", "tokens_spent",
                                                  "energy_kwh", "renewable_battery_share")}})
    table = pd.DataFrame(rows)
    base = table[table.arm.isin(BASELINES)].sort_values("mean", ascending=False)
    refs = table[table.arm.str.startswith("ref:")].sort_values("mean", ascending=False)
    best = {"best baseline": str(base.arm.iloc[0]),
            "best baseline that runs every job": str(base[~base.arm.isin(DEFERRING)].arm.iloc[0])}
    if len(refs):
        best["best reference rule over the learners' actions"] = str(refs.arm.iloc[0])
    order = list(LEARNED) + list(refs.arm) + list(base.arm)
    table = table.set_index("arm").loc[[a for a in order if a in set(table.arm)]].reset_index()

    def kind(arm: str) -> str:
        return ("learned" if arm in LEARNED else "in-set rule" if arm.startswith("ref:")
                else "defers jobs" if arm in DEFERRING else "runs every job")

    md = markdown_table(
        ["arm", "kind", "return per GPU: mean [95% CI]", "jobs completed", "dropped", "deadline misses*",
         "tokens spent", "energy (kWh)", "renewable + battery share"],
        [[r.arm, kind(r.arm), f"{r.mean:.2f} [{r.lo:.2f}, {r.hi:.2f}]", f"{r.jobs_completed:.1f}",
          f"{r.jobs_dropped:.1f}", f"{r.deadline_misses:.1f}", f"{r.tokens_spent:.0f}", f"{r.energy_kwh:.0f}",
          f"{r.renewable_battery_share:.1%}"] for r in table.itertuples()])
    lines = []
    for arm in LEARNED:
        if arm not in wide:
            continue
        for label, other in best.items():
            _, diff, lo, hi, p = paired_difference(wide[arm].to_numpy(float), wide[other].to_numpy(float))
            verdict = "beats" if lo > 0 else "loses to" if hi < 0 else "is not distinguishable from"
            lines.append(f"- **{arm}** {verdict} the {label}, **{other}**: paired difference {diff:+.2f} per GPU "
                         f"(95% CI {lo:+.2f} to {hi:+.2f}, p = {p:.2g}, {wide.shape[0]} seeds).")
    if len(refs):
        arm, other = str(refs.arm.iloc[0]), best["best baseline"]
        _, diff, lo, hi, p = paired_difference(wide[arm].to_numpy(float), wide[other].to_numpy(float))
        verdict = "beats" if lo > 0 else "loses to" if hi < 0 else "is not distinguishable from"
        lines.append(f"- the in-set rule **{arm}** {verdict} the best baseline, **{other}**: paired difference "
                     f"{diff:+.2f} per GPU (95% CI {lo:+.2f} to {hi:+.2f}, p = {p:.2g}).")
    return table, md + "\n\n" + "\n".join(lines), best


def spread_markdown(reps: list[pd.DataFrame], best: dict[str, str], train_seeds: list[int]) -> str:
    """How much the verdict depends on the training run: each replicate's learners (trained on their own seeds,
    evaluated on the same held-out seeds) against replicate 0's best baseline and best in-set rule."""
    from dcsim.compare import markdown_table, mean_ci, paired_difference

    base = reps[0][reps[0].arm.isin(BASELINES) | reps[0].arm.str.startswith("ref:")]
    base_wide = base.pivot(index="seed", columns="arm", values="return_per_gpu")
    targets = {label: arm for label, arm in best.items() if label != "best baseline that runs every job"}
    rows, diffs = [], {(a, o): [] for a in LEARNED for o in targets.values()}
    for arm in LEARNED:
        for j, runs in enumerate(reps):
            mine = runs[runs.arm == arm].set_index("seed")["return_per_gpu"].reindex(base_wide.index)
            if mine.isna().any():
                sys.exit(f"training replicate {j}: {arm} was evaluated on other seeds than replicate 0")
            _, mean, _, lo, hi = mean_ci(mine.to_numpy(float))
            cells = [arm, str(train_seeds[j]), f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"]
            for other in targets.values():
                _, d, dlo, dhi, pval = paired_difference(mine.to_numpy(float), base_wide[other].to_numpy(float))
                diffs[(arm, other)].append(d)
                cells.append(f"{d:+.2f} [{dlo:+.2f}, {dhi:+.2f}], p = {pval:.2g}")
            rows.append(cells)
    md = markdown_table(["learner", "training root seed (episode k: seed + k)", "held-out return per GPU [95% CI]"]
                        + [f"vs {o}: paired diff [95% CI]" for o in targets.values()], rows)
    lines = []
    for (arm, other), ds in diffs.items():
        ds = np.asarray(ds)
        lines.append(f"- **{arm}** vs **{other}** over {len(ds)} training runs: paired differences "
                     + ", ".join(f"{d:+.2f}" for d in ds) + f" (mean {ds.mean():+.2f}, range {ds.min():+.2f} to "
                     f"{ds.max():+.2f}).")
    return md + "\n\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------------- behaviour
def behaviour(scenario_path: str, out: Path, arms: list[str], seeds: list[int]) -> tuple[str, str]:
    """Replay the frozen learners, the trained Q-table still learning (:data:`STILL_LEARNING`) and some baselines
    on ``seeds``: reward components per GPU per arm, and the learners' greedy actions by price level. Returns two
    Markdown tables."""
    import torch

    from dcsim.compare import markdown_table
    from dcsim.config import load_scenario
    from dcsim.learning import FEATURES, REWARD_COMPONENTS, reward_weights
    from dcsim.policy import load_policy
    from dcsim.runner import run_scenario

    torch.set_num_threads(1)
    scenario = load_scenario(Path(ROOT / scenario_path), [])
    n = scenario.cluster.gpus
    w = reward_weights(scenario.reward)
    price_col = FEATURES.index("price_log_ratio")
    comp_rows, act_rows = [], []
    for arm in arms:
        comps = []
        counts = np.zeros((3, len(ACTION_NAMES)))
        for seed in seeds:
            if arm == STILL_LEARNING:  # the trained table, still updating with ε = 0.05, fresh for each seed
                policy = load_policy("qlearning", {"checkpoint": str(out / "qlearning" / "checkpoint"),
                                                   "learn": True, "epsilon_start": 0.05, "epsilon_end": 0.05})
            elif arm in LEARNED:
                policy = load_policy(arm, {"checkpoint": str(out / arm / "checkpoint"), "learn": False})
                choose = policy.choose

                def counting(x, agents, choose=choose):
                    a = choose(x, agents)
                    level = np.digitize(x[:, price_col], [0.05, 0.5])  # the Q-table's price bins
                    np.add.at(counts, (level, a), 1)
                    return a

                policy.choose = counting
            elif arm.startswith("ref:"):
                from policies.reference import parse_reference

                policy = load_policy("policies.reference:ReferenceRule", parse_reference(arm[4:])[1])
            else:
                policy = load_policy(arm, {})
            s = run_scenario(scenario.model_copy(update={"seed": seed}), policy=policy).summary
            c = s["reward"]["components"]
            comps.append([c[k] for k in REWARD_COMPONENTS] + [s["jobs"]["completed"], s["jobs"]["dropped"],
                                                              s["jobs"]["pending"]])
        m = np.mean(comps, axis=0)
        weighted = m[:len(REWARD_COMPONENTS)] * w / n
        comp_rows.append([arm] + [f"{v:+.2f}" for v in weighted] + [f"{weighted.sum():+.2f}"] +
                         [f"{v:.0f}" for v in m[len(REWARD_COMPONENTS):]])
        if arm in LEARNED:  # greedy actions of the frozen learners only
            for level, label in enumerate(("p ≤ 1.1 p0", "1.1 p0 < p ≤ e·p0", "p > e·p0")):
                total = counts[level].sum()
                if total:
                    act_rows.append([arm, label, f"{int(total)}"] + [f"{c / total:.0%}" for c in counts[level]])
    comp_md = markdown_table(["arm"] + [f"{k} × weight" for k in REWARD_COMPONENTS] +
                             ["reward per GPU", "jobs completed", "jobs dropped", "jobs pending at the end"], comp_rows)
    act_md = markdown_table(["learner", "price level", "decisions"] + list(ACTION_NAMES), act_rows)
    return comp_md, act_md


def qtable_markdown(out: Path, top: int = 12) -> str:
    """The most visited states of the trained Q-table, decoded, with their greedy action and Q-values."""
    from dcsim.compare import markdown_table
    from policies.qlearning import BIN_SETS
    from policies.qtable import Discretizer

    spec = json.loads((out / "qlearning" / "checkpoint" / "qlearning.json").read_text())
    disc = Discretizer({k: np.asarray(v) for k, v in BIN_SETS[spec.get("bin_set", "price_slack")].items()})
    with np.load(out / "qlearning" / "checkpoint" / "qlearning.npz") as z:
        q, visits = z["q"][0], z["visits"][0]
    second = out / "qlearning" / "checkpoint" / "qlearning_b.npz"
    if second.is_file():  # double Q-learning: the policy acts on the mean of its two tables
        with np.load(second) as z:
            q, visits = 0.5 * (q + z["q"][0]), visits + z["visits"][0]
    per_state = visits.sum(axis=1)
    visited = int((per_state > 0).sum())
    labels = {"slack_h": ("late", "<1 h", "1-4 h", "≥4 h/none"), "price_log_ratio": ("≤1.1 p0", "≤e p0", ">e p0"),
              "renewable_fraction": ("<1/3", "1/3-2/3", "≥2/3"), "value_over_cost": ("below", "above"),
              "wallet_rounds": ("<1 round", "≥1 round"), "pace_needed": ("≤0.5", "0.5-1", "late"),
              "remaining_h": ("<15 min", "15-60 min", "≥1 h")}
    rows = []
    for s in np.argsort(per_state)[::-1][:top]:
        digits = np.unravel_index(s, disc.radices)
        rows.append([str(s)] + [labels[name][d] for name, d in zip(disc.names, digits)] +
                    [f"{per_state[s]:,}", ACTION_NAMES[int(np.argmax(q[s]))]] + [f"{v:.2f}" for v in q[s]])
    md = markdown_table(["state"] + list(disc.names) + ["updates", "greedy"] + [f"Q {a}" for a in ACTION_NAMES], rows)
    share = visits.sum(axis=0) / max(visits.sum(), 1)
    return (f"{visited} of {disc.n_states} states were ever updated; the {top} most updated hold "
            f"{per_state[np.argsort(per_state)[::-1][:top]].sum() / max(per_state.sum(), 1):.0%} of all updates. "
            "Share of updates by action taken: " + ", ".join(f"{a} {v:.0%}" for a, v in zip(ACTION_NAMES, share))
            + ".\n\n" + md)


# --------------------------------------------------------------------------------------------- plots
def plot_curves(name: str, out: Path, table: pd.DataFrame, best: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, width_ratios=[2, 1])
    means = table.set_index("arm")["mean"]
    for ax, arm in zip(axes, LEARNED):
        curve = pd.read_csv(out / arm / "learning_curve.csv")
        ep = curve["episode"] + 1
        window = max(1, len(curve) // 20)
        ax.plot(ep, curve["return_per_gpu"], ".", ms=3, alpha=0.35, color="tab:blue", label="training episode")
        ax.plot(ep, curve["return_per_gpu"].rolling(window, min_periods=1).mean(), color="tab:blue",
                label=f"moving mean of {window}")
        ax.axhline(means[arm], color="tab:blue", ls=":", label="the learner, frozen: held-out mean")
        colors = iter(("tab:green", "tab:orange", "tab:purple"))
        for other in dict.fromkeys(best.values()):
            ax.axhline(means[other], ls="--", color=next(colors), label=f"{other}: held-out mean")
        ax.set_title(f"{arm} on {name}" + (" (after --init-from)" if arm == "dqn" else ""),
                     fontsize=10)
        ax.set_xlabel("training episode (one simulated day, seed + k)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("return per GPU (reward units)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_evaluation(name: str, table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    y = np.arange(len(table))[::-1]
    colors = ["tab:blue" if a in LEARNED else "tab:purple" if a.startswith("ref:") else
              "tab:orange" if a in DEFERRING else "tab:green" for a in table.arm]
    ax.errorbar(table["mean"], y, xerr=[table["mean"] - table["lo"], table["hi"] - table["mean"]], fmt="none",
                ecolor="gray", capsize=3)
    ax.scatter(table["mean"], y, c=colors, zorder=3)
    ax.set_yticks(y, table.arm)
    ax.set_xlabel("return per GPU on held-out seeds (mean, 95% CI)")
    ax.set_title(f"{name}: learned (blue), in-set rules (purple), runs every job (green), defers jobs (orange)",
                 fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: %s" % QUICK)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    ap.add_argument("--out", type=Path, help="working folder (default runs/learning-evidence[-quick])")
    ap.add_argument("--img", type=Path, help="where the PNGs go (default docs/img/learning; OUT/img with --quick)")
    ap.add_argument("--reuse", action="store_true",
                    help="skip the trainings already finished in OUT (redo only the tables and plots)")
    for key, value in FULL.items():
        ap.add_argument("--" + key.replace("_", "-"), type=int, help=f"default {value} ({QUICK[key]} with --quick)")
    args = ap.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    cfg.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    out = (args.out or ROOT / ("runs/learning-evidence" + ("-quick" if args.quick else ""))).resolve()
    img = (args.img or (out / "img" if args.quick else ROOT / "docs/img/learning")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    img.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    sections = [f"Settings: {cfg['q_episodes']} Q-learning episodes, {cfg['dqn_episodes']} DQN episodes, "
                f"{cfg['train_seeds']} training runs per learner (root seeds seed + {TRAIN_SEED_STRIDE}·j), "
                f"{cfg['eval_seeds']} held-out evaluation seeds, {cfg['analysis_seeds']} seeds for the behaviour "
                f"tables. Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; the DQN on one torch thread "
                "(its default)."]
    summary = {}
    for scenario in args.scenarios:
        from dcsim.config import load_scenario

        sc = load_scenario(ROOT / scenario, [])
        name = sc.name
        sdir = out / name
        sdir.mkdir(exist_ok=True)
        rep_dirs = [sdir] + [sdir / f"train-seed-{j}" for j in range(1, cfg["train_seeds"])]
        train_seeds = [sc.seed + TRAIN_SEED_STRIDE * j for j in range(cfg["train_seeds"])]
        rep_walls = []
        for j, rdir in enumerate(rep_dirs):
            rdir.mkdir(exist_ok=True)
            rcmds = train_commands(scenario, rdir, cfg, sc.seed, j)
            walls_file = rdir / "walls.json"
            if args.reuse and walls_file.is_file():
                rep_walls.append(json.loads(walls_file.read_text()))
                print(f"reusing the trainings in {rdir}", file=sys.stderr)
            else:
                rep_walls.append({arm: run_cmd(cmd, rdir / f"{arm}.log") for arm, cmd in rcmds.items()})
                walls_file.write_text(json.dumps(rep_walls[-1]))
            if j == 0:
                cmds, walls = rcmds, rep_walls[0]
        reps = [merged_runs(rdir) for rdir in rep_dirs]
        for j, r in enumerate(reps[1:], 1):
            a = reps[0][~reps[0].arm.isin(LEARNED)].sort_values(["arm", "seed"]).reset_index(drop=True)
            b = r[~r.arm.isin(LEARNED)].sort_values(["arm", "seed"]).reset_index(drop=True)
            if not (a.seed.equals(b.seed) and np.allclose(a.return_per_gpu, b.return_per_gpu, rtol=1e-9, atol=1e-9)):
                sys.exit(f"{rep_dirs[j]}: the baselines' evaluation differs from replicate 0's (other seeds?)")
        runs = reps[0]
        runs.to_csv(sdir / "evaluation_runs_merged.csv", index=False)
        table, eval_md, best = evaluation_markdown(runs)
        table.to_csv(sdir / "evaluation_merged.csv", index=False)
        seeds = sorted(runs.seed.unique())[:cfg["analysis_seeds"]]
        comp_md, act_md = behaviour(scenario, sdir, list(LEARNED) + [STILL_LEARNING] + list(dict.fromkeys(best.values())),
                                    seeds)
        q_md = qtable_markdown(sdir)
        spread_md = spread_markdown(reps, best, train_seeds) if len(reps) > 1 else ""

        plot_curves(name, sdir, table, best, img / f"{name}-curves.png")
        plot_evaluation(name, table, img / f"{name}-evaluation.png")
        for arm in LEARNED:
            shutil.copyfile(sdir / arm / "learning_curve.png", img / f"{name}-{arm}-curve.png")
        rel_img = os.path.relpath(img, ROOT / "docs")
        curves = {arm: pd.read_csv(sdir / arm / "learning_curve.csv") for arm in LEARNED}
        train_s = {arm: float(c["wall_s"].sum()) for arm, c in curves.items()}
        summary[name] = {"best": best, "table": table.to_dict("records"), "walls": walls, "train_s": train_s,
                         "train_seeds": train_seeds, "replicate_walls": rep_walls}
        seeds_txt = f"{int(runs.seed.min())}..{int(runs.seed.max())}"
        sections.append(
            f"### {name}\n\nCommands (run from the repository root; wall time including evaluation):\n\n```console\n"
            + "\n".join(f"$ {_rel(cmd)}    # {walls[arm]:.0f} s" for arm, cmd in cmds.items())
            + "\n```\n\n"
            + f"Training alone: Q-learning {train_s['qlearning']:.0f} s ({train_s['qlearning'] / len(curves['qlearning']):.2f} s "
            f"per episode), DQN {train_s['dqn']:.0f} s ({train_s['dqn'] / len(curves['dqn']):.1f} s per episode, "
            f"pre-training included in the first).\n\n"
            + f"![learning curves of {name}]({rel_img}/{name}-curves.png)\n\n"
            + f"Each training's own `learning_curve.png`, with ε and the DQN's loss: [Q-learning]({rel_img}/{name}-"
            f"qlearning-curve.png), [DQN]({rel_img}/{name}-dqn-curve.png).\n\n"
            + f"Held-out evaluation (seeds {seeds_txt}, greedy frozen learners, every arm on the same seeds):\n\n"
            + eval_md + ("\n\nThe same learners trained from other root seeds (each replicate's `train` commands "
                         "add `--seed S --eval-offset K` so that it is evaluated on the same held-out seeds; the "
                         "baselines' runs are checked to agree):\n\n" + spread_md if spread_md else "")
            + "\n\n*deadline misses as summary.json counts them (late completions, jobs dropped as expired, and "
            "jobs still pending past their deadline at the horizon): the same count the reward's SLO term "
            "charges.\n\n"
            + f"![evaluation of {name}]({rel_img}/{name}-evaluation.png)\n\n"
            + f"Where the reward comes from (mean over evaluation seeds {', '.join(map(str, seeds))}; each column is "
            "the cluster's total of that component times its signed weight, per GPU):\n\n" + comp_md + "\n\n"
            + "The learners' greedy actions by posted/clearing price level (same seeds):\n\n" + act_md + "\n\n"
            + "The trained Q-table:\n\n" + q_md + "\n")
    total = time.perf_counter() - t_start
    trained = sum(sum(sum(w.values()) for w in v["replicate_walls"]) for v in summary.values())
    sections.append(f"Whole pipeline: {total / 60:.1f} min wall time" + (
        f" (trainings reused with --reuse; they took {trained / 60:.1f} min)." if args.reuse else "."))
    md = "\n\n".join(sections) + "\n"
    (out / "evidence.md").write_text(md, encoding="utf-8")
    (out / "evidence.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
