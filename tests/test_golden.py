"""Golden regression: a short quickstart run's engine outputs, byte for byte, against committed reference files.

An exact regression test, not a theory test: it catches any change to what the engine computes (an event moved,
a rounding changed, an order swapped). When a change is meant to move results, regenerate the files and say so
in the commit:

    DCSIM_UPDATE_GOLDEN=1 python -m pytest -q -p no:cacheprovider tests/test_golden.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dcsim.config import load_scenario
from dcsim.runner import run_scenario

REPO = Path(__file__).resolve().parents[1]
# Midnight to 5 am in San Jose: no sun, so the clear-sky solar is exactly 0 whatever pvlib version computes it.
GOLDEN = Path(__file__).resolve().parent / "golden" / "quickstart_race_to_idle_5h"
OVERRIDES = ["horizon_s=5h", "policy.name=race_to_idle", "outputs.trace_events=true"]
TABLES = ("jobs", "rounds", "timeseries", "ledger", "decisions", "events")
UPDATE = os.environ.get("DCSIM_UPDATE_GOLDEN") == "1"


def _outputs() -> dict[str, str]:
    """The run's tables as CSV text (floats at full precision) and its books as JSON, wall-clock times left out."""
    result = run_scenario(load_scenario(REPO / "scenarios" / "quickstart.yaml", OVERRIDES)).result
    texts = {f"{name}.csv": getattr(result, name).to_csv(index=False) for name in TABLES}
    counters = {k: v for k, v in result.counters.items() if k != "wall_s"}
    books = {"energy": result.energy, "tokens": result.tokens, "counters": counters,
             "gpu_energy_j": result.gpu_energy_j.tolist(), "wallets": result.wallets.tolist()}
    texts["books.json"] = json.dumps(books, indent=1, sort_keys=True) + "\n"
    return texts


def test_quickstart_outputs_match_the_golden_files():
    texts = _outputs()
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (GOLDEN / name).write_text(text, encoding="utf-8")
        pytest.skip(f"golden files rewritten in {GOLDEN}")
    assert (GOLDEN / "books.json").exists(), f"no golden files in {GOLDEN}: run with DCSIM_UPDATE_GOLDEN=1"
    for name, text in texts.items():
        expected = (GOLDEN / name).read_text(encoding="utf-8")
        if text != expected:
            got_lines, want_lines = text.splitlines(), expected.splitlines()
            first = next((i for i, (a, b) in enumerate(zip(got_lines, want_lines)) if a != b),
                         min(len(got_lines), len(want_lines)))
            got = got_lines[first] if first < len(got_lines) else "<end>"
            want = want_lines[first] if first < len(want_lines) else "<end>"
            pytest.fail(f"{name} differs from {GOLDEN / name} at line {first + 1} "
                        f"({len(got_lines)} lines, expected {len(want_lines)}):\n got:  {got}\n want: {want}\n"
                        "If the change is meant to move results, regenerate (see this module's docstring).")
