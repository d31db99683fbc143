"""The ``onnx`` policy: a DQN exported to ONNX (``dcsim export``) bidding greedily inside dcsim with onnxruntime.

``python -m dcsim run SCENARIO --policy onnx --checkpoint policy.onnx`` (or ``policy: {name: onnx, params:
{checkpoint: policy.onnx}}``). At each decision the engine's batched observation becomes one row of
:data:`dcsim.learning.FEATURES` per deciding GPU (exactly as for the ``dqn`` policy), the whole batch goes through
one onnxruntime call, and each row's greedy :class:`~dcsim.learning.BidAction` becomes its bid with the settings
the DQN was trained with (stored in the file; ``cheap_multiple``, ``block_limit_multiple`` and ``pace_safety``
override them). The policy never explores and never learns, so a run gives the run of the frozen ``dqn`` policy
it was exported from (``tests/test_onnx.py``).

:class:`OnnxEnvModel` runs an exported Stable-Baselines3 model instead: it acts on the Gymnasium env's
observation (``dcsim.envs.DcsimEnv``) with the ``predict`` interface SB3 models have.

Needs the optional ``onnx`` extra (``pip install -e '.[onnx]'``); without it the rest of dcsim is unaffected.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from dcsim.errors import DcsimError, PolicyError
from dcsim.learning import FEATURES, BidAction
from policies.learning import LearningPolicy

#: Prefix of dcsim's keys in an exported model's ``metadata_props``.
METADATA_PREFIX = "dcsim."
KIND_DQN, KIND_SB3 = "dqn", "sb3"
#: The DQN's bid-action settings an export carries (see :class:`policies.learning.LearningPolicy`).
BID_PARAMS = ("cheap_multiple", "block_limit_multiple", "pace_safety")


def enum_names() -> dict[str, list[str]]:
    """The action enums' member names in index order (what an export records as its action set)."""
    from dcsim.envs.sb3 import action_set

    return action_set()


def require_extra(module: str, what: str, install: str = "pip install -e '.[onnx]'") -> Any:
    """Import ``module`` or raise a :class:`PolicyError` saying which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PolicyError(f"{what} needs {module} ({exc}); install dcsim[onnx]: {install}") from None


def session(path: Path):
    """An onnxruntime CPU session for ``path`` (one thread: the simulation shares the cores; errors name the file)."""
    ort = require_extra("onnxruntime", f"ONNX model {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception kinds for unreadable or invalid files
        text = str(exc).strip().splitlines()
        raise PolicyError(f"{path}: not a readable ONNX model ({exc.__class__.__name__}: {text[0] if text else ''}); "
                          "expected a file written by `python -m dcsim export CHECKPOINT --onnx FILE`") from None


def read_metadata(path: Path, sess=None) -> dict[str, str]:
    """dcsim's ``metadata_props`` of an exported model (keys without the ``dcsim.`` prefix)."""
    sess = sess if sess is not None else session(path)
    props = sess.get_modelmeta().custom_metadata_map
    return {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}


def _json_field(path: Path, meta: dict[str, str], key: str) -> Any:
    if key not in meta:
        raise PolicyError(f"{path}: metadata field '{METADATA_PREFIX}{key}': missing; expected a model written by "
                          "`python -m dcsim export`")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise PolicyError(f"{path}: metadata field '{METADATA_PREFIX}{key}': got {meta[key][:80]!r}; expected "
                          "JSON, as `python -m dcsim export` writes it") from None


