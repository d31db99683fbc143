"""Command line: ``python -m dcsim run | compare | sweep | train | export | report | validate | schema | list``."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from importlib import resources
from pathlib import Path

from dcsim import __version__
from dcsim.errors import DcsimError, ScenarioError, _short

QUICKSTART = "quickstart.yaml"


def _builtin(name: str) -> Path:
    return Path(str(resources.files("dcsim") / "builtin" / name))


def _load(path: Path, overrides: list[str], options: dict[str, str] | None = None):
    """``load_scenario`` with problems caused by a command-line option reported against that option, not the file.

    Args:
        path: The scenario file (or the built-in quickstart).
        overrides: ``key=value`` strings applied in order.
        options: Override string → the option as typed (``"horizon_s=5x"`` → ``"--horizon 5x"``); an override not
            listed came from ``--set``.
    """
    from dcsim.config import load_scenario

    try:
        return load_scenario(path, overrides)
    except ScenarioError as exc:
        typed = {item.split("=", 1)[0].strip(): (options or {}).get(item, f"--set {item}") for item in overrides}
        ours, theirs = [], []
        for field, value, message in exc.problems:
            option = next((o for key, o in typed.items()
                           if field == key or field.startswith(key + ".") or key.startswith(field + ".")), None)
            if field == "--set":
                option = f"--set {value}"
            (ours if option else theirs).append((field, value, message, option))
        if not ours:
            raise
        lines = [f"command line: {len(ours)} problem(s) in the options"
                 + (f" (and {len(theirs)} in {path})" if theirs else "")]
        lines += [f"  - {option}: {field}: {message} (got {_short(value)})" for field, value, message, option in ours]
        lines += [f"  - {path}: {field}: {message} (got {_short(value)})" for field, value, message, _ in theirs]
        raise DcsimError("\n".join(lines)) from None


def _progress_bar(horizon_s: float, enabled: bool):
    """A tqdm bar over simulated time that appears only if the run lasts more than two seconds."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=horizon_s, unit="sim-s", unit_scale=True, delay=2.0, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} simulated s [{elapsed}<{remaining}]")
    state = {"last": 0.0}

    def update(t: float) -> None:
        bar.update(t - state["last"])
        state["last"] = t

    def close() -> None:
        bar.update(horizon_s - state["last"])
        bar.close()

    return update, close


