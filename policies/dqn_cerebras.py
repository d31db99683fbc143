"""DQN learner on ``cerebras.pytorch``: the CPU backend to check correctness, a CS-X Wafer-Scale Cluster to train.

Same API as ``policies.dqn_core.TorchLearner``. Runs only where ``cerebras.pytorch`` 2.10.0
imports, i.e. in the venv built by ``bash tools/setup_cerebras_venv.sh`` (docs/cerebras.md).

How it maps onto cerebras.pytorch:

- One backend per process (``cstorch.backend`` is a singleton): a second ``CerebrasLearner``
  in the same process must ask for the same backend type, and then shares it.
- One compiled model per step: ``DQNLoss`` (online and target nets, returning the loss) is the
  model, with ``cstorch.nn.SmoothL1Loss`` as its loss.
- The traced step does forward, backward, optional gradient clipping, the optimizer step
  (``cstorch.optim``) and the Polyak target update (in-place blends trace; hard copies don't).
- Batches are fed through ``cstorch.utils.data.DataLoader`` / ``DataExecutor``: one executor
  per ``steps`` call (a training round), so on a cluster a round is one appliance run.
- Weights come back to the host in a checkpoint closure on the last step of each round (the
  only steps at which a cluster can send weights), as plain CPU tensors.
- Compilation is deferred to the first step, so weights and optimizer state loaded before it
  are part of the initial state that goes to the device.
"""
from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

import cerebras.pytorch as cstorch
from policies.dqn_core import (
    DQNLoss, _check_same_architecture, _make_optimizer, _optimizer_state_fits, architecture, batch_to_tensors,
    polyak_update,
)

BACKENDS = ("CPU", "CSX")
"""Backend types a ``CerebrasLearner`` accepts."""

CLUSTER_KEYS = ("mgmt_address", "mgmt_namespace", "credentials_path", "num_csx", "max_wgt_servers",
                "max_act_per_csx", "num_workers_per_csx", "cbcore_image", "job_labels", "job_priority",
                "job_time_sec", "mount_dirs", "python_paths", "automount", "mount_all",
                "disable_mount_check", "disable_version_check", "workflow_id")
"""Cluster settings accepted as keyword arguments (fields of ``cstorch.distributed.ClusterConfig``)."""

_LOWERING_TOOL = "torch-cirh-opt"


def _batches_input_fn(batches: Sequence[tuple[np.ndarray, ...]]) -> list[tuple[torch.Tensor, ...]]:
    """Input function for ``cstorch.utils.data.DataLoader``: the round's batches as tensor tuples.

    Module-level so that cluster workers can import it (they build the data stream themselves).
    """
    return [tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in batch) for batch in batches]


def _put_lowering_tool_on_path() -> None:
    """Put ``cerebras/pytorch/lib`` at the front of PATH unless ``torch-cirh-opt`` is already found.

    validate_only lowers the traced graph by running ``torch-cirh-opt``, which the package ships
    in that folder but does not put on PATH; without it the lowering fails.
    """
    if shutil.which(_LOWERING_TOOL) is not None:
        return
    lib = Path(cstorch.__file__).resolve().parent / "lib"
    if (lib / _LOWERING_TOOL).exists():
        os.environ["PATH"] = f"{lib}{os.pathsep}{os.environ.get('PATH', '')}"


def _to_cpu_tree(backend, tree: Any) -> Any:
    """``tree`` with every tensor fetched to the host and copied (the CPU backend hands back the live tensor)."""
    return torch.utils._pytree.tree_map(
        lambda t: backend.to_cpu(t).detach().clone() if isinstance(t, torch.Tensor) else copy.deepcopy(t), tree)


