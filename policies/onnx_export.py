"""Exports trained policies to ONNX (``python -m dcsim export CHECKPOINT --onnx out.onnx``).

Two kinds of checkpoint export:

- **dcsim's DQN** (``train --policy dqn``): the online Q-network of ``dqn.pt``. The model takes ``obs``, a
  ``(batch, 15)`` float32 array of :data:`dcsim.learning.FEATURES` (the rows
  :func:`dcsim.learning.observation_features` builds; they are unit-scaled there, so the model applies no
  normalisation of its own), and returns ``q_values`` ``(batch, 8)`` float32 and ``action`` ``(batch,)`` int64,
  the greedy :class:`dcsim.learning.BidAction` (the first of tied maxima, as ``torch.argmax``). The ``onnx``
  policy (:mod:`policies.onnx_policy`) runs it inside dcsim.
- **Stable-Baselines3** (``train --algo sb3:...``: ``model.zip`` with ``train_metadata.yaml``): the policy
  network's greedy action, ``action`` = what ``model.predict(obs, deterministic=True)`` gives, for the
  Gymnasium env's flat observation (``(batch, obs_dim)`` float32): a ``MultiDiscrete`` row per observation for
  PPO/A2C (the ``per_agent`` layout), one ``Discrete`` index for DQN (the ``shared`` layout).
  :class:`policies.onnx_policy.OnnxEnvModel` runs it through :class:`dcsim.envs.DcsimEnv`.

The batch axis is dynamic, the observation width fixed. What a user of the file needs to act with it is in the
model's ``metadata_props`` (keys ``dcsim.*``: the kind, the feature or observation names, the action enums'
member names in index order, the action layout, the bid settings of the DQN's actions, the source checkpoint and
the dcsim version; :func:`policies.onnx_policy.read_metadata` reads them back). Every export is checked before it
is written: onnxruntime runs the file on random observations and must choose the same actions as torch.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dcsim import __version__
from dcsim.atomic import replacing
from dcsim.errors import DcsimError
from dcsim.learning import FEATURES, BidAction
from policies.onnx_policy import (BID_PARAMS, KIND_DQN, KIND_SB3, METADATA_PREFIX, read_metadata,
                                  require_extra, session)

#: Random observation rows on which an export must choose the torch model's actions.
VERIFY_ROWS = 2048
OPSET = 18


@dataclass(frozen=True)
class Source:
    """A checkpoint to export: its kind, the file holding the weights and the training folder (if known)."""

    kind: str  # KIND_DQN or KIND_SB3
    weights: Path  # dqn.pt or model.zip
    training: Path | None  # the folder holding train_metadata.yaml


_WHAT = ("give a DQN training folder (from `python -m dcsim train SCENARIO --policy dqn`), its checkpoint/ folder "
         "or its dqn.pt, or a Stable-Baselines3 training folder (from `train --algo sb3:...`, holding model.zip)")


def locate(path: Path) -> Source:
    """Find what ``path`` (a training folder, a checkpoint folder, ``dqn.pt`` or ``model.zip``) holds.

    Raises:
        DcsimError: Nothing exportable there; the message names the path, what was found and what is allowed.
    """
    from dcsim.envs.sb3 import MODEL_FILE
    from dcsim.train import STATE_FILE, _checkpoint_of, read_train_state

    where = f"CHECKPOINT {path}"
    if not path.exists():
        raise DcsimError(f"{where}: no such file or folder; {_WHAT}")
    if path.is_file():
        if path.name.endswith(".pt"):
            return Source(KIND_DQN, path, _training_of(path.parent))
        if path.name.endswith(".zip"):
            return Source(KIND_SB3, path, path.parent if (path.parent / "train_metadata.yaml").is_file() else None)
        raise DcsimError(f"{where}: a file that is neither a DQN's dqn.pt nor an SB3 model.zip; {_WHAT}")
    if (path / "dqn.pt").is_file() or (path / "dqn.json").is_file():
        return Source(KIND_DQN, path / "dqn.pt", _training_of(path))
    if (path / MODEL_FILE).is_file():
        return Source(KIND_SB3, path / MODEL_FILE, path if (path / "train_metadata.yaml").is_file() else None)
    if (path / STATE_FILE).is_file():
        state = read_train_state(path)
        if state["policy"] != "dqn":
            raise DcsimError(f"{where}: a training of policy {state['policy']!r}; ONNX export takes a network: "
                             f"{_WHAT} (a Q-learning table has no network to export)")
        return Source(KIND_DQN, _checkpoint_of(path, state) / "dqn.pt", path)
    if (path / "qlearning.npz").is_file() or (path / "qlearning.json").is_file():
        raise DcsimError(f"{where}: a Q-learning checkpoint (a table, no network); {_WHAT}")
    found = sorted(p.name for p in path.iterdir())[:8]
    raise DcsimError(f"{where}: a folder without dqn.pt, {MODEL_FILE} or {STATE_FILE} (it holds "
                     f"{', '.join(found) or 'nothing'}); {_WHAT}")


def _training_of(checkpoint: Path) -> Path | None:
    """The training folder above a DQN checkpoint folder (``checkpoint/`` or ``checkpoints/episode-NNNNN``)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "train_metadata.yaml").is_file():
            return folder
    return None


