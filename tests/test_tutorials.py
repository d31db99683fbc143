"""The tutorials: every lesson's commands run at a reduced horizon, and the pages hold their commands, tables and images.

``tools/make_tutorials.py --horizon 2h --out tmp`` runs in a subprocess, so every ``python -m dcsim`` command of
every lesson (and each example script) really runs; a change that breaks a tutorial command fails here. The
committed pages in docs/tutorials/ must show the script's current commands, so editing a lesson without
regenerating the pages fails too; and a full rebuild at the lessons' own settings (~2 CPU-minutes) must give
every number on every committed page, so a page cannot go stale when the code changes.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "make_tutorials.py"
COMMITTED = REPO / "docs" / "tutorials"
HORIZON = "2h"
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
# Each build is a module fixture of 2-3 CPU-minutes. Under `pytest -n N --dist loadgroup` (the README's command) the
# tests sharing one build form one xdist group, so that build runs once, on one worker, rather than once on every
# worker that gets one of its tests; without xdist the marks do nothing.
FULL_BUILD = pytest.mark.xdist_group("tutorials_full_build")
QUICK_BUILD = pytest.mark.xdist_group("tutorials_quick_build")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_tutorials", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class body runs
    spec.loader.exec_module(module)
    return module


TUT = _load_script()
LESSONS = TUT.LESSONS


def _has_table(text: str) -> bool:
    """A Markdown table: a header row followed by a separator row such as ``|:---|---:|``."""
    lines = text.splitlines()
    return any(a.startswith("|") and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", b.strip())
               for a, b in zip(lines, lines[1:]))


def _check_images(page: Path) -> list[str]:
    """Every image a page references exists next to it, is a PNG and is small; returns the references."""
    refs = IMAGE.findall(page.read_text(encoding="utf-8"))
    for ref in refs:
        path = page.parent / ref
        assert path.is_file(), f"{page.name} shows {ref}, which does not exist"
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG"), f"{ref} is not a PNG"
        assert len(data) <= TUT.MAX_IMAGE_BYTES, f"{ref} is {len(data):,} bytes"
    return refs


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    """The tutorials built at a 2-hour horizon into a temporary folder (run from another folder: no cwd tricks)."""
    out = tmp_path_factory.mktemp("tutorials")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--horizon", HORIZON, "--out", str(out)],
                          cwd=tmp_path_factory.mktemp("cwd"), capture_output=True, text=True, timeout=900)
    return out, proc


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    """The tutorials rebuilt at their own settings (full horizon, every seed), as the committed pages were."""
    out = tmp_path_factory.mktemp("tutorials-full")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)],
                          cwd=tmp_path_factory.mktemp("cwd-full"), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"make_tutorials failed\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return out


# The only numbers on the pages that depend on the machine rather than on the model: throughput.
WALL_CLOCK = re.compile(r"^(events / wall-second\s+)[\d,.]+$", re.M)
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def _numbers(text: str) -> list[tuple[str, str]]:
    """Every number on a page with its line, wall-clock throughput masked."""
    text = WALL_CLOCK.sub(r"\1<machine-dependent>", text)
    return [(m.group(), line) for line in text.splitlines() for m in NUMBER.finditer(line)]


@FULL_BUILD
@pytest.mark.parametrize("name", [l.filename for l in LESSONS] + ["README.md"])
def test_every_committed_tutorial_number_reproduces(full_build, name):
    """Every number make_tutorials writes into a committed page (tables, console output, prose) equals the one a
    fresh run of the same commands gives; only events per wall-second are machine-dependent and masked."""
    committed = (COMMITTED / name).read_text(encoding="utf-8")
    fresh = (full_build / name).read_text(encoding="utf-8")
    old, new = _numbers(committed), _numbers(fresh)
    differ = [(a, b, line) for (a, line), (b, _) in zip(old, new) if a != b]
    assert not differ and len(old) == len(new), (
        f"{name}: {len(differ)} number(s) differ from a fresh run (regenerate with `python tools/make_tutorials.py`)"
        + "".join(f"\n  page {a} / fresh {b}: {line.strip()[:160]}" for a, b, line in differ[:10])
        + ("" if len(old) == len(new) else f"\n  the page has {len(old)} numbers, the fresh build {len(new)}"))
    assert WALL_CLOCK.sub("", committed) == WALL_CLOCK.sub("", fresh), f"{name}: the text differs from a fresh build"


def test_number_masking_keeps_model_numbers():
    page = "events / wall-second                 13,310\njobs completed  350.8 ± 13.87, p=0.0011 and -38.59"
    assert [n for n, _ in _numbers(page)] == ["350.8", "13.87", "0.0011", "-38.59"]


@QUICK_BUILD
def test_build_at_reduced_horizon_succeeds(quick_build):
    out, proc = quick_build
    assert proc.returncode == 0, f"make_tutorials failed\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert (out / "README.md").is_file()
    for lesson in LESSONS:
        assert f"lesson {lesson.number}: wrote" in proc.stdout


@QUICK_BUILD
@pytest.mark.parametrize("lesson", LESSONS, ids=[l.filename for l in LESSONS])
def test_quick_page_shows_its_commands_tables_and_images(quick_build, lesson):
    out, proc = quick_build
    assert proc.returncode == 0, proc.stderr
    page = out / lesson.filename
    assert page.is_file()
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# Lesson {lesson.number}: {lesson.title}")
    for name, command in lesson.commands.items():
        shown = TUT.shown_command(command, HORIZON)
        assert shown in text, f"{lesson.filename}: command {name!r} is not on the page: {shown}"
        if command.startswith("python -m dcsim run") or command.startswith("python -m dcsim compare"):
            assert shown.endswith(f"--horizon {HORIZON}")
    assert _has_table(text), f"{lesson.filename} has no table"
    assert "n/a n/a" not in text
    assert _check_images(page), f"{lesson.filename} shows no image"
    assert "{" + "fmt(" not in text and "{diff_text" not in text  # no template left unfilled


@QUICK_BUILD
def test_quick_build_writes_only_pages_and_images(quick_build):
    out, proc = quick_build
    assert proc.returncode == 0, proc.stderr
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    pages = {l.filename for l in LESSONS} | {"README.md"}
    assert pages <= files
    assert all(f in pages or (f.startswith("img/") and f.endswith(".png")) for f in files), sorted(files)


def test_commands_run_at_reduced_horizon_carry_it():
    assert TUT.shown_command("python -m dcsim run s.yaml --out x", "2h") == "python -m dcsim run s.yaml --out x --horizon 2h"
    assert TUT.shown_command("python -m dcsim report x", "2h") == "python -m dcsim report x"
    assert TUT.shown_command("python docs/tutorials/examples/one_round.py", "2h") == "python docs/tutorials/examples/one_round.py"
    assert TUT.shown_command("python -m dcsim compare s.yaml --policies a", None) == "python -m dcsim compare s.yaml --policies a"


@pytest.mark.parametrize("lesson", LESSONS, ids=[l.filename for l in LESSONS])
def test_committed_page_matches_the_script(lesson):
    """The pages in docs/tutorials were generated at full horizon from the script's current commands."""
    page = COMMITTED / lesson.filename
    assert page.is_file(), f"run `python tools/make_tutorials.py` to generate {page}"
    text = page.read_text(encoding="utf-8")
    assert "reduced horizon" not in text, f"{page} is a quick build; regenerate it at full horizon"
    for command in lesson.commands.values():
        assert f"{command}\n" in text, f"{page} is out of date (regenerate it): missing {command}"
    assert _has_table(text)
    _check_images(page)


def test_committed_index_links_every_lesson():
    text = (COMMITTED / "README.md").read_text(encoding="utf-8")
    for lesson in LESSONS:
        assert f"]({lesson.filename})" in text


def test_committed_images_are_all_used():
    shown = set()
    for lesson in LESSONS:
        shown |= set(IMAGE.findall((COMMITTED / lesson.filename).read_text(encoding="utf-8")))
    on_disk = {f"img/{p.name}" for p in (COMMITTED / "img").glob("*")}
    assert on_disk == shown


def test_irregular_solar_trace_is_what_the_script_generates():
    committed = pd.read_csv(TUT.DATA_CSV)
    generated = TUT.irregular_solar_trace()
    pd.testing.assert_frame_equal(committed, generated.astype(committed.dtypes.to_dict()))
    gaps = pd.to_datetime(committed["time"]).diff().dt.total_seconds().dropna()
    assert gaps.min() < 60 and gaps.max() >= 1800, "the trace's timestamps should be irregular"
