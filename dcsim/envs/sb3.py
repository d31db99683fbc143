"""Trains Stable-Baselines3 learners through the Gymnasium env and evaluates them against the baselines.

``python -m dcsim train SCENARIO --algo sb3:PPO --timesteps N`` (also ``sb3:A2C`` and ``sb3:DQN``). PPO and A2C
act with the env's ``per_agent`` layout (a choice per GPU and per admission slot), DQN with the ``shared`` one
(one of 30 choices for every decider), since SB3's DQN needs a ``Discrete`` action. Training episode ``k`` runs
the scenario with seed ``seed + k``, as ``train --policy`` does (SB3 seeds the first reset; later resets take the
next seed). The evaluation runs the trained model
greedily (``deterministic=True``) through the env on the held-out seeds and the baselines as plain runs on
the same seeds; a run through the env is the run a plain policy making the same decisions gives
(``tests/test_envs.py``), so the paired comparison (:func:`dcsim.train.evaluation_table`) is the same one.

Writes into ``--out``: ``model.zip`` (``<Algo>.load``), ``learning_curve.csv`` (one row per finished training
episode), ``train_metadata.yaml``, and with ``--eval-seeds`` ``evaluation.md/.csv`` and ``evaluation_runs.csv``;
with ``--tensorboard DIR`` SB3's TensorBoard event files go to ``DIR/<Algo>_<n>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from dcsim.atomic import atomic_output_dir, write_text_atomic
from dcsim.config import Scenario, scenario_to_dict
from dcsim.envs import require
from dcsim.errors import DcsimError

#: ``--algo`` values → the env's action layout for that learner.
ALGOS = {"sb3:PPO": "per_agent", "sb3:A2C": "per_agent", "sb3:DQN": "shared"}
MODEL_FILE = "model.zip"


def algo_class(algo: str) -> type:
    """The SB3 class an ``--algo`` value names; a clear error for an unknown one or a missing extra."""
    if algo not in ALGOS:
        raise DcsimError(f"--algo {algo!r}: allowed: {', '.join(ALGOS)}, mappo")
    sb3 = require("stable_baselines3", f"--algo {algo}")
    require("gymnasium", f"--algo {algo}")
    return getattr(sb3, algo.split(":", 1)[1])


def train_sb3(scenario: Scenario, algo: str, timesteps: int, out: Path, *, overwrite: bool = False,
              algo_options: dict[str, Any] | None = None, tensorboard: Path | None = None,
              finish: Callable[[Path, Any], None] | None = None, command: str = "") -> pd.DataFrame:
    """Train ``algo`` on ``scenario`` for ``timesteps`` env steps, writing into ``out`` (atomically).

    Args:
        algo_options: Keyword arguments of the SB3 class (e.g. ``n_steps``, ``learning_rate``).
        tensorboard: Folder for TensorBoard logs, or None.
        finish: Called with the working folder and the trained model before the folder is renamed to ``out``
            (the CLI's evaluation writes there).

    Returns:
        The learning curve (one row per finished training episode).
    """
    cls = algo_class(algo)
    if timesteps < 1:
        raise DcsimError(f"--timesteps {timesteps}: allowed: an integer >= 1")
    from stable_baselines3.common.monitor import Monitor

    from dcsim.envs.gym_env import DcsimEnv

    options = dict(algo_options or {})
    env = Monitor(DcsimEnv(scenario, action_layout=ALGOS[algo]))
    try:  # before the output folder: a bad option leaves nothing behind
        model = cls("MlpPolicy", env, seed=scenario.seed, device="cpu", verbose=0,
                    tensorboard_log=None if tensorboard is None else str(tensorboard), **options)
    except (TypeError, ValueError, AssertionError) as exc:
        env.close()
        raise DcsimError(f"--algo-option {options}: {algo} rejects it ({exc})") from None
    with atomic_output_dir(out, overwrite=overwrite) as work:
        meta = {"command": command, "algo": algo, "timesteps": timesteps, "algo_options": options,
                "action_layout": ALGOS[algo], "scenario": scenario_to_dict(scenario)}
        write_text_atomic(work / "train_metadata.yaml", yaml.safe_dump(meta, sort_keys=False))
        try:
            model.learn(total_timesteps=timesteps, tb_log_name=algo.split(":", 1)[1])
        finally:
            env.close()
        model.save(work / MODEL_FILE)
        n_gpus = scenario.cluster.gpus
        returns = env.get_episode_rewards()
        seeds = env.unwrapped.episode_seeds[:len(returns)]
        curve = pd.DataFrame({"episode": np.arange(len(returns)), "seed": seeds,
                              "return_per_gpu": np.asarray(returns, float) / n_gpus,
                              "steps": env.get_episode_lengths()})
        curve.to_csv(work / "learning_curve.csv", index=False)
        if finish is not None:
            finish(work, model)
    return curve


def evaluate_model(model: Any, scenario: Scenario, seeds: list[int], label: str, algo: str) -> pd.DataFrame:
    """Run ``model`` greedily through the env on ``seeds``: rows as :func:`dcsim.train.evaluate` gives."""
    from dcsim.envs.gym_env import DcsimEnv
    from dcsim.metrics import summarize
    from dcsim.train import evaluation_row

    env = DcsimEnv(scenario, action_layout=ALGOS[algo])
    rows = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, _, done, _, _ = env.step(action)
            rows.append(evaluation_row(label, algo, seed, summarize(env.last_result)))
    finally:
        env.close()
    return pd.DataFrame(rows)
