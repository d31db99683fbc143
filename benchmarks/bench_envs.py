"""Speed of the Gymnasium env and of SB3 PPO through it, in env steps per CPU second (``time.process_time``).

Two measurements:

- ``env``: whole episodes of each scenario through :class:`dcsim.envs.DcsimEnv` (``per_agent`` layout) with
  seeded random actions, no learner: the simulation between decisions, the thread hand-off, the observation.
  The CPU time is split into the caller's thread (observation, action decoding, gym) and the engine's worker
  thread (the simulation, the decision's cluster observation and rewards).
- ``ppo``: ``PPO.learn`` for ``--ppo-steps`` env steps (SB3's defaults: rollouts of 2048 steps, 10 epochs of
  minibatches of 64) on one scenario, with SB3's ``MlpPolicy`` and torch's default thread count (``stock``: the
  setup before ``docs/performance.md``'s "SB3 PPO through the env") and with what ``train --algo sb3:PPO`` uses
  now (``grouped``: :class:`dcsim.envs.sb3_policy.GroupedMlpPolicy`, torch on 1 thread); ``--ppo-threads``
  runs other thread counts.

    python benchmarks/bench_envs.py                       # env steps/s on the three learn_* scenarios
    python benchmarks/bench_envs.py --ppo-steps 2048      # and PPO, stock and grouped, on learn_shift
    PYTHONPATH=/path/to/older/checkout python benchmarks/bench_envs.py --ppo-setups stock   # an older dcsim

Reports numbers only; nothing here asserts a time. On a shared machine give ``uptime``'s load with them.
"""
from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [ROOT / "scenarios" / f"{s}.yaml" for s in ("learn_solar", "learn_grid", "learn_shift")]


def bench_env(scenario: Path, episodes: int, seed: int) -> dict:
    """Episodes of ``scenario`` with random actions: steps, CPU seconds in all, in the caller's thread."""
    from dcsim.envs import DcsimEnv

    env = DcsimEnv(scenario)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(4096)]
    steps, total = 0, 0.0
    t0, main0 = time.process_time(), time.thread_time()
    for k in range(episodes):
        env.reset(seed=seed + k)
        done = False
        while not done:
            _, reward, done, _, _ = env.step(actions[steps % len(actions)])
            total += reward
            steps += 1
    cpu, main = time.process_time() - t0, time.thread_time() - main0
    env.close()
    return {"scenario": scenario.stem, "steps": steps, "cpu_s": cpu, "main_s": main, "return": total}


def bench_ppo(scenario: Path, steps: int, setup: str, threads: int | None, seed: int) -> dict:
    """``PPO.learn`` for ``steps`` env steps with the ``stock`` or ``grouped`` policy on ``threads`` torch threads."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor

    from dcsim.envs import DcsimEnv

    if setup == "grouped":
        from dcsim.envs.sb3_policy import GroupedMlpPolicy
        policy = GroupedMlpPolicy
    else:
        policy = "MlpPolicy"
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    env = Monitor(DcsimEnv(scenario))
    model = PPO(policy, env, seed=seed, device="cpu", verbose=0)
    t0 = time.process_time()
    model.learn(total_timesteps=steps)
    cpu = time.process_time() - t0
    used = torch.get_num_threads()
    torch.set_num_threads(before)
    env.close()
    weights = float(sum(p.detach().double().abs().sum() for p in model.policy.parameters()))
    return {"setup": setup, "threads": used, "steps": int(model.num_timesteps), "cpu_s": cpu,
            "weights_l1": weights}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", type=Path, default=SCENARIOS)
    ap.add_argument("--episodes", type=int, default=2, help="env episodes per scenario (default 2)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--ppo-steps", type=int, default=0, help="PPO env steps per setup (0: no PPO; default 0)")
    ap.add_argument("--ppo-scenario", type=Path, default=ROOT / "scenarios" / "learn_shift.yaml")
    ap.add_argument("--ppo-setups", nargs="+", default=["stock", "grouped"], choices=["stock", "grouped"])
    ap.add_argument("--ppo-threads", nargs="+", type=int, default=None,
                    help="torch thread counts to run each setup with (default: stock on torch's default, "
                         "grouped on 1)")
    args = ap.parse_args()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs, "
          f"threads at start {threading.active_count()}")
    if args.episodes:
        print("\n| scenario | episodes | env steps | CPU s | env steps / CPU s | caller thread | worker thread | return |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for sc in args.scenarios:
            r = bench_env(sc, args.episodes, args.seed)
            per = 1e3 / r["steps"]
            print(f"| {r['scenario']} | {args.episodes} | {r['steps']} | {r['cpu_s']:.2f} | {r['steps'] / r['cpu_s']:.0f} "
                  f"| {r['main_s'] * per:.2f} ms/step | {(r['cpu_s'] - r['main_s']) * per:.2f} ms/step "
                  f"| {r['return']:.4f} |", flush=True)
    if args.ppo_steps:
        print(f"\nPPO on {args.ppo_scenario.stem}, {args.ppo_steps} steps, seed {args.seed}:\n")
        print("| setup | torch threads | env steps | CPU s | env steps / CPU s | sum of abs(weights) |")
        print("|---|---:|---:|---:|---:|---:|")
        for setup in args.ppo_setups:
            for threads in (args.ppo_threads or [None if setup == "stock" else 1]):
                r = bench_ppo(args.ppo_scenario, args.ppo_steps, setup, threads, args.seed)
                print(f"| {setup} | {r['threads']} | {r['steps']} | {r['cpu_s']:.1f} | {r['steps'] / r['cpu_s']:.1f} "
                      f"| {r['weights_l1']:.6f} |", flush=True)


if __name__ == "__main__":
    main()
