"""The test command: README and .ci/run run the same one, and the `test` extra installs the plugin it uses."""
from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    """The command in the fenced block after "Set up and run the tests:" in README.md."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"Set up and run the tests:\n+```bash\n(.+?)\n```", readme)
    assert match, "README.md has no 'Set up and run the tests:' block"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = _readme_test_command()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert command in ci_lines, f".ci/run does not run the README's test command: {command}"


def test_the_test_extra_installs_the_plugins_the_command_uses():
    command = _readme_test_command()
    pytest_args = shlex.split(command.split("python -m pytest", 1)[1])
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    extra = {re.split(r"[<>=!~ ]", line.strip(), maxsplit=1)[0]
             for line in cfg["options.extras_require"]["test"].strip().splitlines()}
    assert "pytest" in extra
    if "-n" in pytest_args or "--dist" in pytest_args:  # pytest-xdist's options
        assert "pytest-xdist" in extra, "the README's test command uses pytest-xdist; add it to the test extra"
        # the xdist groups that keep a shared fixture (or Ray) on one worker take effect only with loadgroup
        dist = pytest_args[pytest_args.index("--dist") + 1] if "--dist" in pytest_args else "load"
        assert dist == "loadgroup", f"the README's test command distributes with --dist {dist}, not loadgroup"
