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
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from dcsim.atomic import (PARTIAL, check_output_dir, create_partial_dir, discard_dir, move_into_place,
                          remove_empty_dirs, replacing, write_text_atomic)
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
           "renewable_share": run.summary["renewable_share"],
           "renewable_battery_share": run.summary["renewable_battery_share"], "wall_s": wall_s}
    row.update({f"total_{k}": totals[k] for k in REWARD_COMPONENTS})
    if losses:
        losses.clear()
    return row


def train(scenario: Scenario, policy_name: str, episodes: int, out: Path, *, resume: bool = False,
          overwrite: bool = False, learner: str | None = None, learner_options: dict[str, Any] | None = None,
          init_from: Path | None = None,
          keep_transitions: int = 50_000, on_episode: Callable[[dict[str, Any]], None] | None = None,
          command: str = "", finish: Callable[[Path, pd.DataFrame], None] | None = None) -> pd.DataFrame:
    """Train ``policy_name`` on ``scenario`` for ``episodes`` episodes in total, writing into ``out``.

    The training runs in ``<out>.partial`` and is renamed to ``out`` when it is finished (with ``overwrite``
    the old ``out`` is replaced whole). ``resume`` continues ``<out>.partial`` after an interruption or a kill,
    or a finished ``out`` up to more episodes; it gives the same curve and checkpoint as an uninterrupted run.

    Args:
        finish: Called with the working folder and the curve after the last episode, before the rename (the
            CLI's evaluation writes its files there).

    Returns:
        The learning curve (one row per episode, including any from before ``resume``).
    """
    if scenario.workload.llm_serving is not None:

        raise DcsimError("workload.llm_serving: qlearning and dqn do not choose serving configurations; train "
                         "the serving learner instead (--policy serving_q, dcsim.serving.training.train_serving; "
                         "docs/serving.md)")
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

    if out.name in ("", ".", ".."):  # "a/.." and "." name real folders: <out>.partial must lie next to them
        out = Path(os.path.abspath(out))
    work = partial_training_dir(out)
    created: list[Path] = []
    rows: list[dict[str, Any]] = []
    start = 0
    kept_path = None
    if resume:
        work, state, rows = _prepare_resume(out, work, scenario, policy_name)
        if state is not None:
            start = state["episodes_done"]
            ck = _checkpoint_of(work, state)
            extra["checkpoint"] = str(ck)
            extra.pop("init_from", None)
            kept_path = _kept_transitions_of(work, ck, state)
    else:
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise DcsimError(f"--out {out}: directory exists and is not empty; choose another, pass --resume to "
                             "continue its training, or --overwrite")
        check_output_dir(out, overwrite)
        if work.exists():
            if not overwrite:
                raise DcsimError(f"--out {out}: an interrupted training of it is in {work}; pass --resume to "
                                 "continue it, or --overwrite to start over")
            discard_dir(work)
    policy = make_learning_policy(scenario, policy_name, extra)
    if kept_path is not None and getattr(policy, "keep_transitions", 0):
        from dcsim.learning import ReplayBuffer

        policy.recorded = ReplayBuffer.load(kept_path, capacity=policy.keep_transitions)
    if not work.exists():
        work, created = create_partial_dir(out, name=work.name)  # probes that the place can be written
    meta = {"command": command, "scenario": scenario_to_dict(scenario), "policy": policy_name,
            "params": {k: v for k, v in extra.items() if k != "checkpoint"}, "episodes": episodes}
    write_text_atomic(work / "train_metadata.yaml", yaml.safe_dump(meta, sort_keys=False))
    identity = {"policy": policy_name, "scenario": scenario.name, "root_seed": scenario.seed,
                "scenario_resolved": _plain(scenario_to_dict(scenario))}
    try:
        for k in range(start, episodes):
            sc = scenario.model_copy(update={"seed": scenario.seed + k})
            t0 = time.perf_counter()
            try:
                run = run_scenario(sc, policy=policy)
            except DcsimError:
                if not resume and k == start:  # a bad setting surfaced in the first episode: leave nothing behind
                    discard_dir(work)
                    remove_empty_dirs(created)
                raise
            rows.append(episode_row(k, run, policy, time.perf_counter() - t0))
            _commit_episode(work, policy, rows, identity)
            if on_episode is not None:
                on_episode(rows[-1])
        curve = _finalize(work, rows, meta, f"{policy_name} on {scenario.name}")
        if finish is not None:
            finish(work, curve)
    except (KeyboardInterrupt, DcsimError) as exc:
        if work.exists():
            exc.partial_output = work
            exc.resume_hint = f"; continue it with `--resume --out {out}`"
        raise
    move_into_place(work, out, overwrite=overwrite or resume)
    return curve