def _check_dqn_model(path: Path, sess, meta: dict[str, str]) -> dict[str, float]:
    """Check that ``path`` is a DQN export for this dcsim's features and actions; its bid settings."""
    kind = meta.get("kind")
    if kind == KIND_SB3:
        raise PolicyError(f"{path}: an export of a Stable-Baselines3 model ({meta.get('algo', 'sb3')}), which "
                          "acts on the Gymnasium env's whole-cluster observation, not per GPU; run it through "
                          "dcsim.envs.DcsimEnv with policies.onnx_policy.OnnxEnvModel (docs/rl.md), not as a policy")
    if kind != KIND_DQN:
        raise PolicyError(f"{path}: metadata field '{METADATA_PREFIX}kind': got {kind!r}; expected {KIND_DQN!r} "
                          "(a model written by `python -m dcsim export` from a `train --policy dqn` checkpoint)")
    features = _json_field(path, meta, "features")
    if tuple(features) != FEATURES:
        raise PolicyError(f"{path}: exported for observation features {features}; this dcsim's are "
                          f"{list(FEATURES)}: export the checkpoint again from a training with this dcsim")
    actions = _json_field(path, meta, "actions").get("BidAction")
    if actions != list(BidAction.__members__):
        raise PolicyError(f"{path}: exported for actions {actions}; this dcsim's BidAction is "
                          f"{list(BidAction.__members__)}: a model of another action set cannot be run; "
                          "retrain with `python -m dcsim train` and export again")
    inputs = sess.get_inputs()
    if len(inputs) != 1 or inputs[0].name != "obs" or inputs[0].shape[-1] != len(FEATURES):
        got = [(i.name, i.shape) for i in inputs]
        raise PolicyError(f"{path}: model inputs {got}; expected one input 'obs' of shape [batch, {len(FEATURES)}]")
    if "action" not in [o.name for o in sess.get_outputs()]:
        raise PolicyError(f"{path}: the model has no output 'action' (outputs: "
                          f"{[o.name for o in sess.get_outputs()]}); expected a model written by `dcsim export`")
    params = _json_field(path, meta, "bid_params")
    if not isinstance(params, dict) or set(params) != set(BID_PARAMS):
        raise PolicyError(f"{path}: metadata field '{METADATA_PREFIX}bid_params': got {params!r}; expected "
                          f"numbers for {', '.join(BID_PARAMS)}")
    return {k: float(v) for k, v in params.items()}


