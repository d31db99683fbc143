"""Trains Stable-Baselines3 learners through the Gymnasium env and evaluates them against the baselines.

``python -m dcsim train SCENARIO --algo sb3:PPO --timesteps N`` (also ``sb3:A2C`` and ``sb3:DQN``). PPO and A2C
act with the env's ``per_agent`` layout (a choice per GPU and per admission slot), DQN with the ``shared`` one
(one of 48 choices for every decider), since SB3's DQN needs a ``Discrete`` action. Training episode ``k`` runs
the scenario with seed ``seed + k``, as ``train --policy`` does (SB3 seeds the first reset; later resets take the
next seed). The evaluation runs the trained model
greedily (``deterministic=True``) through the env on the held-out seeds and the baselines as plain runs on
the same seeds; a run through the env is the run a plain policy making the same decisions gives
(``tests/test_envs.py``), so the paired comparison (:func:`dcsim.train.evaluation_table`) is the same one.

Writes into ``--out``: ``model.zip`` (``<Algo>.load``), ``learning_curve.csv`` (one row per finished training
episode), ``train_metadata.yaml``, and with ``--eval-seeds`` ``evaluation.md/.csv`` and ``evaluation_runs.csv``;
with ``--tensorboard DIR`` SB3's TensorBoard event files go to ``DIR/<out>-<Algo>_<n>`` (``<out>`` the name of
``--out``, so a resumed training appends to its own run's folder, not to the newest of another training's).

``--resume`` continues the training in ``--out`` from its ``model.zip`` up to ``--timesteps`` in total: the same
algorithm, scenario and action set (``train_metadata.yaml`` records the action layout and the enums' member
names; another one is refused), the episode count carried on (the next episode is ``len(learning_curve)``, run
with seed ``seed + len(learning_curve)``; an episode cut off when the training stopped is run again from its
start). SB3 saves no optimiser-independent state beyond the model: a resumed run is a continuation, not the
bit-for-bit run an uninterrupted training gives, and a resumed ``sb3:DQN`` starts with an empty replay buffer
(SB3's buffer is preallocated at ``buffer_size`` rows, too big to keep in the training folder).
"""
from __future__ import annotations

from contextlib import contextmanager
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
#: Torch's intra-op threads while training and evaluating. The networks are tiny (batches of 1 to 64 rows of a
#: few hundred features), and torch's thread pool made small ops many times slower on the shared 2-core machine (a
#: softmax of 32×8 logits: 176 µs of CPU on 2 threads, 6 µs on 1; docs/performance.md). The thread count also
#: changes a training's floating-point results, so fixing it makes a training independent of the core count.
TORCH_THREADS = 1


@contextmanager
def torch_threads(n: int = TORCH_THREADS):
    """Run the block with torch's intra-op thread count set to ``n`` (restored afterwards; no torch: no-op)."""
    try:
        import torch
    except ImportError:
        yield
        return

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def policy_for(algo: str) -> Any:
    """The SB3 policy ``algo`` trains: ``MlpPolicy``, for the ``per_agent`` layout with the grouped
    ``MultiDiscrete`` distribution (:class:`dcsim.envs.sb3_policy.GroupedMlpPolicy`: the same training, faster)."""
    if ALGOS[algo] == "per_agent":
        from dcsim.envs.sb3_policy import GroupedMlpPolicy

        return GroupedMlpPolicy
    return "MlpPolicy"


def action_set() -> dict[str, list[str]]:
    """The env's action enums' member names in index order: what a trained model's actions mean (the facility
    agent's :class:`~dcsim.envs.facility.DispatchAction` included; its setpoint levels are the scenario's
    ``facility.cooling.setpoint_control.levels_c``, recorded with the scenario)."""
    from dcsim.envs.facility import DispatchAction
    from dcsim.learning import BidAction
    from dcsim.policy import Admission, IdleAction

    return {"BidAction": list(BidAction.__members__), "IdleAction": list(IdleAction.__members__),
            "Admission": list(Admission.__members__), "DispatchAction": list(DispatchAction.__members__)}


def action_set_differs(saved: Any) -> bool:
    """Whether a recorded action set (``train_metadata.yaml`` ``action_set``, an ONNX export's ``actions``) differs
    from :func:`action_set`: an enum it records with other members, or one this dcsim does not have. An enum it does
    not record (an older dcsim recorded fewer; the facility's ``DispatchAction`` among them) is not a difference
    here; the action space's sizes check it."""
    current = action_set()
    return not isinstance(saved, dict) or any(current.get(k) != v for k, v in saved.items())