# ------------------------------------------------------------------------------------------ training folders
# A training runs in ``<out>.partial``. After each episode it writes the policy's checkpoint into a fresh
# ``checkpoints/episode-NNNNN`` folder, then the learning curve, then ``train_state.json`` (each file through
# os.replace): the state file is the commit point and names the checkpoint folder to resume from, so a kill at
# any moment leaves either the previous episode's state or the new one, never a mix. When every episode is
# done, the last checkpoint becomes ``checkpoint/``, the plots and exports are written and ``<out>.partial``
# is renamed to ``<out>``.
CHECKPOINTS = "checkpoints"
FINAL_CHECKPOINT = "checkpoint"
KEPT_TRANSITIONS = "transitions.npz"


def partial_training_dir(out: Path) -> Path:
    """Where an unfinished training of ``out`` lives (what ``--resume`` continues)."""
    return out.with_name(out.name + PARTIAL)


def _plain(data: Any) -> Any:
    """``data`` as JSON would give it back (so saved and current scenarios compare equal)."""
    return json.loads(json.dumps(data))


def _policy_state(policy: Policy) -> dict[str, Any]:
    """The policy's state for train_state.json, without the path it was loaded from (a resumed training would
    name its temporary folder there)."""
    return {k: v for k, v in _plain(policy.state_dict()).items() if k != "checkpoint"}


def _commit_episode(work: Path, policy: Policy, rows: list[dict[str, Any]], identity: dict[str, Any]) -> None:
    done = len(rows)
    relative = f"{CHECKPOINTS}/episode-{done:05d}"
    ck = work / relative
    discard_dir(ck)  # one a kill left before its commit
    ck.parent.mkdir(exist_ok=True)
    policy.save_checkpoint(ck)
    kept = policy.export_transitions(ck / KEPT_TRANSITIONS) if hasattr(policy, "export_transitions") else 0
    with replacing(work / CURVE_FILE) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_text_atomic(work / STATE_FILE, json.dumps(identity | {"episodes_done": done, "checkpoint": relative,
                                                                "kept_transitions": kept,
                                                                "state": _policy_state(policy)}, indent=2))
    for old in sorted((work / CHECKPOINTS).iterdir()):
        if old != ck:
            discard_dir(old)
    discard_dir(work / FINAL_CHECKPOINT)


def _finalize(work: Path, rows: list[dict[str, Any]], meta: dict[str, Any], title: str) -> pd.DataFrame:
    """Make the committed state a finished training (idempotent: a resume after a kill here redoes it)."""
    state = read_train_state(work)
    ck = _checkpoint_of(work, state)
    final = work / FINAL_CHECKPOINT
    if (ck / KEPT_TRANSITIONS).is_file():
        os.replace(ck / KEPT_TRANSITIONS, work / KEPT_TRANSITIONS)
    elif not state.get("kept_transitions"):
        (work / KEPT_TRANSITIONS).unlink(missing_ok=True)
    if ck != final:
        discard_dir(final)
        os.rename(ck, final)
    if state["checkpoint"] != FINAL_CHECKPOINT:  # also after a kill between the rename and this write
        write_text_atomic(work / STATE_FILE, json.dumps(state | {"checkpoint": FINAL_CHECKPOINT}, indent=2))
    discard_dir(work / CHECKPOINTS)
    for stray in work.glob(".*.tmp-*"):  # a temporary file a kill left half-written
        stray.unlink(missing_ok=True)
    curve = pd.DataFrame(rows)
    with replacing(work / CURVE_FILE) as tmp:
        curve.to_csv(tmp, index=False)
    write_text_atomic(work / "train_metadata.yaml", yaml.safe_dump(
        meta | {"episodes_done": len(rows), "transitions_exported": int(state.get("kept_transitions", 0)),
                "final_state": state.get("state")}, sort_keys=False))
    plot_learning_curve(curve, work / "learning_curve.png", title)
    return curve


def _checkpoint_of(work: Path, state: dict[str, Any]) -> Path:
    ck = work / state["checkpoint"]
    if not ck.is_dir() and (work / FINAL_CHECKPOINT).is_dir():  # killed after renaming it to checkpoint/
        ck = work / FINAL_CHECKPOINT
    if not ck.is_dir():
        raise DcsimError(f"{work / STATE_FILE}: field 'checkpoint': {state['checkpoint']!r} is not a folder in {work}; "
                         "the training folder is damaged (train again without --resume)")
    return ck


