"""Output that is complete or absent: locations checked before work starts, files and folders renamed into place.

A run, comparison or training writes into a temporary sibling folder (``<out>.partial-XXXXXX``) that is
renamed to ``<out>`` only when everything is written, so a folder named ``<out>`` is always a finished one.
``--overwrite`` swaps the whole folder (nothing from the previous contents survives). Single files are written
under a temporary name and moved with :func:`os.replace`, which is atomic on POSIX and Windows: a reader (or a
resume after a kill) sees the old file or the new one, never a torn mix.

SIGTERM is turned into :class:`Terminated` (a ``KeyboardInterrupt``) by :func:`terminate_as_interrupt`, so
Ctrl-C and ``kill`` take the same path: the partial output is kept, its location is attached to the exception
(``partial_output``) and the CLI prints it and exits 130 (SIGINT) or 143 (SIGTERM).

This module imports only the standard library, so policies can use it for their checkpoint files.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
from pathlib import Path
from typing import Any, Iterator

from dcsim.errors import DcsimError

PARTIAL = ".partial"
_PROBE = ".dcsim-write-probe"


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (handled like Ctrl-C).

    Args:
        signum: The signal number received.
    """

    def __init__(self, signum: int):
        super().__init__(signum)  # args == (signum,): SimPy re-raises a process's exception as type(e)(*e.args)
        self.signum = int(signum)

    def __str__(self) -> str:
        return f"signal {self.signum}"