class CerebrasLearner:
    """Trains ``DQNLoss`` with cerebras.pytorch; same API as ``TorchLearner``.

    Args:
        n_features: Width F of an observation row.
        n_actions: Number of discrete actions.
        hidden: Hidden layer widths.
        lr: Learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (``cstorch.optim``; Adam with ``eps=1e-8`` as torch's).
        polyak_tau: Share of the online weights blended into the target after each step, in [0, 1].
        huber_delta: Smooth-L1 ``beta`` (see ``DQNLoss``).
        grad_clip: Largest global L2 norm of the online gradients; ``None`` leaves them unclipped.
        seed: Seeds the generator that draws the initial weights (same draw as ``TorchLearner``).
        backend: ``"CPU"`` (runs here, a correctness check) or ``"CSX"`` (a Wafer-Scale Cluster).
        validate_only: CSX only: trace and lower each round's step offline and run nothing; no
            cluster is needed. The lowering runs ``torch-cirh-opt`` from ``cerebras/pytorch/lib``,
            which is put at the front of this process's PATH when not already found there.
            Losses come back NaN and weights do not change.
        compile_only: CSX only: compile on the cluster without running.
        artifact_dir: Where cerebras.pytorch writes its logs and artifacts (compile logs, the
            lowered MLIR). Default: a temporary directory removed at exit for ``"CPU"``;
            cerebras.pytorch's own default (under the current directory) for ``"CSX"``.
        compile_dir: CSX only: the compile directory on the cluster.
        cluster_config: CSX only: a ready ``cstorch.distributed.ClusterConfig``; or pass its
            fields (``CLUSTER_KEYS``: ``mgmt_address``, ``credentials_path``, ``num_csx``, ...)
            as keyword arguments.
    """

    kind = "cerebras"  # per instance: "cerebras-cpu" or "csx", the make_learner kind
    optimizer_format = "cstorch.optim"
    """Whose optimizer state a checkpoint holds: it is loaded only into a learner of the same format."""

    def __init__(self, n_features: int, n_actions: int, hidden: tuple[int, ...] = (64, 64), lr: float = 1e-3,
                 optimizer: str = "adam", polyak_tau: float = 0.01, huber_delta: float = 1.0,
                 grad_clip: float | None = 10.0, seed: int = 0, backend: str = "CPU", *,
                 validate_only: bool = False, compile_only: bool = False, artifact_dir: str | None = None,
                 compile_dir: str | None = None, cluster_config: Any = None, device: str | None = None,
                 **cluster_settings: Any):
        backend = backend.upper()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        unknown = sorted(set(cluster_settings) - set(CLUSTER_KEYS))
        if unknown:
            raise TypeError(f"unknown CerebrasLearner settings {unknown}; cluster settings allowed: {list(CLUSTER_KEYS)}")
        if backend == "CPU" and (validate_only or compile_only or cluster_config is not None or cluster_settings
                                 or compile_dir is not None):
            raise ValueError("validate_only, compile_only, compile_dir and cluster settings apply to backend 'CSX' only")
        if device not in (None, "auto", "cpu"):
            raise ValueError(f"CerebrasLearner runs on its backend, not on device {device!r}")
        if not 0.0 <= polyak_tau <= 1.0:
            raise ValueError(f"polyak_tau must lie in [0, 1], got {polyak_tau!r}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip!r}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.kind = "cerebras-cpu" if backend == "CPU" else "csx"
        self.backend_type = backend
        self.validate_only, self.compile_only = bool(validate_only), bool(compile_only)
        self.n_features, self.n_actions, self.hidden = int(n_features), int(n_actions), tuple(int(h) for h in hidden)
        self.lr, self.optimizer_name, self.polyak_tau = float(lr), optimizer, float(polyak_tau)
        self.huber_delta, self.grad_clip, self.seed = float(huber_delta), grad_clip, int(seed)

        self.backend = self._get_backend(backend, artifact_dir, compile_dir, cluster_config, cluster_settings)
        generator = torch.Generator().manual_seed(self.seed)
        # Built on the host; moved to the backend's device at compile time (the first step).
        self.model = DQNLoss(n_features, n_actions, self.hidden, huber_delta=huber_delta,
                             loss_fn=cstorch.nn.SmoothL1Loss(beta=self.huber_delta), generator=generator)
        self._compiled = None
        self.optimizer = None
        self._pending_optimizer_state: dict | None = None
        self._host_state: dict | None = None  # weights fetched at the end of the last round
        self.steps_done = 0

    # -- backend and compilation ------------------------------------------------------------------

    def _get_backend(self, backend_type, artifact_dir, compile_dir, cluster_config, cluster_settings):
        current = cstorch.current_backend(raise_exception=False, raise_warning=False)
        if current is not None:
            if current.backend_type.name != backend_type:
                raise RuntimeError(f"this process already runs the cerebras.pytorch {current.backend_type.name} backend; "
                                   f"only one backend per process, so backend {backend_type!r} needs a process of its own")
            return current
        if artifact_dir is None and backend_type == "CPU":
            # The CPU backend's artifacts (per-run timing files) are of no use; keep them out of
            # the working directory.
            artifact_dir = tempfile.mkdtemp(prefix="dcsim-cerebras-cpu-")
            atexit.register(shutil.rmtree, artifact_dir, True)
        kwargs: dict[str, Any] = {}
        if artifact_dir is not None:
            kwargs["artifact_dir"] = str(artifact_dir)
        if backend_type == "CSX":
            if self.validate_only:
                _put_lowering_tool_on_path()
            if cluster_config is None:
                cluster_config = cstorch.distributed.ClusterConfig(**cluster_settings)
            elif cluster_settings:
                raise TypeError("pass either cluster_config or cluster settings as keywords, not both")
            kwargs.update(cluster_config=cluster_config, validate_only=self.validate_only,
                          compile_only=self.compile_only)
            if compile_dir is not None:
                kwargs["compile_dir"] = compile_dir
        return cstorch.backend(backend_type, **kwargs)

    def _ensure_compiled(self) -> None:
        if self._compiled is not None:
            return
        # Host copies from before the move: with validate_only/compile_only the device copies
        # hold no data, and a cluster sends weights back only at checkpoint steps.
        self._host_state = {"online": self._module_to_host(self.model.online),
                            "target": self._module_to_host(self.model.target),
                            "optimizer": copy.deepcopy(self._pending_optimizer_state)}
        self._compiled = cstorch.compile(self.model, self.backend)
        self.optimizer = _make_optimizer(cstorch.optim, self.model.online.parameters(), self.optimizer_name, self.lr)
        if self._pending_optimizer_state is not None:
            self.optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None
        model, compiled, optimizer = self.model, self._compiled, self.optimizer
        grad_clip, tau = self.grad_clip, self.polyak_tau

        @cstorch.trace
        def training_step(obs, action, reward, next_obs, discount):
            loss = compiled(obs, action, reward, next_obs, discount)
            optimizer.zero_grad()
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(list(model.online.parameters()), grad_clip)
            optimizer.step()
            polyak_update(model.target, model.online, tau)
            return loss

        @cstorch.step_closure
        def record_loss(loss):
            self._losses.append(float(loss.item()))

        @cstorch.checkpoint_closure
        def fetch_state():
            self._host_state = {
                "online": _to_cpu_tree(self.backend, dict(model.online.state_dict())),
                "target": _to_cpu_tree(self.backend, dict(model.target.state_dict())),
                "optimizer": _to_cpu_tree(self.backend, optimizer.state_dict()),
            }

        self._training_step, self._record_loss, self._fetch_state = training_step, record_loss, fetch_state

    # -- training -----------------------------------------------------------------------------------

    def step(self, batch: dict[str, np.ndarray]) -> float:
        """One gradient step on ``batch``, then the Polyak update; returns the loss before the step."""
        return self.steps([batch])[0]

    def steps(self, batches: Iterable[dict[str, np.ndarray]]) -> list[float]:
        """One training round: a step per batch, run as one ``DataExecutor`` (one appliance run on a cluster)."""
        arrays = [tuple(t.numpy() for t in batch_to_tensors(b, self.n_features)) for b in batches]
        if not arrays:
            return []
        self._ensure_compiled()
        self._losses: list[float] = []
        # validate_only / compile_only trace a single step whatever the round's length.
        n_run = 1 if (self.validate_only or self.compile_only) else len(arrays)
        loader = cstorch.utils.data.DataLoader(_batches_input_fn, arrays[:n_run])
        executor = cstorch.utils.data.DataExecutor(loader, num_steps=n_run, checkpoint_steps=n_run)
        before = self._host_state
        with warnings.catch_warnings():
            # cstorch warns at every optimizer step that float16 autocast lacks a grad scaler; this
            # learner trains in float32 and never autocasts.
            warnings.filterwarnings("ignore", message="Detected that the half dtype is set to float16")
            for inputs in executor:
                loss = self._training_step(*inputs)
                self._record_loss(loss)
                self._fetch_state()
        if self.validate_only or self.compile_only:
            self._host_state = before  # nothing ran: the weights are as they were
            return [float("nan")] * len(arrays)
        self.steps_done += len(arrays)
        return list(self._losses)

    # -- weights and checkpoints -----------------------------------------------------------------------

    def architecture(self) -> dict:
        """JSON-able description of the Q-network."""
        return architecture(self.n_features, self.n_actions, self.hidden)

    @staticmethod
    def _module_to_host(net: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").clone() for k, v in net.state_dict().items()}

    def _host(self, part: str) -> dict[str, torch.Tensor]:
        if self._host_state is None:  # not compiled yet: the module is still a plain host module
            return self._module_to_host(self.model.online if part == "online" else self.model.target)
        return {k: v.clone() for k, v in self._host_state[part].items()}

    def online_state_dict(self) -> dict[str, torch.Tensor]:
        """Plain CPU torch copies of the online network's weights, keyed as in ``QNetwork.state_dict()``."""
        return self._host("online")

    def state_dict(self) -> dict:
        """Online and target weights, optimizer state and settings; loadable by either learner kind."""
        if self._host_state is None:
            opt = copy.deepcopy(self._pending_optimizer_state)
        else:
            opt = copy.deepcopy(self._host_state["optimizer"])
        return {"kind": self.kind, "architecture": self.architecture(), "optimizer_name": self.optimizer_name,
                "optimizer_format": self.optimizer_format, "steps_done": self.steps_done, "online": self.online_state_dict(), "target": self._host("target"),
                "optimizer": opt}

    def load_state_dict(self, sd: dict) -> None:
        """Restore what ``state_dict`` saved; the architecture must match.

        Weights load from either learner kind; the optimizer state only from a checkpoint with the
        same optimizer and ``optimizer_format``, otherwise the optimizer starts afresh.
        """
        _check_same_architecture(sd, self.architecture())
        self._load_weights(sd["online"], sd["target"])
        opt = sd["optimizer"] if _optimizer_state_fits(sd, self.optimizer_name, self.optimizer_format) else None
        if opt is not None:
            if self.optimizer is None:
                self._pending_optimizer_state = copy.deepcopy(opt)
            else:
                self.optimizer.load_state_dict(copy.deepcopy(opt))
                if self._host_state is not None:
                    self._host_state["optimizer"] = copy.deepcopy(opt)
        self.steps_done = int(sd.get("steps_done", 0))

    def load_online_weights(self, sd: dict[str, torch.Tensor]) -> None:
        """Set the online and target networks to the weights ``sd`` (a ``QNetwork`` state dict)."""
        self._load_weights(sd, sd)

    def _load_weights(self, online: dict, target: dict) -> None:
        with torch.no_grad():
            self.model.online.load_state_dict(online)
            self.model.target.load_state_dict(target)
        if self._host_state is not None:
            self._host_state["online"] = {k: v.detach().to("cpu").clone() for k, v in online.items()}
            self._host_state["target"] = {k: v.detach().to("cpu").clone() for k, v in target.items()}