def _kept_transitions_of(work: Path, ck: Path, state: dict[str, Any]) -> Path | None:
    if not state.get("kept_transitions"):
        return None
    for path in (ck / KEPT_TRANSITIONS, work / KEPT_TRANSITIONS):
        if path.is_file():
            return path
    raise DcsimError(f"{work / STATE_FILE}: says {state['kept_transitions']} transitions were kept, but neither "
                     f"{ck / KEPT_TRANSITIONS} nor {work / KEPT_TRANSITIONS} exists; the training folder is damaged "
                     "(train again without --resume)")


_STATE_FIELDS = {"policy": (str, "a policy name"), "scenario": (str, "a scenario name"),
                 "episodes_done": (int, "an integer >= 0"), "root_seed": (int, "an integer"),
                 "checkpoint": (str, "a folder name inside the training folder")}


def read_train_state(folder: Path) -> dict[str, Any]:
    """Read and check ``train_state.json`` of a training folder.

    Raises:
        DcsimError: The file is missing, not JSON, or a field is missing or of the wrong type; the message
            names the file, the field, the value and what is allowed.
    """
    path = folder / STATE_FILE
    damaged = "the training folder is damaged: train again without --resume (into a new --out, or with --overwrite)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DcsimError(f"--resume: {path} not found; nothing to resume in {folder} "
                         "(train without --resume to start)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DcsimError(f"{path}: cannot be read ({exc}); {damaged}") from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DcsimError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         f"{damaged}") from None
    if not isinstance(state, dict):
        raise DcsimError(f"{path}: got a JSON {type(state).__name__}; expected an object with fields "
                         f"{', '.join(_STATE_FIELDS)}; {damaged}")
    state.setdefault("checkpoint", FINAL_CHECKPOINT)  # written before dcsim kept per-episode checkpoints
    for field, (kind, allowed) in _STATE_FIELDS.items():
        value = state.get(field)
        bad = (not isinstance(value, kind) or isinstance(value, bool)
               or (field == "episodes_done" and value < 0)
               or (field == "checkpoint" and (Path(value).is_absolute() or ".." in Path(value).parts
                                              or value.strip() in ("", "."))))
        if field not in state:
            raise DcsimError(f"{path}: field {field!r}: missing; expected {allowed}; {damaged}")
        if bad:
            raise DcsimError(f"{path}: field {field!r}: got {value!r}; expected {allowed}; {damaged}")
    kept = state.get("kept_transitions", 0)
    if not isinstance(kept, int) or isinstance(kept, bool) or kept < 0:
        raise DcsimError(f"{path}: field 'kept_transitions': got {kept!r}; expected an integer >= 0; {damaged}")
    if not isinstance(state.get("scenario_resolved", {}), dict):
        raise DcsimError(f"{path}: field 'scenario_resolved': got {state['scenario_resolved']!r}; expected the "
                         f"resolved scenario (an object); {damaged}")
    return state


