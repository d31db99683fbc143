"""TensorBoard logs of ``dcsim train --policy`` trainings: one scalar per learning-curve column and episode.

The event files go to ``DIR/<policy>_<n>`` (the first ``n`` from 1 not yet taken), as Stable-Baselines3 names
its runs, so ``tensorboard --logdir DIR`` shows ``--policy`` and ``--algo`` trainings side by side. The writer is
TensorBoard's own (:class:`tensorboard.summary.Writer`, no torch needed); it comes with the ``rl`` extra.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dcsim.errors import DcsimError

#: Learning-curve columns that are not curves (the x axis, and the episode's seed).
_NOT_SCALARS = frozenset({"episode", "seed"})


def run_folder(root: Path, name: str) -> Path:
    """``root/<name>_<n>`` for the first ``n >= 1`` not taken yet."""
    n = 1
    while (root / f"{name}_{n}").exists():
        n += 1
    return root / f"{name}_{n}"


class EpisodeLog:
    """Writes each finished training episode's learning-curve row as TensorBoard scalars ``train/<column>``."""

    def __init__(self, root: Path, name: str):
        try:
            from tensorboard.summary import Writer
        except ImportError:
            raise DcsimError("--tensorboard needs the tensorboard package: install dcsim[rl] "
                             "(pip install -e '.[rl]')") from None
        self.folder = run_folder(Path(root), name)
        try:
            self.folder.mkdir(parents=True)
        except OSError as exc:
            raise DcsimError(f"--tensorboard {root}: cannot create {self.folder} ({exc.strerror})") from None
        self._writer = Writer(str(self.folder))

    def write(self, row: dict[str, Any]) -> None:
        """Log the numeric, finite values of one learning-curve row at step ``row["episode"]``."""
        step = int(row["episode"])
        for key, value in row.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(f"train/{key}", float(value), step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