def expected_action_space(action_layout: str, n_gpus: int, admission_slots: int = 8,
                          facility: bool = False, setpoint_levels: int = 0) -> list[int]:
    """The sizes of the env's action space with this dcsim's enums: ``MultiDiscrete`` ``nvec`` (``per_agent``) or
    ``[n]`` of ``Discrete(n)`` (``shared``); ``facility``: the scenario has ``facility.battery`` (a
    :class:`~dcsim.envs.facility.DispatchAction` more); ``setpoint_levels``: the number of
    ``facility.cooling.setpoint_control.levels_c`` (0: no setpoint control; else a setpoint level more)."""
    names = action_set()
    n_bid, n_idle, n_admit, n_dispatch = (len(names[k]) for k in ("BidAction", "IdleAction", "Admission",
                                                                   "DispatchAction"))
    n_dispatch = n_dispatch if facility else 1
    if action_layout == "per_agent":
        return ([n_bid] * n_gpus + [n_idle] * n_gpus + [n_admit] * admission_slots + ([n_dispatch] if facility else [])
                + ([setpoint_levels] if setpoint_levels else []))
    return [n_bid * n_idle * n_admit * n_dispatch * max(setpoint_levels, 1)]


def setpoint_levels_of(scenario: dict[str, Any]) -> int:
    """How many setpoint levels the facility agent of a (dumped) scenario chooses among (0: no setpoint control)."""
    cooling = (scenario.get("facility") or {}).get("cooling") or {}
    control = cooling.get("setpoint_control")
    if control is None:
        return 0
    levels = control.get("levels_c")
    if levels is None:  # a scenario written by hand with the defaults
        from dcsim.facility.config import SetpointControlConfig

        levels = SetpointControlConfig().levels_c
    return len(levels)


def _space_sizes(space) -> list[int]:
    return [int(v) for v in np.atleast_1d(getattr(space, "nvec", getattr(space, "n", -1)))]


def read_training(folder: Path, flag: str = "--resume") -> dict[str, Any]:
    """``train_metadata.yaml`` of a ``train --algo`` folder, checked (the folder must hold ``model.zip`` too).

    Raises:
        DcsimError: The files are missing or the metadata lacks a field; the message names file and field.
    """
    path = folder / "train_metadata.yaml"
    if not (folder / MODEL_FILE).is_file():
        raise DcsimError(f"{flag}: {folder / MODEL_FILE} not found; {folder} is not a finished `train --algo` "
                         "training (train without --resume to start one)")
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DcsimError(f"{flag}: {path} not found; without it the model's algorithm and action layout are "
                         f"unknown (it is written next to {MODEL_FILE} by `train --algo`)") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DcsimError(f"{path}: cannot be read ({exc.__class__.__name__}); the training folder is damaged") from None
    if not isinstance(meta, dict):
        raise DcsimError(f"{path}: got {type(meta).__name__}; expected the mapping `train --algo` writes")
    for field in ("algo", "action_layout", "scenario"):
        if field not in meta:
            raise DcsimError(f"{path}: field {field!r}: missing; expected what `train --algo` writes")
    if meta["algo"] not in ALGOS:
        raise DcsimError(f"{path}: field 'algo': got {meta['algo']!r}; allowed: {', '.join(ALGOS)}")
    return meta