def cmd_run(args: argparse.Namespace) -> int:
    from dcsim.metrics import summary_table
    from dcsim.atomic import atomic_output_dir
    from dcsim.outputs import choose_run_dir, write_run
    from dcsim.runner import run_scenario

    path = Path(args.scenario) if args.scenario else _builtin(QUICKSTART)
    overrides: list[str] = []
    _policy_overrides(args, path, overrides)  # first, so that --set policy.params.K=V applies to --policy
    overrides += list(args.set or [])
    _checkpoint_overrides(args, overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.horizon is not None:
        overrides.append(f"horizon_s={args.horizon}")
    if args.trace_events:
        overrides.append("outputs.trace_events=true")
    scenario = _load(path, overrides, _typed_options(args))
    if scenario.outputs.format == "parquet":
        from dcsim.tables import require_pyarrow

        require_pyarrow(f"{path}: outputs.format: parquet")
    if args.checkpoint is not None:
        _check_checkpoint_policy(scenario.policy.name)
    out = Path(args.out) if args.out else choose_run_dir(Path("runs"), f"{scenario.name}-{scenario.policy.name.replace(':', '.')}-seed{scenario.seed}")
    with atomic_output_dir(out, overwrite=args.overwrite) as work:  # checked and probed before simulating
        update, close = _progress_bar(scenario.horizon_s, not args.quiet)
        try:
            run = run_scenario(scenario, progress=update)
        except ScenarioError as exc:
            if exc.path is None:  # raised while building the run: name the scenario file
                raise ScenarioError(path, exc.problems) from None
            raise
        finally:
            close()
        written = write_run(run, work, plots=args.plots)
    if not args.quiet:
        print(summary_table(run.summary))
        print(f"\nwrote {len(written)} files to {out}")
    return 0


#: ``train --baselines`` default: the GPU-job rule policies (a serving scenario uses the serving rules instead).
JOB_BASELINES = ("always_on", "race_to_idle", "renewable_follower", "price_threshold", "deadline_slack", "truthful")


def _policy_overrides(args: argparse.Namespace, path: Path, overrides: list[str]) -> None:
    """``--policy``: the scenario's params are kept only for its own policy. Goes before the ``--set`` items, so
    ``--set policy.params.K=V`` sets a parameter of the ``--policy`` whatever the order on the command line."""
    if args.policy is not None:
        from dcsim.config import read_scenario_mapping

        policy = read_scenario_mapping(path).get("policy")
        own = (policy if isinstance(policy, dict) else {}).get("name", "always_on")
        overrides.append(f"policy.name={json.dumps(args.policy)}")
        if args.policy != own:
            overrides.append("policy.params={}")


def _typed_options(args: argparse.Namespace) -> dict[str, str]:
    """The overrides the CLI makes from its own options, mapped to the options as typed (for error messages)."""
    out = {}
    if getattr(args, "seed", None) is not None:
        out[f"seed={args.seed}"] = f"--seed {args.seed}"
    if getattr(args, "horizon", None) is not None:
        out[f"horizon_s={args.horizon}"] = f"--horizon {args.horizon}"
    if getattr(args, "policy", None) is not None:
        out[f"policy.name={json.dumps(args.policy)}"] = f"--policy {args.policy}"
        out["policy.params={}"] = f"--policy {args.policy}"
    return out


def _checkpoint_overrides(args: argparse.Namespace, overrides: list[str]) -> None:
    """``--checkpoint``: evaluate a trained learning policy (load it and freeze it)."""
    if getattr(args, "checkpoint", None) is not None:
        ckpt = Path(args.checkpoint).resolve()
        if not ckpt.exists():
            raise DcsimError(f"--checkpoint {args.checkpoint}: no such file or folder (give the checkpoint folder "
                             "or file written by `python -m dcsim train`, e.g. runs/train-.../checkpoint)")
        overrides += [f"policy.params.checkpoint={json.dumps(str(ckpt))}", "policy.params.learn=false"]
        layout = _checkpoint_layout(ckpt)
        chosen = any(item.partition("=")[0].strip() == "policy.params.actions" for item in args.set or [])
        if layout is not None and not chosen:  # an explicit --set wins (a mismatch is then the loader's error)
            overrides.append(f"policy.params.actions={json.dumps(layout)}")


#: The JSON spec a learner's checkpoint folder holds, by policy (``qlearning.npz`` / ``dqn.pt`` beside it).
_CHECKPOINT_SPECS = ("qlearning.json", "dqn.json")


def _checkpoint_layout(ckpt: Path) -> str | None:
    """The action layout (``policy.params.actions``) a qlearning / dqn checkpoint records, or None when it records
    none (the default ``bid`` layout, as before layouts) or is not such a checkpoint (then the policy's loader
    reports what is wrong with it)."""
    specs = [ckpt / name for name in _CHECKPOINT_SPECS] if ckpt.is_dir() else [ckpt.with_suffix(".json")]
    for spec in specs:
        try:
            saved = json.loads(spec.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(saved, dict) and saved.get("policy") in ("qlearning", "dqn") \
                and isinstance(saved.get("actions"), str):
            return saved["actions"]
    return None


def _check_checkpoint_policy(name: str) -> None:
    """``--checkpoint`` needs a learning policy; a rule-based one has nothing to load."""
    from dcsim.errors import PolicyError
    from dcsim.policy import _import, registered_policies

    try:
        cls = _import(name if ":" in name else registered_policies()[name])
    except (KeyError, PolicyError):
        return  # an unknown policy is reported by name when the run loads it
    if not (getattr(cls, "wants_feedback", False) and hasattr(cls, "load_checkpoint")):
        raise DcsimError(f"--checkpoint: policy {name!r} is rule-based and loads no checkpoint; --checkpoint takes "
                         "a learning policy: add --policy qlearning or --policy dqn (the policy `train` trained)")


def _key_values(items: list[str] | None, flag: str) -> dict:
    """``KEY=VALUE`` strings (values parsed as YAML) as a dict."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise DcsimError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} mgmt_address=host:9000")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise DcsimError(f"{flag} {item!r}: the value is not YAML ({exc.__class__.__name__})") from None
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from dcsim.outputs import choose_run_dir
    from dcsim.train import train

    if args.algo is not None or args.policy is None:
        return _cmd_train_algo(args)
    path = Path(args.scenario)
    if args.eval_seeds < 0:
        raise DcsimError(f"--eval-seeds {args.eval_seeds}: allowed: an integer >= 0 (0: no evaluation)")
    references = _reference_arms(args.reference)  # a bad rule fails here, before any training
    if references and not args.eval_seeds:
        raise DcsimError("--reference adds arms to the evaluation: give --eval-seeds N too")
    overrides: list[str] = []
    _policy_overrides(args, path, overrides)  # the trained policy, so --set policy.params.K=V configures it
    overrides += list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.horizon is not None:
        overrides.append(f"horizon_s={args.horizon}")
    scenario = _load(path, overrides, _typed_options(args))
    if scenario.workload.llm_serving is not None:  # the serving learner has its own small trainer
        return _cmd_train_serving(args, scenario, references)
    name = args.policy
    if args.out:
        out = Path(args.out)
    elif args.resume:
        raise DcsimError("--resume needs --out: the folder of the training to continue")
    else:
        out = choose_run_dir(Path("runs"), f"train-{scenario.name}-{name}")
    tb = None
    if args.tensorboard is not None:
        from dcsim.tb_log import EpisodeLog

        tb = EpisodeLog(Path(args.tensorboard), name)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.episodes, unit="episode", file=sys.stderr)

    def on_episode(row: dict) -> None:
        if tb is not None:
            tb.write(row)
        if bar is not None:
            bar.n = row["episode"] + 1
            bar.set_postfix(ret=f"{row['return_per_gpu']:.3f}", eps=f"{row['epsilon_end']:.3f}")
            bar.refresh()

    command = "python -m dcsim " + " ".join(sys.argv[1:])
    evaluation = {}
    if args.eval_seeds:  # an unknown baseline fails now, not after the training
        from dcsim.policy import load_policy

        for baseline in args.baselines:
            load_policy(baseline, {})

    def finish(work: Path, curve) -> None:  # inside the training's temporary folder, before it is renamed
        if args.eval_seeds:
            evaluation["md"] = _evaluate_training(args, scenario, name, work, references)

    try:
        curve = train(scenario, name, args.episodes, out, resume=args.resume, overwrite=args.overwrite,
                      learner=args.learner, learner_options=_key_values(args.learner_option, "--learner-option"),
                      init_from=Path(args.init_from) if args.init_from else None,
                      on_episode=on_episode, command=command, finish=finish)
    finally:
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
    if not args.quiet:
        last = curve.tail(max(1, len(curve) // 10))
        print(f"trained {name} for {len(curve)} episodes; return per GPU over the last {len(last)}: "
              f"{last['return_per_gpu'].mean():.3f} (first episode: {curve['return_per_gpu'].iloc[0]:.3f})")
        print(f"wrote {out}: learning_curve.csv/.png, checkpoint/, transitions.npz, train_state.json"
              + (", evaluation.md/.csv, evaluation_runs.csv" if args.eval_seeds else "")
              + (f"; TensorBoard logs in {tb.folder}" if tb is not None else ""))
        if "md" in evaluation:
            print(evaluation["md"])
    return 0


def _cmd_train_serving(args: argparse.Namespace, scenario, references: dict) -> int:
    """``train`` on a serving scenario: the serving learner (policies/serving_learner.py), evaluated against the
    serving rule baselines (dcsim/serving/training.py)."""
    from dcsim.outputs import choose_run_dir
    from dcsim.serving.training import BASELINES, LEARNER_NAMES, evaluate_serving, learner_name, train_serving, \
        write_serving_evaluation

    if args.policy not in LEARNER_NAMES:
        raise DcsimError(f"--policy {args.policy}: a serving scenario (workload.llm_serving) trains a serving "
                         f"learner only; allowed: {' or '.join(LEARNER_NAMES)} (qlearning and dqn do not choose "
                         "serving configurations; serving_q and serving_dqn are their serving counterparts; "
                         "docs/serving.md)")
    name = learner_name(args.policy)
    for flag, given in (("--resume", args.resume), ("--reference", references), ("--learner", args.learner),
                        ("--learner-option", args.learner_option)):
        if given:
            raise DcsimError(f"{flag}: not supported when training the serving learner (docs/serving.md, "
                             "'Learning policy'); allowed: --episodes, --eval-seeds, --eval-offset, --baselines, "
                             "--init-from, --out, --overwrite, --set policy.params.K=V")
    params = dict(scenario.policy.params)
    if args.init_from:
        params["checkpoint"] = str(Path(args.init_from).resolve())
    baselines = list(BASELINES) if list(args.baselines) == list(JOB_BASELINES) else list(args.baselines)
    out = Path(args.out) if args.out else choose_run_dir(Path("runs"), f"train-{scenario.name}-{name}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.episodes, unit="episode", file=sys.stderr)

    def on_episode(row: dict) -> None:
        if bar is not None:
            bar.n = row["episode"] + 1
            bar.set_postfix(profit=f"{row['profit_usd']:.2f}", eps=f"{row['epsilon']:.3f}")
            bar.refresh()

    try:
        curve = train_serving(scenario, args.episodes, out, params=params, on_episode=on_episode,
                              overwrite=args.overwrite, command="python -m dcsim " + " ".join(sys.argv[1:]),
                              learner=name)
    finally:
        if bar is not None:
            bar.close()
    md = None
    if args.eval_seeds:
        seeds = list(range(scenario.seed + args.eval_offset, scenario.seed + args.eval_offset + args.eval_seeds))
        runs = evaluate_serving(scenario, (out / "checkpoint").resolve(), seeds, baselines, learner=name)
        md = write_serving_evaluation(out, runs, seeds, name)
    if not args.quiet:
        last = curve.tail(max(1, len(curve) // 10))
        print(f"trained {name} for {len(curve)} episodes; profit over the last {len(last)}: "
              f"{last['profit_usd'].mean():,.2f} USD (first episode: {curve['profit_usd'].iloc[0]:,.2f} USD)")
        print(f"wrote {out}: learning_curve.csv/.png, checkpoint/, train_state.json"
              + (", evaluation.md/.csv, evaluation_runs.csv" if md is not None else ""))
        if md is not None:
            print(md)
    return 0


def _cmd_train_algo(args: argparse.Namespace) -> int:
    """``train --algo sb3:PPO|sb3:A2C|sb3:DQN``: a Stable-Baselines3 learner through the Gymnasium env."""
    from dcsim.envs.sb3 import algo_class, evaluate_model, train_sb3
    from dcsim.outputs import choose_run_dir
    from dcsim.train import evaluate, evaluation_table

    if args.policy is not None or args.algo is None:
        raise DcsimError("train: give --policy qlearning|dqn (dcsim's own learners) or --algo sb3:PPO|sb3:A2C|sb3:DQN "
                         f"(Stable-Baselines3) or --algo mappo, not {'both' if args.policy else 'neither'}")
    for flag, value in (("--init-from", args.init_from), ("--learner", args.learner),
                        ("--learner-option", args.learner_option)):
        if value:
            raise DcsimError(f"{flag} applies to --policy qlearning|dqn, not to --algo {args.algo}")
    if args.eval_seeds < 0:
        raise DcsimError(f"--eval-seeds {args.eval_seeds}: allowed: an integer >= 0 (0: no evaluation)")
    if args.algo == "mappo":  # the multi-agent learner (policies/mappo.py) through the PettingZoo env
        return _cmd_train_mappo(args)
    algo_class(args.algo)  # an unknown --algo or a missing extra fails before anything runs
    references = _reference_arms(args.reference)  # a bad rule fails here, before any training
    if references and not args.eval_seeds:
        raise DcsimError("--reference adds arms to the evaluation: give --eval-seeds N too")
    path = Path(args.scenario)
    overrides = list(args.set or []) + ([f"seed={args.seed}"] if args.seed is not None else []) + (
        [f"horizon_s={args.horizon}"] if args.horizon is not None else [])
    scenario = _load(path, overrides, _typed_options(args))
    if args.eval_seeds:  # an unknown baseline fails now, not after the training
        from dcsim.policy import load_policy

        for baseline in args.baselines:
            load_policy(baseline, {})
    label = args.algo.replace(":", "-")
    if args.resume and not args.out:
        raise DcsimError("--resume needs --out: the folder of the training to continue")
    if args.resume and args.overwrite:
        raise DcsimError("--resume continues the training in --out and --overwrite starts it over: give one")
    out = Path(args.out) if args.out else choose_run_dir(Path("runs"), f"train-{scenario.name}-{label}")
    evaluation = {}

    def finish(work: Path, model) -> None:
        import pandas as pd

        if not args.eval_seeds:
            return
        seeds = list(range(scenario.seed + args.eval_offset, scenario.seed + args.eval_offset + args.eval_seeds))
        runs = pd.concat([evaluate_model(model, scenario, seeds, args.algo, args.algo),
                          evaluate(scenario, {b: (b, {}) for b in args.baselines} | references, seeds,
                                   backend=args.backend, jobs=args.jobs, address=args.address)], ignore_index=True)
        table, md = evaluation_table(runs, [args.algo], list(references))
        runs.to_csv(work / "evaluation_runs.csv", index=False)
        table.to_csv(work / "evaluation.csv", index=False)
        (work / "evaluation.md").write_text(f"Evaluation on seeds {seeds[0]}..{seeds[-1]} (greedy):\n\n" + md + "\n",
                                            encoding="utf-8")
        evaluation["md"] = md

    curve = train_sb3(scenario, args.algo, args.timesteps, out, overwrite=args.overwrite,
                      algo_options=_key_values(args.algo_option, "--algo-option"),
                      tensorboard=Path(args.tensorboard) if args.tensorboard else None, finish=finish,
                      command="python -m dcsim " + " ".join(sys.argv[1:]), resume=args.resume)
    if not args.quiet:
        print(f"trained {args.algo} for {args.timesteps} steps ({len(curve)} episodes finished); wrote {out}: "
              "model.zip, learning_curve.csv, train_metadata.yaml"
              + (", evaluation.md/.csv, evaluation_runs.csv" if args.eval_seeds else ""))
        if "md" in evaluation:
            print(evaluation["md"])
    return 0


def _cmd_train_mappo(args: argparse.Namespace) -> int:
    """``train --algo mappo``: MAPPO (policies/mappo.py) through the PettingZoo env, evaluated as ``--policy`` is."""
    from dcsim.outputs import choose_run_dir
    from policies.mappo import ALGO, POLICY_TARGET, check_training, train_mappo

    if args.resume:
        raise DcsimError("--resume: not available for --algo mappo (it writes its checkpoint after the last episode "
                         "only); start a new training, or resume an --algo sb3:... or --policy training")
    options = _key_values(args.algo_option, "--algo-option")
    tensorboard = Path(args.tensorboard) if args.tensorboard else None
    check_training(args.episodes, options, tensorboard)  # a bad option or a missing library fails first
    references = _reference_arms(args.reference)  # a bad rule fails here, before any training
    if references and not args.eval_seeds:
        raise DcsimError("--reference adds arms to the evaluation: give --eval-seeds N too")
    overrides = list(args.set or []) + ([f"seed={args.seed}"] if args.seed is not None else []) + (
        [f"horizon_s={args.horizon}"] if args.horizon is not None else [])
    scenario = _load(Path(args.scenario), overrides, _typed_options(args))
    if args.eval_seeds:  # an unknown baseline fails now, not after the training
        from dcsim.policy import load_policy

        for baseline in args.baselines:
            load_policy(baseline, {})
    out = Path(args.out) if args.out else choose_run_dir(Path("runs"), f"train-{scenario.name}-{ALGO}")
    evaluation = {}

    def finish(work: Path, checkpoint: Path) -> None:  # the trained actor as a dcsim policy, on held-out seeds
        if args.eval_seeds:
            arm = (POLICY_TARGET, {"checkpoint": str(checkpoint.resolve())})
            evaluation["md"] = _evaluate_training(args, scenario, ALGO, work, references, arm=arm)

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.episodes, unit="episode", file=sys.stderr)

    def on_episode(row: dict) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ret=f"{row['return_per_gpu']:.3f}")

    try:
        curve = train_mappo(scenario, args.episodes, out, overwrite=args.overwrite, algo_options=options,
                            tensorboard=tensorboard, finish=finish,
                            on_episode=on_episode, command="python -m dcsim " + " ".join(sys.argv[1:]))
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(f"trained {ALGO} for {len(curve)} episodes; wrote {out}: checkpoint/, learning_curve.csv, "
              "train_metadata.yaml" + (", evaluation.md/.csv, evaluation_runs.csv" if args.eval_seeds else ""))
        if "md" in evaluation:
            print(evaluation["md"])
    return 0


def _evaluate_training(args: argparse.Namespace, scenario, name: str, work: Path,
                       references: dict[str, tuple[str, dict]], arm: tuple[str, dict] | None = None) -> str:
    """Evaluate the frozen trained policy (``arm``: its policy and params, by default ``name`` loading
    ``work/checkpoint``), the baselines and the reference rules on held-out seeds; write evaluation*.csv/.md."""
    from dcsim.train import evaluate, evaluation_table

    if arm is None:
        params = dict(scenario.policy.params) if scenario.policy.name == name else {}
        params.update({"checkpoint": str((work / "checkpoint").resolve()), "learn": False})
        arm = (name, params)
    arms = {name: arm} | {b: (b, {}) for b in args.baselines} | references
    seeds = list(range(scenario.seed + args.eval_offset, scenario.seed + args.eval_offset + args.eval_seeds))
    ebar = None
    if not args.quiet:
        from tqdm import tqdm

        ebar = tqdm(total=len(arms) * len(seeds), unit="run", desc="evaluating", file=sys.stderr)
    try:
        runs = evaluate(scenario, arms, seeds, on_run=ebar.update if ebar is not None else None,
                        backend=args.backend, jobs=args.jobs, address=args.address)
    finally:
        if ebar is not None:
            ebar.close()
    table, md = evaluation_table(runs, [name], list(references))
    runs.to_csv(work / "evaluation_runs.csv", index=False)
    table.to_csv(work / "evaluation.csv", index=False)
    (work / "evaluation.md").write_text(f"Evaluation on seeds {seeds[0]}..{seeds[-1]} (greedy, frozen):\n\n"
                                        + md + "\n", encoding="utf-8")
    return md


def _reference_arms(specs: list[str] | None) -> dict[str, tuple[str, dict]]:
    """``--reference NAME[:key=value,...]`` → evaluation arms of :class:`policies.reference.ReferenceRule`."""
    if not specs:
        return {}
    from policies.reference import parse_reference

    arms = {}
    for spec in specs:
        label, params = parse_reference(spec)
        arms[label] = ("policies.reference:ReferenceRule", params)
    return arms


def cmd_validate(args: argparse.Namespace) -> int:

    from dcsim.policy import load_policy

    for name in args.scenarios:
        sc = _load(Path(name), list(args.set or []))
        load_policy(sc.policy.name, sc.policy.params)  # an unknown policy or bad parameters fail here too
        report = _validate_data(Path(name), sc) if args.data else None
        print(f"{name}: ok ({sc.cluster.gpus} {sc.cluster.gpu_model} GPUs, horizon {sc.horizon_s:g} s, "
              f"policy {sc.policy.name}, mechanism {sc.market.mechanism})")
        for field, record in (report or {}).items():
            print(f"  {field}: {_quality_line(record)}")
    return 0


def _validate_data(path: Path, scenario) -> dict:
    """Read every data file a scenario names, as a run would (``validate --data``); their data-quality report."""
    from dcsim.dataquality import run_report
    from dcsim.seeding import Streams
    from dcsim.supply import build_supply
    from dcsim.workload import build_jobs

    try:
        if scenario.workload.llm_serving is not None:  # a serving run reads its own inputs (docs/serving.md)
            from dcsim.serving.runner import read_carbon, read_serving_data

            quality = read_serving_data(scenario, Streams(scenario.seed))[3]
            read_carbon(scenario, quality)  # the market's carbon adder reads the grid carbon file, when it has one
            return quality
        jobs = build_jobs(scenario, Streams(scenario.seed))
        supply = build_supply(scenario)
    except ScenarioError as exc:
        if exc.path is None:  # raised while reading the data: name the scenario file
            raise ScenarioError(path, exc.problems) from None
        raise
    return run_report(jobs.attrs, supply.data_quality)


def _quality_line(record: dict) -> str:
    """One line of a data file's quality record: source, rows, what was dropped or filled, warnings."""
    parts = [f"{record.get('source')} ({record.get('format')})", f"{record.get('rows_read', '?')} rows read"]
    for key in ("jobs", "dropped_nan_rows", "filled_steps", "clipped_values", "unsorted_rows", "filled_albedo_hours"):
        if record.get(key):
            parts.append(f"{key.replace('_', ' ')} {record[key]}")
    parts += [f"{k.replace('_', ' ')} {v}" for k, v in record.items() if k.startswith("dropped_") and
              k != "dropped_nan_rows" and v]
    if record.get("gaps"):
        parts.append(f"{record['gaps']} gap(s), longest {record['longest_gap_h']:g} h ({record.get('gap_fill')})")
    if "yield_ratio" in record:
        parts.append(f"PV yield {record['annual_yield_kwh_per_kw']:g} kWh/kW = {record['yield_ratio']:.0%} of clear "
                     f"sky, {record['clear_sky_day_fraction']:.0%} clear-sky days")
    if record.get("warnings"):
        parts.append(f"{len(record['warnings'])} warning(s)")
    return ", ".join(parts)


def cmd_schema(args: argparse.Namespace) -> int:
    from dcsim.config import json_schema

    text = json.dumps(json_schema(), indent=2)
    if args.output:
        _write_output_file(Path(args.output), text + "\n", "-o")
    else:
        print(text)
    return 0


def _write_output_file(path: Path, text: str, flag: str) -> None:
    """Write one output file atomically; a missing folder, a folder at ``path`` or an unwritable place is a
    clear error, and an existing file is kept unless the write succeeds."""
    from dcsim.atomic import write_text_atomic

    folder = path.parent
    if path.is_dir():
        raise DcsimError(f"{flag} {path}: is a folder; give a file name, e.g. {flag} {path / 'dcsim.schema.json'}")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DcsimError(f"{flag} {path}: folder {folder} {what}; create the folder first or give another path")
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise DcsimError(f"{flag} {path}: cannot write there ({exc.strerror or exc}); give a file in a folder "
                         "you can write to") from None


def cmd_list(args: argparse.Namespace) -> int:
    from dcsim.gpu_models import GPU_MODELS
    from dcsim.mechanisms import MECHANISMS
    from dcsim.policy import registered_policies

    print("policies (use in policy.name or --policy; or 'package.module:Class'):")
    for name, target in registered_policies().items():
        print(f"  {name:22s} {target}")
    print("mechanisms (market.mechanism):")
    for name, cls in MECHANISMS.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"  {name:22s} {doc[0] if doc else ''}")
    print("GPU models (cluster.gpu_model):")
    for name, spec in GPU_MODELS.items():
        print(f"  {name:6s} TDP {spec.tdp_w:g} W, idle {spec.idle_w:g} W, min cap {spec.min_cap_w:g} W")
    print("scenarios:")
    print(f"  (built-in) {QUICKSTART}  — run with `python -m dcsim run`")
    folder = Path(args.scenarios_dir)
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        print(f"  {path}")
    return 0


def _seeds(args: argparse.Namespace, scenario_seed: int) -> list[int]:
    if args.seed_list:
        return list(args.seed_list)
    if args.seeds < 1:
        raise DcsimError(f"--seeds {args.seeds}: expected at least 1")
    return list(range(scenario_seed, scenario_seed + args.seeds))


def cmd_compare(args: argparse.Namespace) -> int:
    from dcsim.compare import compare
    from dcsim.atomic import atomic_output_dir
    from dcsim.outputs import choose_run_dir

    path = Path(args.scenario) if args.scenario else _builtin(QUICKSTART)
    overrides = list(args.set or [])
    if args.horizon is not None:
        overrides.append(f"horizon_s={args.horizon}")
    scenario = _load(path, overrides, _typed_options(args))  # fail on a bad file or option before anything else
    variants = None
    if args.variant and args.timing:
        raise DcsimError("give --timing or --variant, not both (a --variant can set decision_timing itself)")
    if args.variant:
        variants = {}
        for label, *settings in args.variant:
            if label in variants:
                raise DcsimError(f"--variant {label}: named twice")
            variants[label] = settings
    seeds = _seeds(args, scenario.seed)
    out = Path(args.out) if args.out else choose_run_dir(Path("runs"), f"compare-{scenario.name}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=1, unit="run", delay=2.0, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    with atomic_output_dir(out, overwrite=args.overwrite) as work:  # checked and probed before any run
        try:
            comparison = compare(path, args.policies, seeds, baseline=args.baseline, jobs=args.jobs,
                                 timings=args.timing, variants=variants, overrides=overrides,
                                 progress=progress if bar is not None else None,
                                 backend=args.backend, address=args.address)
        finally:
            if bar is not None:
                bar.close()
        written = comparison.write(work, table_format=args.format)
    if not args.quiet:
        print(comparison.to_markdown())
        print(f"wrote {len(written)} files to {out} (open {out / 'report.html'} in a browser)")
    return 0


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--address``: where the runs of a comparison, sweep or evaluation execute."""
    parser.add_argument("--backend", choices=["ray", "local"],
                        help="ray: Ray tasks (an embedded local Ray, or the cluster at --address); local: a process "
                             "pool on this machine. Default: ray when Ray is installed (pip install 'dcsim[ray]') "
                             "and more than one worker is used, else local; the DCSIM_BACKEND environment variable "
                             "sets another default. Results are identical on both")
    parser.add_argument("--address", metavar="ADDRESS",
                        help="join an existing Ray cluster (e.g. auto, or ray://head:10001) instead of starting one")


def _add_sweep_parser(sub) -> None:
    swp = sub.add_parser(
        "sweep", help="run a grid of scenario settings × policies × seeds (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every combination of the --grid values, every policy and every seed. Each finished run\n"
                    "(a cell) is saved at once in OUT/cells/; running the same command again skips saved cells,\n"
                    "so an interrupted sweep resumes. Then each metric's mean and 95% CI over seeds is tabulated\n"
                    "per grid point and policy.",
        epilog="writes into --out: sweep.csv (grid values, policy, metric, n, mean, std, ci_low, ci_high),\n"
               "cells.csv (one row per run), cells/<id>.json (each run's summary), sweep.md, sweep.yaml\n\n"
               "example:\n  python -m dcsim sweep --grid market.scarcity_kappa=0.5,1,2 "
               "--grid supply.battery.capacity_wh=10000,40000 --policies always_on renewable_follower --seeds 5 "
               "--horizon 6h --out runs/sweep-kappa")
    swp.add_argument("scenario", nargs="?", help="scenario YAML file (default: the built-in quickstart)")
    swp.add_argument("--grid", action="append", metavar="KEY=V1,V2,...", default=[],
                     help="a scenario field and the values it takes, e.g. --grid market.scarcity_kappa=0.5,1,2 "
                          "(repeatable; values are YAML, as in --set)")
    swp.add_argument("--policies", nargs="+", required=True, metavar="POLICY", help="policy names, each once")
    seeds = swp.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=10, metavar="N",
                       help="run N seeds: the scenario's seed and the N-1 after it (default: 10)")
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="SEED", help="run exactly these seeds")
    swp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field for every cell")
    swp.add_argument("--horizon", help="simulated time, e.g. 3600, 6h, 2d (overrides horizon_s)")
    swp.add_argument("--out", help="sweep folder (default: runs/sweep-<scenario>); a folder holding an earlier "
                                   "run of this sweep is resumed")
    swp.add_argument("--jobs", "-j", type=int, help="workers (default: the number of CPU cores; 1: no workers)")
    swp.add_argument("--format", choices=["csv", "parquet"], default="csv", help="table format (default: csv)")
    swp.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no table")
    _add_backend_options(swp)
    swp.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from dcsim.sweep import CELLS_DIR, SWEEP_FILE, parse_grid, sweep

    path = Path(args.scenario) if args.scenario else _builtin(QUICKSTART)
    overrides = list(args.set or [])
    if args.horizon is not None:
        overrides.append(f"horizon_s={args.horizon}")
    scenario = _load(path, overrides, _typed_options(args))
    grid = parse_grid(args.grid)
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{scenario.name}"
    if out.is_dir() and any(out.iterdir()) and not (out / SWEEP_FILE).is_file():
        raise DcsimError(f"--out {out}: directory exists, is not empty and holds no {SWEEP_FILE}; choose another")
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # made at the first report, once every setting has been checked
            from tqdm import tqdm

            bar = tqdm(total=total, initial=done, unit="cell", desc="sweep", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        result = sweep(path, grid, args.policies, _seeds(args, scenario.seed), out, overrides=overrides,
                       backend=args.backend, jobs=args.jobs, address=args.address, table_format=args.format,
                       progress=None if args.quiet else progress)
    except KeyboardInterrupt as exc:
        from dcsim.atomic import exit_status, interrupted_message

        saved = len(list((out / CELLS_DIR).glob("*.json"))) if (out / CELLS_DIR).is_dir() else 0
        exc.partial_output = out
        print(f"{interrupted_message(exc, 'an unfinished sweep')}; {saved} finished cells are saved in "
              f"{out / CELLS_DIR}: run the same command again to run only the rest", file=sys.stderr)
        return exit_status(exc)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(result.to_markdown())
        print(f"ran {len(result.ran)} cells, {len(result.skipped)} already saved; wrote {out}")
    return 0


def _add_export_parser(sub) -> None:
    exp = sub.add_parser(
        "export", help="export a trained DQN (or Stable-Baselines3) policy to ONNX",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export the network of a trained policy to an ONNX file (fixed observation width, dynamic\n"
                    "batch axis; the action enums, feature names and bid settings are in its metadata_props).\n"
                    "Needs torch and the onnx extra (pip install -e '.[onnx]'). Run a DQN export with\n"
                    "`python -m dcsim run SCENARIO --policy onnx --checkpoint FILE` (docs/rl.md).",
        epilog="examples:\n  python -m dcsim export runs/train-learn_solar-dqn --onnx dqn.onnx\n"
               "  python -m dcsim run scenarios/learn_solar.yaml --policy onnx --checkpoint dqn.onnx\n"
               "  python -m dcsim export runs/train-learn_solar-sb3-PPO --onnx ppo.onnx")
    exp.add_argument("checkpoint", metavar="CHECKPOINT",
                     help="a `train --policy dqn` folder, its checkpoint/ folder or dqn.pt; or a `train --algo "
                          "sb3:...` folder (model.zip with train_metadata.yaml)")
    exp.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write (replaced when complete)")
    exp.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    exp.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``export CHECKPOINT --onnx FILE``: a trained policy's network as an ONNX file."""
    from policies.onnx_export import export_onnx

    meta = export_onnx(Path(args.checkpoint), Path(args.onnx))
    if not args.quiet:
        what = meta.get("algo", "dqn")
        actions = "; ".join(f"{enum} {', '.join(names)}" for enum, names in json.loads(meta["actions"]).items())
        print(f"exported {what} from {meta['source']} to {args.onnx}: input obs {json.loads(meta['inputs'])['obs']} "
              f"float32, actions {actions}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dcsim.report import write_comparison_report, write_report

    folder = Path(args.directory)
    if not folder.is_dir():
        raise DcsimError(f"{folder}: not a directory; give a run directory (from `run`) or a comparison (from `compare`)")
    is_comparison = (folder / "comparison.yaml").is_file() and not (folder / "summary.json").is_file()
    path = write_comparison_report(folder) if is_comparison else write_report(folder)
    print(f"wrote {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors read like dcsim's other errors: ``error: ...`` and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Write ``--opt -1h`` as ``--opt=-1h`` for options that take one value, so a value starting with '-' reaches
    the option (and its own clear error) instead of argparse's "expected one argument"."""
    takes_one: set[str] = set()
    known: set[str] = set()
    todo = [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:
            known.update(action.option_strings)
            if action.option_strings and action.nargs is None:
                takes_one.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg in takes_one and nxt is not None and nxt.startswith("-") and nxt.split("=")[0] not in known:
            out.append(f"{arg}={nxt}")
            i += 2
        else:
            out.append(arg)
            i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m dcsim",
        description="dcsim: a discrete-event simulator of a GPU datacenter whose GPUs buy power with tokens.",
    )
    parser.add_argument("--version", action="version", version=f"dcsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario and write a run directory",
                         description="Run a scenario (the built-in quickstart if none is given), print a summary "
                                     "table and write metadata.yaml, summary.json, CSV tables and optional plots.")
    run.add_argument("scenario", nargs="?", help="scenario YAML file (default: the built-in quickstart)")
    run.add_argument("--seed", type=int, help="root seed (overrides the scenario's)")
    run.add_argument("--policy", help="policy name or package.module:Class (overrides the scenario's)")
    run.add_argument("--horizon", help="simulated time, e.g. 3600, 6h, 2d (overrides horizon_s)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a scenario field, e.g. --set cluster.gpus=128 (repeatable)")
    run.add_argument("--out", help="run directory (default: runs/<scenario>-<policy>-seed<seed>, never overwritten)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a non-empty --out directory whole (when the new run is complete)")
    run.add_argument("--plots", action="store_true", help="also write PNG plots into <out>/plots")
    run.add_argument("--trace-events", action="store_true",
                     help="write events.csv: every event (time, kind, agent, details), to replay a run step by step")
    run.add_argument("--checkpoint", metavar="PATH",
                     help="evaluate a trained learning policy (with --policy qlearning|dqn): its checkpoint folder "
                          "or file from `train`; the policy acts greedily and does not learn, with the action "
                          "layout the checkpoint records (policy.params.actions; --set overrides it)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary table")
    run.set_defaults(func=cmd_run)

    trn = sub.add_parser(
        "train", help="train a learning policy (qlearning or dqn) over episodes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a learning policy: episode k runs the scenario with seed + k; the policy keeps learning\n"
                    "across episodes. Writes learning_curve.csv/.png, checkpoint/ (after every episode),\n"
                    "transitions.npz and train_state.json into --out; --resume continues an interrupted training.\n"
                    "The reward is the scenario's `reward:` section (docs/learning.md).",
        epilog="examples:\n  python -m dcsim train scenarios/learn_solar.yaml --policy qlearning --episodes 200\n"
               "  python -m dcsim train scenarios/learn_solar.yaml --policy dqn --episodes 30 "
               "--init-from runs/train-learn_solar-qlearning\n"
               "  .venv-cerebras/bin/python -m dcsim train SCENARIO --policy dqn --learner cerebras-cpu --episodes 2\n"
               "  python -m dcsim run SCENARIO --policy dqn --checkpoint runs/train-learn_solar-dqn/checkpoint\n"
               "  python -m dcsim train scenarios/learn_solar.yaml --algo sb3:PPO --timesteps 50000 --eval-seeds 10")
    trn.add_argument("scenario", help="scenario YAML file")
    trn.add_argument("--policy", choices=["qlearning", "dqn", "serving_q", "serving_dqn"],
                     help="the learning policy (or --algo); serving_q or serving_dqn on a serving scenario "
                          "(docs/serving.md)")
    trn.add_argument("--algo", metavar="sb3:ALGO",
                     help="a Stable-Baselines3 learner through the Gymnasium env instead of --policy: sb3:PPO, sb3:A2C "
                          "or sb3:DQN; or mappo, multi-agent PPO through the PettingZoo env, for --episodes "
                          "(needs dcsim[rl]; docs/rl.md)")
    trn.add_argument("--timesteps", type=int, default=20_000, metavar="N",
                     help="--algo sb3:...: env steps (decisions) to train for (default: 20000; mappo counts --episodes)")
    trn.add_argument("--algo-option", action="append", metavar="KEY=VALUE",
                     help="--algo: a keyword of the SB3 class, e.g. --algo-option n_steps=256, or a MappoConfig "
                          "field for mappo, e.g. --algo-option update_epochs=8 (repeatable)")
    trn.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard logs into DIR/<policy>_<n>, or DIR/<out>-<Algo>_<n> for --algo sb3:* (needs dcsim[rl])")
    trn.add_argument("--episodes", type=int, default=50, metavar="N", help="episodes in total (default: 50)")
    trn.add_argument("--learner", choices=["torch", "cerebras-cpu", "csx"],
                     help="DQN learner: torch (CPU, or CUDA when present; default), cerebras-cpu (cerebras.pytorch "
                          "CPU backend, inside .venv-cerebras) or csx (a Cerebras Wafer-Scale Cluster)")
    trn.add_argument("--learner-option", action="append", metavar="KEY=VALUE",
                     help="a setting of the DQN learner, e.g. Cerebras cluster settings for --learner csx: "
                          "--learner-option mgmt_address=host:9000 --learner-option num_csx=1 (repeatable; "
                          "docs/cerebras.md lists them; also settable as policy.params.learner_options)")
    trn.add_argument("--init-from", metavar="RUN_DIR",
                     help="DQN: pre-train on transitions.npz from a Q-learning training folder")
    trn.add_argument("--seed", type=int, help="root seed (episode k uses seed + k)")
    trn.add_argument("--horizon", help="simulated time per episode, e.g. 6h (overrides horizon_s)")
    trn.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a scenario field, e.g. --set reward.latency_per_s=0.001 (repeatable)")
    trn.add_argument("--out", help="output folder (default: runs/train-<scenario>-<policy>, never overwritten)")
    trn.add_argument("--resume", action="store_true",
                     help="continue the training in --out (or its interrupted <out>.partial) up to --episodes; "
                          "with --algo: from --out's model.zip up to --timesteps in total")
    trn.add_argument("--overwrite", action="store_true",
                     help="start over: replace a non-empty --out folder (and an interrupted <out>.partial) whole")
    trn.add_argument("--eval-seeds", type=int, default=0, metavar="N",
                     help="after training, evaluate the frozen policy and the baselines on N held-out seeds")
    trn.add_argument("--eval-offset", type=int, default=10_000, metavar="K",
                     help="evaluation seeds start at seed + K (default 10000, away from training seeds)")
    trn.add_argument("--baselines", nargs="+", metavar="POLICY",
                     default=list(JOB_BASELINES),
                     help="rule-based policies to evaluate against (default: all six; on a serving scenario the "
                          "four serving rules)")
    trn.add_argument("--reference", action="append", metavar="NAME[:KEY=VALUE,...]",
                     help="also evaluate a fixed rule over the learners' own actions (policies/reference.py), e.g. "
                          "full_cheap_else_min, floor_limit, pace, or rule:cheap=FULL,dear=MIN_CAP,price_multiple=2; "
                          "the table then gives the learner's distance to the best such rule (repeatable)")
    trn.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    trn.add_argument("--jobs", "-j", type=int, help="workers for --eval-seeds (default: the number of CPU cores)")
    _add_backend_options(trn)
    trn.set_defaults(func=cmd_train)

    val = sub.add_parser("validate", help="check scenario files without running them")
    val.add_argument("scenarios", nargs="+", help="scenario YAML files")
    val.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field before validating")
    val.add_argument("--data", action="store_true",
                     help="also read every trace, weather and series file as a run would, and report its data "
                          "quality (rows dropped/filled, gaps, warnings)")
    val.set_defaults(func=cmd_validate)

    sch = sub.add_parser("schema", help="print the JSON Schema of scenario files (for editor completion)")
    sch.add_argument("--output", "-o", help="write to this file instead of standard output")
    sch.set_defaults(func=cmd_schema)

    lst = sub.add_parser("list", help="list policies, mechanisms, GPU models and scenarios")
    lst.add_argument("--scenarios-dir", default="scenarios", help="folder of scenario files to list (default: scenarios)")
    lst.set_defaults(func=cmd_list)

    cmp = sub.add_parser(
        "compare", help="compare policies over seeds with common random numbers",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every policy on every seed (the same seed gives every policy the same jobs and supply:\n"
                    "common random numbers), then report each metric as mean ± 95% CI per policy and as paired\n"
                    "differences against a baseline, with 95% CIs and paired t-test p-values. Runs in parallel\n"
                    "on Ray (when installed; --address joins a cluster) or a local process pool (--backend local).",
        epilog="writes into --out: runs.csv (policy, seed, metric, value), summary.csv, differences.csv,\n"
               "workloads.csv (job-table hashes), comparison.md, comparison.yaml, comparison.png, report.html\n\n"
               "example:\n  python -m dcsim compare scenarios/solar_day.yaml --policies always_on race_to_idle "
               "renewable_follower --seeds 20 --horizon 6h\n"
               "  python -m dcsim compare --policies always_on --variant r60 market.interval_s=60 "
               "--variant r900 market.interval_s=900 --baseline r900\n"
               "  python -m dcsim compare --policies renewable_follower deadline_slack --timing event fixed:900 "
               "--baseline event")
    cmp.add_argument("scenario", nargs="?", help="scenario YAML file (default: the built-in quickstart)")
    cmp.add_argument("--policies", nargs="+", required=True, metavar="POLICY",
                     help="policy names or package.module:Class, each once (`python -m dcsim list` shows the names)")
    seeds = cmp.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=10, metavar="N",
                       help="run N seeds: the scenario's seed and the N-1 after it (default: 10)")
    seeds.add_argument("--seed-list", type=int, nargs="+", metavar="SEED", help="run exactly these seeds")
    cmp.add_argument("--baseline", help="policy (or variant, or policy@variant) the others are compared against "
                                        "(default: the first policy)")
    cmp.add_argument("--jobs", "-j", type=int, help="worker processes (default: the number of CPU cores; 1: no workers)")
    cmp.add_argument("--variant", nargs="+", action="append", metavar=("LABEL", "KEY=VALUE"),
                     help="also compare scenario variants: a label and its overrides, e.g. --variant fast "
                          "market.interval_s=60 (repeatable; every policy runs under every variant)")
    cmp.add_argument("--timing", nargs="+", metavar="TIMING",
                     help="also compare decision timings: 'event' (decide at event boundaries) and/or 'fixed:SECONDS' "
                          "(decide only on a fixed tick), e.g. --timing event fixed:900 --baseline event")
    cmp.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a scenario field for every run, e.g. --set cluster.gpus=128 (repeatable)")
    cmp.add_argument("--horizon", help="simulated time, e.g. 3600, 6h, 2d (overrides horizon_s)")
    cmp.add_argument("--out", help="output directory (default: runs/compare-<scenario>, never overwritten)")
    cmp.add_argument("--overwrite", action="store_true",
                     help="replace a non-empty --out directory whole (when the comparison is complete)")
    cmp.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no tables")
    _add_backend_options(cmp)
    cmp.add_argument("--format", choices=["csv", "parquet"], default="csv",
                     help="format of the runs/summary/differences/workloads tables (default: csv)")
    cmp.set_defaults(func=cmd_compare)

    _add_sweep_parser(sub)
    _add_export_parser(sub)

    rep = sub.add_parser(
        "report", help="write a self-contained HTML report of a run or a comparison",
        description="Write report.html into a run directory (from `run`) or a comparison directory (from "
                    "`compare`): plots embedded as images, no scripts, no network; open it in any browser.")
    rep.add_argument("directory", metavar="RUN_DIR", help="a run directory or a comparison directory")
    rep.set_defaults(func=cmd_report)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Data-quality warnings as ``warning: ...`` lines on stderr; others as Python prints them."""
    from dcsim.dataquality import DataQualityWarning

    if issubclass(category, DataQualityWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_dash_values(parser, list(sys.argv[1:] if argv is None else argv)))
    if args.command is None:
        parser.print_help()
        return 2
    from dcsim.atomic import exit_status, interrupted_message, terminate_as_interrupt

    try:
        with warnings.catch_warnings(), terminate_as_interrupt():  # SIGTERM takes Ctrl-C's path
            warnings.showwarning = _show_warning
            return args.func(args)
    except DcsimError as exc:
        partial = getattr(exc, "partial_output", None)
        note = f"\n(partial output left in {partial}{getattr(exc, 'resume_hint', '')})" if partial else ""
        print(f"error: {exc}{note}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(interrupted_message(exc), file=sys.stderr)
        return exit_status(exc)
    except BrokenPipeError:
        # the reader went away (`python -m dcsim list | head`): stop quietly, as a command killed by SIGPIPE does;
        # point stdout at /dev/null so the interpreter's final flush does not raise again
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
