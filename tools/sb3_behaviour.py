"""What a trained ``train --algo sb3:PPO|sb3:A2C`` model does: its greedy actions through the env, and the reward
it earns, component by component, on a few evaluation seeds. Prints Markdown.

    python tools/sb3_behaviour.py runs/ppo-learn_shift --seeds 10013 10014 10015
    python tools/sb3_behaviour.py runs/ppo-learn_shift --baselines race_to_idle always_on   # and plain runs of these

Tables:

1. Reward components per GPU (each × its weight in the scenario's ``reward:``), reward per GPU, jobs completed,
   dropped and pending at the end, averaged over the seeds: the model (through the env) and each ``--baselines``
   rule (plain runs on the same seeds).
2. The model's actions by decision: for each decision kind the share of each action over the rows that decided
   (deciding GPUs for ``bid`` and ``on_idle``, waiting jobs for ``admit``); bids split by the token price
   (``p ≤ 1.1 p0``, ``1.1 p0 < p ≤ e·p0``, ``p > e·p0``, the Q-table's price bins of docs/learning.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRICE_LEVELS = ("p ≤ 1.1 p0", "1.1 p0 < p ≤ e·p0", "p > e·p0")


def behaviour(folder: Path, seeds: list[int], baselines: list[str]) -> tuple[str, str]:
    """The two Markdown tables for the training in ``folder`` on ``seeds``."""
    from dcsim.compare import markdown_table
    from dcsim.config import parse_scenario
    from dcsim.envs.episode import ACTION_ENUMS
    from dcsim.envs.gym_env import DcsimEnv
    from dcsim.envs.sb3 import ALGOS, algo_class, check_action_set, read_training, torch_threads
    from dcsim.learning import REWARD_COMPONENTS, reward_weights
    from dcsim.policy import load_policy
    from dcsim.runner import run_scenario

    meta = read_training(folder, "sb3_behaviour")
    scenario = parse_scenario(meta["scenario"])
    model = algo_class(meta["algo"]).load(folder / "model.zip", device="cpu")
    check_action_set(meta, model.action_space, folder / "train_metadata.yaml", scenario.cluster.gpus)
    if ALGOS[meta["algo"]] != "per_agent":
        raise SystemExit(f"{folder}: {meta['algo']} acts with the shared layout; this tool reads per_agent actions")
    n = scenario.cluster.gpus
    w = reward_weights(scenario.reward)
    env = DcsimEnv(scenario, action_layout="per_agent")
    price_col = env.observation_names.index("price_log_ratio")
    counts: dict[tuple, np.ndarray] = {}  # (kind, label) → actions chosen
    rows = []

    def summary_row(arm: str, summaries: list[dict]) -> list[str]:
        comps = [[s["reward"]["components"][k] for k in REWARD_COMPONENTS]
                 + [s["jobs"]["completed"], s["jobs"]["dropped"], s["jobs"]["pending"]] for s in summaries]
        m = np.mean(comps, axis=0)
        weighted = m[:len(REWARD_COMPONENTS)] * w / n
        return ([arm] + [f"{v:+.2f}" for v in weighted] + [f"{weighted.sum():+.2f}"]
                + [f"{v:.0f}" for v in m[len(REWARD_COMPONENTS):]])

    from dcsim.metrics import summarize

    summaries = []
    try:
        with torch_threads():
            for seed in seeds:
                obs, _ = env.reset(seed=seed)
                done = False
                while not done:
                    step = env.episodes.step
                    action, _ = model.predict(obs, deterministic=True)
                    kind = step.decision.kind
                    chosen = env._decider_actions(step, action)
                    label = kind.value
                    if label == "bid":
                        label += f", {PRICE_LEVELS[int(np.digitize(obs[price_col], [0.05, 0.5]))]}"
                    key = (kind, label)
                    if chosen.size:
                        c = counts.setdefault(key, np.zeros(len(ACTION_ENUMS[kind])))
                        np.add.at(c, chosen, 1)
                    obs, _, done, _, _ = env.step(action)
                summaries.append(summarize(env.last_result))
    finally:
        env.close()
    rows.append(summary_row(meta["algo"], summaries))
    for b in baselines:
        rows.append(summary_row(b, [run_scenario(scenario.model_copy(update={"seed": s}), policy=load_policy(b, {}))
                                    .summary for s in seeds]))
    comp_md = markdown_table(["arm"] + [f"{k} × weight" for k in REWARD_COMPONENTS]
                             + ["reward per GPU", "jobs completed", "jobs dropped", "jobs pending at the end"], rows)
    order = [f"bid, {p}" for p in PRICE_LEVELS] + ["admit", "on_idle", "dispatch"]
    act_rows = []
    for (kind, label), c in sorted(counts.items(), key=lambda kv: order.index(kv[0][1])):
        act_rows.append([label, f"{int(c.sum())}",
                         ", ".join(f"{m.name} {_share(c[m.value] / c.sum())}" for m in ACTION_ENUMS[kind] if c[m.value])])
    act_md = markdown_table(["decision", "rows decided", "greedy actions (share of the rows)"], act_rows)
    return comp_md, act_md


def _share(x: float) -> str:
    return f"{x:.0%}" if x >= 0.005 else "<1%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a `train --algo sb3:PPO|sb3:A2C` output folder")
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="evaluation seeds (default: the first three held-out ones, seed + 10000 ..)")
    ap.add_argument("--baselines", nargs="*", default=[], help="rule policies to run on the same seeds")
    args = ap.parse_args(argv)
    import yaml

    seeds = args.seeds
    if seeds is None:
        meta = yaml.safe_load((args.folder / "train_metadata.yaml").read_text(encoding="utf-8"))
        base = int(meta["scenario"]["seed"]) + 10000
        seeds = [base, base + 1, base + 2]
    comp_md, act_md = behaviour(args.folder, seeds, args.baselines)
    print(f"Seeds {', '.join(map(str, seeds))}.\n\n{comp_md}\n\n{act_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