def export_onnx(checkpoint: Path, out: Path) -> dict[str, str]:
    """Export the policy in ``checkpoint`` (see :func:`locate`) to the ONNX file ``out``; returns its metadata.

    ``out`` is replaced only by a complete, verified file.

    Raises:
        DcsimError: A missing or wrong checkpoint, a missing extra, an unwritable ``out``, or an export whose
            actions differ from the torch model's.
    """
    out = Path(out)
    if out.is_dir():
        raise DcsimError(f"--onnx {out}: is a folder; give a file name, e.g. --onnx {out / 'policy.onnx'}")
    if not out.parent.is_dir():
        raise DcsimError(f"--onnx {out}: folder {out.parent} does not exist; create it first or give another path")
    source = locate(Path(checkpoint))
    require_extra("torch", "dcsim export", "pip install torch==2.13.0")
    require_extra("onnx", "dcsim export")
    require_extra("onnxscript", "dcsim export")
    require_extra("onnxruntime", "dcsim export")
    if source.kind == KIND_DQN:
        module, width, metadata, check = _dqn_module(source)
    else:
        module, width, metadata, check = _sb3_module(source)
    metadata |= {"kind": source.kind, "dcsim_version": __version__, "source": str(source.weights.resolve()),
                 "inputs": json.dumps({"obs": ["batch", width], "dtype": "float32"}),
                 "observation_normalisation": "none: the model takes the observation rows as dcsim builds them "
                                              "(unit-scaled features)"}
    proto = _to_onnx(module, width)
    import onnx

    onnx.helper.set_model_props(proto, {METADATA_PREFIX + k: str(v) for k, v in metadata.items()})
    onnx.checker.check_model(proto)
    try:
        with replacing(out) as tmp:
            onnx.save(proto, str(tmp))
            _verify(tmp, width, check)
    except OSError as exc:
        raise DcsimError(f"--onnx {out}: cannot write there ({exc.strerror or exc}); give a file in a folder you "
                         "can write to") from None
    return read_metadata(out)