def exit_status(exc: KeyboardInterrupt) -> int:
    """The shell convention for death by a signal: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (the previous handler is restored)."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -------------------------------------------------------------------------------------------- single files
def _temporary_sibling(path: Path) -> Path:
    # keeps the suffix: numpy's savez appends ".npz" to a name that lacks it
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, move it onto ``path`` atomically.

    On any exception the temporary file is removed and ``path`` keeps its previous contents.
    """
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and :func:`os.replace`."""
    path = Path(path)
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# -------------------------------------------------------------------------------------------- folders
def check_output_dir(out: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """Fail early, before any work, when ``out`` cannot become an output folder.

    ``out`` must be a folder (or not exist yet), empty unless ``overwrite``, and no file may lie on the way
    to it. Whether it can really be created and written is probed by :func:`create_partial_dir`.

    Raises:
        DcsimError: Naming ``flag``, the path and what is allowed.
    """
    given, out = Path(out), Path(os.path.abspath(out))  # "a/.." and "." name real folders
    if out.exists():
        if not out.is_dir():
            raise DcsimError(f"{flag} {given}: is a file, not a folder; give a folder to write into (a new one is "
                             "created) or remove the file")
        if not overwrite and any(out.iterdir()):
            raise DcsimError(f"{flag} {given}: directory exists and is not empty; choose another or pass --overwrite "
                             "(which replaces its whole contents)")
        here = Path(os.path.abspath(os.curdir))
        if overwrite and (out == here or out in here.parents or out == Path.home()):
            raise DcsimError(f"{flag} {given}: is the current folder, one above it or the home folder; --overwrite "
                             "replaces the whole folder, so give the run's own folder (e.g. runs/NAME)")
        return out
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise DcsimError(f"{flag} {given}: {ancestor} is a file, so no folder can be created under it; "
                         "give a path under a folder")
    return out


def _create_parents(folder: Path, flag: str, out: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders created (outermost first) so a failure can remove them."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    missing.reverse()
    for p in missing:
        try:
            p.mkdir()
        except FileExistsError:
            if not p.is_dir():
                raise DcsimError(f"{flag} {out}: {p} is a file, so no folder can be created under it") from None
        except OSError as exc:
            remove_empty_dirs(missing)
            raise DcsimError(f"{flag} {out}: cannot create folder {p} ({exc.strerror or exc}); "
                             "give a folder you can write to") from None
    return missing


def remove_empty_dirs(folders: list[Path]) -> None:
    """Remove the given folders, innermost first, where they are empty (undoing :func:`create_partial_dir`)."""
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()


def create_partial_dir(out: Path, flag: str = "--out", name: str | None = None) -> tuple[Path, list[Path]]:
    """Create the temporary sibling folder that ``out``'s contents are written into, and probe that a file can
    be written there.

    Args:
        out: The final output folder.
        flag: The option that named ``out`` (for messages).
        name: The temporary folder's name (default ``<out>.partial-XXXXXX``, unique).

    Returns:
        The temporary folder and the parent folders this call created.

    Raises:
        DcsimError: The folder cannot be created or written (read-only or special file systems, permissions).
    """
    created = _create_parents(out.parent, flag, out)
    work = out.parent / (name or f"{out.name}{PARTIAL}-{secrets.token_hex(3)}")
    try:
        work.mkdir()
        probe = work / _PROBE
        probe.write_bytes(b"dcsim")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            work.rmdir()
        remove_empty_dirs(created)
        raise DcsimError(f"{flag} {out}: cannot write into {out.parent} ({exc.strerror or exc}); "
                         "give a folder you can write to") from None
    return work, created


def discard_dir(folder: Path) -> None:
    """Remove ``folder`` so that a kill half-way through never leaves a half-deleted folder under its name."""
    if not folder.exists():
        return
    doomed = folder.with_name(f"{folder.name}.discard-{secrets.token_hex(3)}")
    os.rename(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def move_into_place(work: Path, out: Path, overwrite: bool, flag: str = "--out") -> None:
    """Rename the finished folder ``work`` to ``out``; with ``overwrite`` an existing ``out`` is swapped out
    whole and deleted (nothing of it survives next to the new files).

    Raises:
        DcsimError: ``out`` became non-empty meanwhile (without ``overwrite``) or cannot be replaced; the
            finished output stays in ``work`` and the message says so.
    """
    old = None
    try:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif out.exists():
            if not overwrite:
                raise DcsimError(f"{flag} {out}: was created by someone else while this ran; the finished "
                                 f"output is in {work}")
            old = out.with_name(f"{out.name}.discard-{secrets.token_hex(3)}")  # on its way out, as discard_dir
            os.rename(out, old)
        os.rename(work, out)
    except OSError as exc:
        raise DcsimError(f"{flag} {out}: cannot move the finished output there ({exc.strerror or exc}); "
                         f"it is complete in {work}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, overwrite: bool = False, flag: str = "--out") -> Iterator[Path]:
    """Check ``out``, create a temporary sibling, yield it, and rename it to ``out`` when the block succeeds.

    Enter it before the work starts: a location that cannot be written fails within a second, before
    anything is simulated. If the block fails, an empty temporary folder is removed (with the parents this
    created); one holding files is kept, and its path is attached to the exception as ``partial_output`` (the
    CLI prints it). ``out`` itself is never touched unless the block succeeds.

    Example:
        >>> with atomic_output_dir(Path("runs/x"), overwrite=False) as work:  # doctest: +SKIP
        ...     (work / "summary.json").write_text("{}")
    """
    out = check_output_dir(Path(out), overwrite, flag)
    work, created = create_partial_dir(out, flag)
    try:
        yield work
    except BaseException as exc:
        if work.is_dir() and any(work.iterdir()):
            exc.partial_output = work  # type: ignore[attr-defined]
        else:
            with contextlib.suppress(OSError):
                work.rmdir()
            remove_empty_dirs(created)
        raise
    move_into_place(work, out, overwrite, flag)


def quiet_worker_signals() -> None:
    """Initializer of worker processes: the parent handles Ctrl-C and SIGTERM and stops the workers itself, so
    a worker ignores SIGINT (the terminal sends it to the whole group) and dies quietly on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):  # Linux: die with the parent, even if it was SIGKILLed
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def shutdown_pool_now(pool: Any) -> None:
    """Stop a ``concurrent.futures.ProcessPoolExecutor`` at once: cancel queued tasks and terminate the workers
    (its own shutdown waits for every running task, which an interrupted comparison must not do)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()


def interrupted_message(exc: BaseException, what: str = "partial output") -> str:
    """What the CLI prints for an interrupt: the signal and where the partial output is (if any)."""
    name = "SIGTERM" if getattr(exc, "signum", signal.SIGINT) == signal.SIGTERM else "Ctrl-C (SIGINT)"
    partial = getattr(exc, "partial_output", None)
    where = (f"; {what} left in {partial} (not a finished result)" if partial is not None
             else "; nothing was written")
    hint = getattr(exc, "resume_hint", "")
    return f"interrupted by {name}{where}{hint}"
