"""Standard RL interfaces to dcsim: a Gymnasium env and a PettingZoo ParallelEnv (the optional ``rl`` extra).

``import dcsim.envs`` registers the Gymnasium id ``dcsim/Cluster-v0`` (:class:`DcsimEnv`); ``DcsimEnv`` and
``DcsimParallelEnv`` are imported on first use, so a missing library is reported as
"install dcsim[rl]" only by what needs it. See ``docs/rl.md``.
"""
from __future__ import annotations

import importlib
from typing import Any

from dcsim.errors import DcsimError

GYM_ID = "dcsim/Cluster-v0"
_LAZY = {"DcsimEnv": ("dcsim.envs.gym_env", "gymnasium"),
         "DcsimParallelEnv": ("dcsim.envs.parallel_env", "pettingzoo")}


def require(module: str, what: str) -> Any:
    """Import ``module`` (a package of the ``rl`` extra) or raise a :class:`DcsimError` saying to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DcsimError(f"{what} needs {module} ({exc}); install dcsim[rl]: pip install -e '.[rl]'") from None


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, package = _LAZY[name]
        require(package, f"dcsim.envs.{name}")
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'dcsim.envs' has no attribute {name!r}")


def _register() -> None:
    try:
        import gymnasium
    except ImportError:
        return
    if GYM_ID not in gymnasium.registry:
        gymnasium.register(id=GYM_ID, entry_point="dcsim.envs.gym_env:DcsimEnv")


_register()