# ------------------------------------------------------------------------------------------------ dcsim's DQN
def _dqn_module(source: Source):
    """The DQN's online network wrapped to return ``(q_values, action)``, its input width and its metadata."""
    import torch

    from policies.dqn_core import QNetwork
    from policies.learning import read_spec

    spec = read_spec(source.weights.with_suffix(".json"), "dqn")  # a foreign or old-action-set checkpoint fails here
    arch = spec.get("architecture") or {}
    if not source.weights.is_file():
        raise DcsimError(f"CHECKPOINT {source.weights}: checkpoint weights not found (the folder has dqn.json but "
                         "no dqn.pt); export a complete checkpoint folder")
    try:
        state = torch.load(source.weights, map_location="cpu", weights_only=True)
        net = QNetwork(len(FEATURES), len(BidAction), tuple(arch.get("hidden", ())))
        net.load_state_dict(state["online"])
    except Exception as exc:  # torch raises several kinds for a corrupt or foreign file
        raise DcsimError(f"CHECKPOINT {source.weights}: cannot load DQN weights ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); expected a dqn.pt written by "
                         "`python -m dcsim train SCENARIO --policy dqn`") from None
    net.eval()

    class Greedy(torch.nn.Module):
        """Q-values and the greedy action (the first of tied maxima, as the DQN policy's ``argmax``)."""

        def __init__(self, q: torch.nn.Module):
            super().__init__()
            self.q = q

        def forward(self, obs: torch.Tensor):
            q = self.q(obs)
            return q, torch.argmax(q, dim=1)

    module = Greedy(net).eval()
    params, origin = _bid_params(source.training)
    metadata = {"features": json.dumps(list(FEATURES)),
                "actions": json.dumps({"BidAction": list(BidAction.__members__)}),
                "action_layout": "one BidAction per observation row (one row per deciding GPU)",
                "outputs": json.dumps({"q_values": ["batch", len(BidAction)], "action": ["batch"]}),
                "architecture": json.dumps(arch, sort_keys=True), "bid_params": json.dumps(params, sort_keys=True),
                "bid_params_source": origin, "decisions": spec.get("decisions", 0), "updates": spec.get("updates", 0)}

    def torch_actions(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x))[1].numpy()

    return module, len(FEATURES), metadata, torch_actions


def _bid_params(training: Path | None) -> tuple[dict[str, float], str]:
    """The settings of the DQN's bid actions (``cheap_multiple``, ...) it was trained with, and where they came
    from: the training's ``train_metadata.yaml`` (the scenario's ``policy.params``), else the defaults."""
    from policies.learning import LearningPolicy

    defaults = {k: float(v.default) for k, v in inspect.signature(LearningPolicy.__init__).parameters.items()
                if k in BID_PARAMS}
    if training is None:
        return defaults, "defaults (no train_metadata.yaml next to the checkpoint)"
    path = training / "train_metadata.yaml"
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DcsimError(f"{path}: cannot be read ({exc.__class__.__name__}); the training folder is damaged") from None
    policy = (meta.get("scenario") or {}).get("policy") or {} if isinstance(meta, dict) else {}
    given = dict(policy.get("params") or {}) if policy.get("name") == "dqn" else {}
    given.update((meta.get("params") or {}) if isinstance(meta, dict) else {})
    params = defaults | {k: given[k] for k in BID_PARAMS if k in given}
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DcsimError(f"{path}: field 'policy.params.{key}': got {value!r}; expected a number")
    return {k: float(v) for k, v in params.items()}, str(path.resolve())


