"""Error types that tell a user which file, field and value are wrong and what is allowed."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class DcsimError(Exception):
    """Base class for every error dcsim reports to a user (the CLI prints these without a traceback)."""


class ScenarioError(DcsimError):
    """A scenario file (or a ``--set`` override) is malformed.

    Args:
        path: The scenario file, or None for an in-memory scenario.
        problems: One entry per problem: ``(field_path, value, message)`` where ``field_path`` is a
            dotted path such as ``"cluster.gpu_model"`` and ``message`` says what is allowed.
    """

    def __init__(self, path: str | Path | None, problems: list[tuple[str, Any, str]]):
        self.path = None if path is None else Path(path)
        self.problems = problems
        where = str(self.path) if self.path is not None else "<scenario>"
        lines = [f"{where}: {len(problems)} problem(s) in the scenario"]
        for field, value, message in problems:
            lines.append(f"  - {field or '<root>'}: {message} (got {_short(value)})")
        super().__init__("\n".join(lines))


class TraceError(DcsimError):
    """A trace or series file cannot be read as the format it claims to be.

    Args:
        path: The file that was being read.
        field: The column, row or setting at fault (e.g. ``"column 'num_gpu'"`` or ``"row 17"``).
        value: The offending value (shortened in the message).
        allowed: What would have been accepted.
    """

    def __init__(self, path: str | Path, field: str, value: Any, allowed: str):
        self.path = Path(path)
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{self.path}: {field}: got {_short(value)}; expected {allowed}")


class PolicyError(DcsimError):
    """A policy cannot be found, loaded or returned actions of the wrong shape or kind."""


class SeriesRangeError(DcsimError):
    """A simulation asked a series for a time outside its span and no fill rule was given."""


def _short(value: Any, limit: int = 80) -> str:
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # 9999.0, not np.float64(9999.0)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
