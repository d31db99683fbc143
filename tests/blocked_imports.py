"""A ``sitecustomize.py`` that makes chosen top-level packages fail to import, for "the core imports without the
extra, and the CLI says what to install" tests: put the returned folder first on a subprocess's PYTHONPATH."""
from __future__ import annotations

from pathlib import Path


def import_blocker(tmp_path: Path, *packages: str) -> Path:
    """Write ``tmp_path/block/sitecustomize.py`` raising ImportError for ``packages`` (and their submodules)."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {tuple(packages)!r}:\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, _Block())\n", encoding="utf-8")
    return block