# ------------------------------------------------------------------------------------------------ Stable-Baselines3
def _sb3_module(source: Source):
    """The SB3 policy's greedy action as a module (what ``predict(obs, deterministic=True)`` returns), its input
    width and its metadata."""
    import torch

    from dcsim.envs.sb3 import action_set, algo_class, check_action_set, read_training

    if source.training is None:
        raise DcsimError(f"CHECKPOINT {source.weights}: no train_metadata.yaml next to it; without it the model's "
                         "algorithm and action layout are unknown (export the `train --algo` folder as written)")
    meta = read_training(source.training, flag="CHECKPOINT")
    algo = meta["algo"]
    cls = algo_class(algo)
    try:
        model = cls.load(source.weights, device="cpu")
    except Exception as exc:  # a damaged zip: zipfile, pickle and torch raise several kinds
        raise DcsimError(f"CHECKPOINT {source.weights}: cannot be loaded as {algo} ({exc.__class__.__name__}: "
                         f"{exc}); expected the model.zip `train --algo {algo}` writes") from None
    check_action_set(meta, model.action_space, source.training / "train_metadata.yaml")
    policy = model.policy.eval()
    if not hasattr(policy, "q_net") and not hasattr(model.action_space, "nvec"):
        raise DcsimError(f"CHECKPOINT {source.weights}: {algo} with a {type(model.action_space).__name__} action "
                         "space; the export handles dcsim's layouts (MultiDiscrete for PPO/A2C, Discrete for DQN)")

    class Greedy(torch.nn.Module):
        """The greedy action: argmax of the Q-values (DQN) or of each sub-action's logits (PPO, A2C)."""

        def __init__(self, pol: torch.nn.Module):
            super().__init__()
            self.pol = pol
            self.nvec = [int(n) for n in getattr(model.action_space, "nvec", [])]

        def forward(self, obs: torch.Tensor):
            pol = self.pol
            if hasattr(pol, "q_net"):
                return torch.argmax(pol.q_net(obs), dim=1)
            extractor = pol.features_extractor if pol.share_features_extractor else pol.pi_features_extractor
            logits = pol.action_net(pol.mlp_extractor.forward_actor(pol.extract_features(obs, extractor)))
            return torch.stack([torch.argmax(c, dim=1) for c in torch.split(logits, self.nvec, dim=1)], dim=1)

    module = Greedy(policy).eval()
    width = int(model.observation_space.shape[0])
    space = model.action_space
    sizes = [int(v) for v in np.atleast_1d(getattr(space, "nvec", getattr(space, "n", 0)))]
    metadata = {"algo": algo, "action_layout": meta["action_layout"], "actions": json.dumps(action_set()),
                "action_space": json.dumps({"type": type(space).__name__, "sizes": sizes}),
                "outputs": json.dumps({"action": ["batch"] + ([len(module.nvec)] if module.nvec else [])}),
                "scenario": str((meta.get("scenario") or {}).get("name", "")),
                "n_gpus": str((meta.get("scenario") or {}).get("cluster", {}).get("gpus", "")),
                "timesteps_done": str(meta.get("timesteps_done", meta.get("timesteps", "")))}

    def sb3_actions(x: np.ndarray) -> np.ndarray:
        action, _ = model.predict(x, deterministic=True)
        return np.asarray(action)

    return module, width, metadata, sb3_actions


# ------------------------------------------------------------------------------------------------ export and check
@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's chatter (warnings about optional torchvision ops, deprecation notes)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _to_onnx(module, width: int):
    """``module`` as an ONNX ``ModelProto`` with a dynamic batch axis (torch.onnx's dynamo exporter)."""
    import torch

    example = torch.zeros(2, width, dtype=torch.float32)
    names = ["q_values", "action"] if isinstance(module(example), tuple) else ["action"]
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(module, (example,), input_names=["obs"], output_names=names,
                                        dynamic_shapes={"obs": {0: torch.export.Dim("batch")}}, dynamo=True,
                                        opset_version=OPSET, optimize=True, verbose=False)
    except Exception as exc:  # the exporter raises many kinds; say which model failed
        raise DcsimError(f"torch.onnx.export failed for this network ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return program.model_proto


def _verify(path: Path, width: int, torch_actions) -> None:
    """onnxruntime must choose the torch model's actions on random observations (and accept any batch size)."""
    rng = np.random.default_rng(20_240_601)
    x = rng.normal(0.0, 1.5, size=(VERIFY_ROWS, width)).astype(np.float32)
    sess = session(path)
    got = {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {"obs": x}))}["action"]
    want = torch_actions(x)
    if got.shape != want.shape or not np.array_equal(got, want):
        bad = int(np.sum(got != want)) if got.shape == want.shape else "all"
        raise DcsimError(f"the ONNX export chooses other actions than the torch model on {bad} of {VERIFY_ROWS} "
                         "random observations; the file was not written")
    for rows in (1, 0):
        out = sess.run(None, {"obs": x[:rows]})
        if len(out[-1]) != rows:
            raise DcsimError(f"the ONNX export gives {len(out[-1])} actions for {rows} observation rows; the file "
                             "was not written")