def check_action_set(meta: dict[str, Any], model_space, where: Path, n_gpus: int | None = None) -> None:
    """A trained model must have this dcsim's action set: the layout its algorithm uses here, the enums' member
    names (when the metadata records them) and the action space they give.

    Raises:
        DcsimError: Another action set; the message names the file, what it holds and what this dcsim has.
    """
    algo, layout = meta["algo"], meta["action_layout"]
    retrain = "a model of another action set cannot be loaded; train it again with this dcsim"
    if layout != ALGOS[algo]:
        raise DcsimError(f"{where}: field 'action_layout': {algo} trained with {layout!r}; this dcsim's {algo} uses "
                         f"{ALGOS[algo]!r}: {retrain}")
    saved = meta.get("action_set")
    if saved is not None and action_set_differs(saved):  # an enum it does not record: the sizes below check it
        raise DcsimError(f"{where}: field 'action_set': the model chooses among {saved}; this dcsim's actions are "
                         f"{action_set()}: {retrain}")
    trained_on = meta.get("scenario") or {}
    n = n_gpus if n_gpus is not None else int(trained_on.get("cluster", {}).get("gpus", 0))
    facility = (trained_on.get("facility") or {}).get("battery") is not None  # the env's facility agent
    levels = setpoint_levels_of(trained_on)
    got = _space_sizes(model_space)
    slots = max(len(got) - 2 * n - (facility and layout == "per_agent") - (bool(levels) and layout == "per_agent"), 0)
    want = expected_action_space(layout, n, slots, facility, levels)
    if got != want:
        shown = (lambda v: v if len(v) <= 6 else v[:3] + ["..."] + v[-3:])
        enums = ", ".join(f"{k}: {len(v)}" for k, v in action_set().items()) + (f", setpoint levels: {levels}"
                                                                                 if levels else "")
        raise DcsimError(f"{where}: the model's action space has sizes {shown(got)}; this dcsim's {layout!r} "
                         f"layout for {n} GPUs gives {shown(want)} ({enums}): {retrain}")


def algo_class(algo: str) -> type:
    """The SB3 class an ``--algo`` value names; a clear error for an unknown one or a missing extra."""
    if algo not in ALGOS:
        raise DcsimError(f"--algo {algo!r}: allowed: {', '.join(ALGOS)}, mappo")
    sb3 = require("stable_baselines3", f"--algo {algo}")
    require("gymnasium", f"--algo {algo}")
    return getattr(sb3, algo.split(":", 1)[1])


def tb_log_name(out: Path, algo: str) -> str:
    """The TensorBoard run name of the training in ``out``: SB3 writes ``DIR/<name>_<n>`` and, resuming (without
    resetting its step count), appends to the newest ``<name>_<n>``, so the name carries the output folder's."""
    return f"{Path(out).name}-{algo.split(':', 1)[1]}"


def train_sb3(scenario: Scenario, algo: str, timesteps: int, out: Path, *, overwrite: bool = False,
              algo_options: dict[str, Any] | None = None, tensorboard: Path | None = None,
              finish: Callable[[Path, Any], None] | None = None, command: str = "",
              resume: bool = False) -> pd.DataFrame:
    """Train ``algo`` on ``scenario`` for ``timesteps`` env steps, writing into ``out`` (atomically).

    Args:
        resume: Continue the finished training in ``out`` (its ``model.zip``) up to ``timesteps`` in total; see
            the module docstring.
        algo_options: Keyword arguments of the SB3 class (e.g. ``n_steps``, ``learning_rate``).
        tensorboard: Folder for TensorBoard logs, or None.
        finish: Called with the working folder and the trained model before the folder is renamed to ``out``
            (the CLI's evaluation writes there).

    Returns:
        The learning curve (one row per finished training episode, including any from before ``resume``).
    """
    cls = algo_class(algo)
    if timesteps < 1:
        raise DcsimError(f"--timesteps {timesteps}: allowed: an integer >= 1")
    from stable_baselines3.common.monitor import Monitor

    from dcsim.envs.gym_env import DcsimEnv

    options = dict(algo_options or {})
    env = Monitor(DcsimEnv(scenario, action_layout=ALGOS[algo]))
    tb = None if tensorboard is None else str(tensorboard)
    earlier = pd.DataFrame()
    if resume:
        model, meta, earlier = _resume(cls, env, scenario, algo, timesteps, out, options, tb)
        done = int(model.num_timesteps)
        meta |= {"command": command, "timesteps": timesteps, "resumed_at_timesteps":
                 list(meta.get("resumed_at_timesteps", [])) + [done]}
    else:
        try:  # before the output folder: a bad option leaves nothing behind
            with torch_threads():  # the network's initial weights come from torch's RNG, not its threads
                model = cls(policy_for(algo), env, seed=scenario.seed, device="cpu", verbose=0, tensorboard_log=tb,
                            **options)
        except (TypeError, ValueError, AssertionError) as exc:
            env.close()
            raise DcsimError(f"--algo-option {options}: {algo} rejects it ({exc})") from None
        done = 0
        meta = {"command": command, "algo": algo, "timesteps": timesteps, "algo_options": options,
                "action_layout": ALGOS[algo], "action_set": action_set(), "scenario": scenario_to_dict(scenario)}
    with atomic_output_dir(out, overwrite=overwrite or resume) as work:
        write_text_atomic(work / "train_metadata.yaml", yaml.safe_dump(meta, sort_keys=False))
        try:
            with torch_threads():
                model.learn(total_timesteps=timesteps - done, tb_log_name=tb_log_name(out, algo),
                            reset_num_timesteps=not resume)
        finally:
            env.close()
        model.save(work / MODEL_FILE)
        write_text_atomic(work / "train_metadata.yaml", yaml.safe_dump(
            meta | {"timesteps_done": int(model.num_timesteps)}, sort_keys=False))
        n_gpus = scenario.cluster.gpus
        returns = env.get_episode_rewards()
        seeds = env.unwrapped.episode_seeds[:len(returns)]
        curve = pd.DataFrame({"episode": len(earlier) + np.arange(len(returns)), "seed": seeds,
                              "return_per_gpu": np.asarray(returns, float) / n_gpus,
                              "steps": env.get_episode_lengths()})
        curve = pd.concat([earlier, curve], ignore_index=True) if len(earlier) else curve
        curve.to_csv(work / "learning_curve.csv", index=False)
        if finish is not None:
            finish(work, model)
    return curve