def _read_curve(folder: Path, episodes_done: int) -> list[dict[str, Any]]:
    path = folder / CURVE_FILE
    damaged = "the training folder is damaged: train again without --resume"
    if not path.is_file():
        raise DcsimError(f"{path}: missing; {STATE_FILE} says {episodes_done} episode(s) were done and resuming "
                         f"needs their learning curve; {damaged}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DcsimError(f"{path}: not a readable learning curve ({exc.__class__.__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'empty'}); {damaged}") from None
    if "episode" not in df.columns:
        raise DcsimError(f"{path}: no 'episode' column (got columns {list(df.columns)[:8]}); {damaged}")
    if len(df) < episodes_done:
        raise DcsimError(f"{path}: {len(df)} row(s); {STATE_FILE} says {episodes_done} episode(s) were done "
                         f"(expected at least {episodes_done} rows); {damaged}")
    episode = pd.to_numeric(df["episode"].iloc[:episodes_done], errors="coerce")
    if not np.array_equal(episode.to_numpy(), np.arange(episodes_done)):
        raise DcsimError(f"{path}: column 'episode' holds {df['episode'].iloc[:episodes_done].tolist()[:8]}; "
                         f"expected 0, 1, ... {episodes_done - 1}; {damaged}")
    return df.to_dict("records")[:episodes_done]


def _differences(saved: Any, given: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(saved, dict) and isinstance(given, dict):
        out = []
        for key in sorted(set(saved) | set(given), key=str):
            out += _differences(saved.get(key), given.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == given else [(prefix.rstrip("."), saved, given)]


def _check_same_training(folder: Path, state: dict[str, Any], scenario: Scenario, policy_name: str, out: Path) -> None:
    if state["policy"] != policy_name or state["scenario"] != scenario.name:
        raise DcsimError(f"--resume: {out} holds {state['policy']!r} trained on {state['scenario']!r}; "
                         f"asked for {policy_name!r} on {scenario.name!r}")
    if state["root_seed"] != scenario.seed:
        raise DcsimError(f"--resume: {out} was trained with root seed {state['root_seed']}; this command gives "
                         f"seed {scenario.seed} (episode k uses seed + k: resume with --seed {state['root_seed']})")
    saved = state.get("scenario_resolved")
    if saved is None:  # older training folders keep the resolved scenario in train_metadata.yaml only
        try:
            saved = (yaml.safe_load((folder / "train_metadata.yaml").read_text(encoding="utf-8")) or {}).get("scenario")
        except (OSError, yaml.YAMLError, AttributeError):
            saved = None
    if not isinstance(saved, dict):
        return
    diffs = _differences(_plain(saved), _plain(scenario_to_dict(scenario)))
    if diffs:
        listed = "; ".join(f"{field}: trained with {a!r}, given {b!r}" for field, a, b in diffs[:4])
        more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise DcsimError(f"--resume: {out} was trained on another version of the scenario: {listed}{more}. "
                         "Resuming needs the same scenario, overrides, --horizon and --seed; train into a new "
                         "--out to change them")


def _prepare_resume(out: Path, work: Path, scenario: Scenario,
                    policy_name: str) -> tuple[Path, dict[str, Any] | None, list[dict[str, Any]]]:
    """The folder to continue in (``<out>.partial``; a finished ``out`` is copied there first), its checked
    state (None when a kill came before the first episode was committed) and the learning curve so far."""
    if out.exists() and not out.is_dir():
        raise DcsimError(f"--out {out}: is a file, not a training folder")
    if work.is_dir():
        if not (work / STATE_FILE).is_file():  # killed before its first episode: start it again
            discard_dir(work)
            return work, None, []
        source = work
    elif out.is_dir():
        source = out
    else:
        raise DcsimError(f"--resume: nothing to resume: neither {out} nor an interrupted {work} exists "
                         "(train without --resume to start)")
    state = read_train_state(source)
    _check_same_training(source, state, scenario, policy_name, out)
    rows = _read_curve(source, state["episodes_done"])
    _checkpoint_of(source, state)
    if source is out:
        copy = out.with_name(f"{out.name}.copy-{os.getpid()}")
        discard_dir(copy)
        shutil.copytree(out, copy)
        os.rename(copy, work)
    return work, state, rows


def plot_learning_curve(curve: pd.DataFrame, path: Path, title: str, *, value: str = "return_per_gpu",
                        value_label: str = "return per GPU (reward units)", point_label: str = "episode",
                        epsilon: str = "epsilon_end", epsilon_label: str = "ε") -> Path:
    """``value`` by episode (with a moving average), and ε (and the loss, where the curve has one), as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=[2, 1])
    ep = curve["episode"] + 1
    ax.plot(ep, curve[value], ".", alpha=0.5, label=point_label)
    window = max(1, len(curve) // 10)
    ax.plot(ep, curve[value].rolling(window, min_periods=1).mean(), "-", label=f"mean of {window}")
    ax.set_ylabel(value_label)
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    ax2.plot(ep, curve[epsilon], color="tab:gray", label="ε at episode end")
    ax2.set_ylabel(epsilon_label)
    ax2.set_xlabel("episode")
    if "loss_mean" in curve and curve["loss_mean"].notna().any():
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
    return evaluation_row(label, name, sc.seed, run_scenario(sc, policy=load_policy(name, params)).summary)


def evaluation_row(label: str, name: str, seed: int, s: dict[str, Any]) -> dict[str, Any]:
    """One row of :func:`evaluate` from a run's summary (also for runs made outside it, e.g. through an env)."""
    return {"arm": label, "policy": name, "seed": seed, "return_per_gpu": s["reward"]["per_gpu"],
            "jobs_completed": s["jobs"]["completed"], "jobs_dropped": s["jobs"]["dropped"],
            "deadline_misses": s["jobs"]["deadline_misses"], "tokens_spent": s["tokens"]["spent"],
            "energy_kwh": s["energy_j"]["consumed"] / 3.6e6, "renewable_share": s["renewable_share"],
            "renewable_battery_share": s["renewable_battery_share"],
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