class OnnxPolicy(LearningPolicy):
    """A DQN exported to ONNX, acting greedily with onnxruntime (needs the ``onnx`` extra).

    Args:
        checkpoint: The ``.onnx`` file written by ``python -m dcsim export`` (``--checkpoint`` sets it).
        learn: Must be False: the model is frozen (``--checkpoint`` sets it False).
        cheap_multiple, block_limit_multiple, pace_safety: The bid actions' settings (see
            :class:`~policies.learning.LearningPolicy`); None (the default) takes the ones the DQN was trained
            with, stored in the file.
    """

    name = "onnx"

    def __init__(self, checkpoint: str | None = None, learn: bool = False, cheap_multiple: float | None = None,
                 block_limit_multiple: float | None = None, pace_safety: float | None = None):
        if learn:
            raise PolicyError("policy 'onnx': learn=True; an exported model is frozen and does not learn (train "
                              "with `python -m dcsim train SCENARIO --policy dqn`, then export it again)")
        if checkpoint is None:
            raise PolicyError("policy 'onnx' needs the exported model: `--policy onnx --checkpoint policy.onnx` "
                              "or policy.params.checkpoint (a file written by `python -m dcsim export CHECKPOINT "
                              "--onnx policy.onnx`)")
        self._given = {"cheap_multiple": cheap_multiple, "block_limit_multiple": block_limit_multiple,
                       "pace_safety": pace_safety}
        super().__init__(learn=False, checkpoint=str(checkpoint),
                         **{k: v for k, v in self._given.items() if v is not None})
        self._sess = None
        self._loaded_from: Path | None = None
        self.metadata: dict[str, str] = {}
        self.load_checkpoint(Path(checkpoint))  # a bad file fails here, before any simulation

    def load_checkpoint(self, path: Path) -> None:
        """Open the ``.onnx`` file and check it is a DQN export for this dcsim's features and actions."""
        path = Path(path)
        if self._loaded_from == path:
            return
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "no such file"
            raise PolicyError(f"policy 'onnx': checkpoint {str(path)!r}: {what}; expected the .onnx file written by "
                              "`python -m dcsim export CHECKPOINT --onnx FILE`")
        sess = session(path)
        meta = read_metadata(path, sess)
        stored = _check_dqn_model(path, sess, meta)
        for key, value in stored.items():
            if self._given[key] is None:
                setattr(self, key, value)
        self._sess, self.metadata, self._loaded_from = sess, meta, path

    def choose(self, features: np.ndarray, agents: np.ndarray) -> np.ndarray:
        (actions,) = self._sess.run(["action"], {"obs": np.ascontiguousarray(features, dtype=np.float32)})
        return np.asarray(actions, dtype=np.int64)

    def save_checkpoint(self, path: Path) -> Path:
        raise PolicyError("policy 'onnx' runs an exported model and does not learn; train with `python -m dcsim "
                          "train SCENARIO --policy dqn` and export its checkpoint")

    def state_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "learn": False, "decisions": self.decisions,
                "exported_from": self.metadata.get("source"), "cheap_multiple": self.cheap_multiple,
                "block_limit_multiple": self.block_limit_multiple, "pace_safety": self.pace_safety}

    def __getstate__(self) -> dict[str, Any]:  # an onnxruntime session does not pickle: reopen it from the file
        state = self.__dict__.copy()
        state["_sess"], state["_loaded_from"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load_checkpoint(Path(self.checkpoint))


class OnnxEnvModel:
    """An exported Stable-Baselines3 model acting on :class:`dcsim.envs.DcsimEnv` observations with onnxruntime.

    ``predict(obs, deterministic=True)`` returns what the SB3 model's own ``predict`` does (the greedy action),
    so :func:`dcsim.envs.sb3.evaluate_model` runs it as it runs the model.

    Args:
        path: The ``.onnx`` file written by ``python -m dcsim export SB3_TRAINING --onnx FILE``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise PolicyError(f"{self.path}: no such file; expected the .onnx file written by `python -m dcsim "
                              "export SB3_TRAINING --onnx FILE`")
        self._sess = session(self.path)
        self.metadata = read_metadata(self.path, self._sess)
        if self.metadata.get("kind") != KIND_SB3:
            raise PolicyError(f"{self.path}: metadata field '{METADATA_PREFIX}kind': got "
                              f"{self.metadata.get('kind')!r}; expected {KIND_SB3!r} (an export of a `train --algo "
                              "sb3:...` model; a DQN export runs as `--policy onnx`)")
        actions = _json_field(self.path, self.metadata, "actions")
        from dcsim.envs.sb3 import action_set_differs

        if action_set_differs(actions):  # an export that predates DispatchAction in the set: the env's width checks
            raise PolicyError(f"{self.path}: exported for actions {actions}; this dcsim's are {enum_names()}: a "
                              "model of another action set cannot be run; retrain and export again")
        self.algo = self.metadata.get("algo")
        self.action_layout = self.metadata.get("action_layout")
        self.obs_dim = int(self._sess.get_inputs()[0].shape[-1])

    def check_env(self, env) -> None:
        """The env must have the model's action layout and observation width (a clear error otherwise)."""
        env = getattr(env, "unwrapped", env)
        if env.action_layout != self.action_layout or env.observation_space.shape != (self.obs_dim,):
            raise DcsimError(f"{self.path}: exported for action layout {self.action_layout!r} and observations of "
                             f"width {self.obs_dim}; this env has {env.action_layout!r} and width "
                             f"{env.observation_space.shape[0]} (another scenario size or env settings)")

    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        """The greedy action for one observation ``(obs_dim,)`` or a batch ``(n, obs_dim)``; ``(action, None)``."""
        if not deterministic:
            raise DcsimError("OnnxEnvModel.predict: only deterministic=True (the export holds the greedy action)")
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if x.shape[-1:] != (self.obs_dim,) or x.ndim > 2:
            raise DcsimError(f"{self.path}: observation of shape {x.shape}; the model takes ({self.obs_dim},) or "
                             f"(n, {self.obs_dim}) (the env it was exported for: {self.metadata.get('scenario')!r} "
                             f"with {self.metadata.get('n_gpus')} GPUs)")
        (action,) = self._sess.run(["action"], {"obs": x[None] if single else x})
        return (action[0] if single else action), None