def _resume(cls: type, env, scenario: Scenario, algo: str, timesteps: int, out: Path, options: dict[str, Any],
            tensorboard: str | None) -> tuple[Any, dict[str, Any], pd.DataFrame]:
    """Load the training in ``out`` to continue it: its model (on ``env``), metadata and learning curve."""
    from dcsim.train import _differences, _plain

    def fail(message: str):
        env.close()
        raise DcsimError(message)

    if options:
        fail(f"--algo-option with --resume: the resumed model keeps the settings it was trained with "
             f"({out / 'train_metadata.yaml'}); drop {', '.join(sorted(options))}")
    try:
        meta = read_training(out)
    except DcsimError:
        env.close()
        raise
    if meta["algo"] != algo:
        fail(f"--resume: {out} holds a {meta['algo']} training; asked for --algo {algo}")
    diffs = _differences(_plain(meta["scenario"]), _plain(scenario_to_dict(scenario)))
    if diffs:
        listed = "; ".join(f"{field}: trained with {a!r}, given {b!r}" for field, a, b in diffs[:4])
        more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
        fail(f"--resume: {out} was trained on another version of the scenario: {listed}{more}. Resuming needs the "
             "same scenario, overrides, --horizon and --seed; train into a new --out to change them")
    path = out / "learning_curve.csv"
    try:
        earlier = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        fail(f"--resume: {path} cannot be read ({exc.__class__.__name__}); the training folder is damaged")
    numbered = np.array_equal(earlier.get("episode", pd.Series(dtype=int)), np.arange(len(earlier)))
    if list(earlier.columns[:2]) != ["episode", "seed"] or not numbered:
        fail(f"--resume: {path}: expected columns episode, seed, ... with episodes 0, 1, ...; the training folder "
             "is damaged")
    try:
        model = cls.load(out / MODEL_FILE, device="cpu", tensorboard_log=tensorboard)
    except Exception as exc:  # a damaged zip: zipfile, pickle and torch raise several kinds
        fail(f"--resume: {out / MODEL_FILE}: cannot be loaded ({exc.__class__.__name__}: {exc}); the training "
             "folder is damaged")
    try:  # the model's own action space, before SB3 compares it with the env's
        check_action_set(meta, model.action_space, out / "train_metadata.yaml", scenario.cluster.gpus)
    except DcsimError:
        env.close()
        raise
    try:
        model.set_env(env)
    except ValueError as exc:  # SB3's check that the saved spaces are the env's
        fail(f"--resume: {out / MODEL_FILE}: {exc}; the model was trained for another scenario size or action set")
    if timesteps <= model.num_timesteps:
        fail(f"--timesteps {timesteps}: {out} has already trained {model.num_timesteps} steps; give a larger total "
             "to continue it")
    model.set_random_seed(scenario.seed + len(earlier))  # the next episode is len(earlier): seed + k, as before
    return model, meta, earlier


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
            with torch_threads():
                while not done:
                    action, _ = model.predict(obs, deterministic=True)
                    obs, _, done, _, _ = env.step(action)
            rows.append(evaluation_row(label, algo, seed, summarize(env.last_result)))
    finally:
        env.close()
    return pd.DataFrame(rows)
