"""Runs independent simulation tasks on a pluggable backend: in this process, a local process pool, or Ray.

``compare``, ``sweep`` and ``train --eval-seeds`` hand a backend a module-level function and a list of inputs;
the backend calls ``on_done(index, result)`` in this process as each task finishes (in completion order, so
progress bars move and a sweep can save each cell as it arrives). A task is a pure function of its input (a
scenario with its seed), so every backend gives the same results for the same seeds; only the wall time differs.

- ``local``: a :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` processes, or this process
  alone with ``workers=1``.
- ``ray``: Ray tasks. Without an address an embedded Ray is started on this machine (``workers`` CPUs) and shut
  down afterwards; with ``address`` (or ``RAY_ADDRESS``) the tasks run on that existing cluster, whose nodes
  must have the same dcsim version installed (checked before any task runs).

``make_backend(None, ...)`` picks the backend named by the ``DCSIM_BACKEND`` environment variable if it is set,
else ``ray`` when Ray is installed (the ``ray`` extra) and more than one worker is asked for, else ``local``.
Starting an embedded Ray costs a few seconds (tens on a loaded machine), which pays off for runs of minutes,
not for a test suite's small comparisons: the test suite sets ``DCSIM_BACKEND=local`` and runs Ray where a
test asks for it by name.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

from dcsim.atomic import quiet_worker_signals, shutdown_pool_now
from dcsim.errors import DcsimError

BACKENDS = ("local", "ray")
RAY_INSTALL = "pip install 'dcsim[ray]' (or pip install ray)"

OnDone = Callable[[int, Any], None]


def have_ray() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class LocalBackend:
    """Tasks in a local process pool (``workers`` processes), or in this process when ``workers`` is 1.

    Args:
        workers: Worker processes; default the number of CPU cores.
    """

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = _workers(workers)

    def __enter__(self) -> "LocalBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        """What ran the tasks (written into a comparison's or sweep's metadata)."""
        return {"backend": self.name, "workers": self.workers}

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any], on_done: OnDone) -> None:
        """Call ``fn(item)`` for every item and ``on_done(index, result)`` here as each finishes.

        The first task to raise stops the rest (tasks not yet started are cancelled) and its exception is raised.
        """
        if self.workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                on_done(i, fn(item))
            return
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(items)), initializer=quiet_worker_signals)
        try:
            pending = {pool.submit(fn, item): i for i, item in enumerate(items)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    on_done(pending.pop(future), future.result())
        except BaseException:  # an error, Ctrl-C or SIGTERM: stop the workers now, not after their runs
            shutdown_pool_now(pool)
            raise
        pool.shutdown(wait=True)


class RayBackend:
    """Tasks as Ray remote functions, on an embedded local Ray or on an existing cluster.

    Args:
        workers: CPUs of the embedded Ray (default: the number of CPU cores); ignored with an ``address``,
            where the cluster's own resources decide.
        address: A Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``); default the
            ``RAY_ADDRESS`` environment variable, and without it an embedded local Ray.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        if not have_ray():
            raise DcsimError(f"--backend ray: Ray is not installed; {RAY_INSTALL}, or use --backend local")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = _workers(workers)
        self._started = False

    def __enter__(self) -> "RayBackend":
        import logging

        import ray

        if ray.is_initialized():  # a caller (a notebook, a test) already holds a Ray session: use it as it is
            self._check_workers()
            return self
        if self.address is None:
            # Workers of the embedded Ray import the same dcsim (and the caller's own policy modules) as this
            # process, whatever the working directory or an installed copy elsewhere would give them.
            path = os.pathsep.join(_import_roots() + [p for p in [os.environ.get("PYTHONPATH", "")] if p])
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, runtime_env={"env_vars": {"PYTHONPATH": path}})
        else:
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise DcsimError(f"--address {self.address}: could not join a Ray cluster there "
                                 f"({exc.__class__.__name__}: {str(exc).strip().splitlines()[0]}); start one with "
                                 "`ray start --head` or leave --address out for an embedded local Ray") from None
        self._started = True
        try:
            self._check_workers()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def describe(self) -> dict[str, Any]:
        """What ran the tasks (written into a comparison's or sweep's metadata)."""
        import ray

        cpus = ray.cluster_resources().get("CPU") if ray.is_initialized() else None
        return {"backend": self.name, "address": self.address or "embedded local Ray",
                "workers": int(cpus) if cpus else self.workers}

    def _check_workers(self) -> None:
        """A worker must run the same dcsim as this process: the same files locally, the same version remotely."""
        import ray

        import dcsim

        try:
            version, where = ray.get(ray.remote(_dcsim_identity).remote())
        except Exception as exc:  # noqa: BLE001 - whatever stops a worker from importing dcsim
            raise DcsimError(f"Ray workers cannot run dcsim ({exc.__class__.__name__}: "
                             f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); install the same "
                             f"dcsim ({dcsim.__version__}) on the cluster's nodes") from None
        if version != dcsim.__version__ or (self.address is None and where != _dcsim_identity()[1]):
            raise DcsimError(f"Ray workers import dcsim {version} from {where}, but this process runs dcsim "
                             f"{dcsim.__version__} from {_dcsim_identity()[1]}; install the same dcsim on the "
                             "cluster's nodes")

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any], on_done: OnDone) -> None:
        """Call ``fn(item)`` for every item on Ray and ``on_done(index, result)`` here as each finishes.

        A task that raises stops the rest (they are cancelled); a :class:`DcsimError` from a task is raised here
        with its own message, without Ray's traceback.
        """
        import ray
        from ray.exceptions import RayTaskError

        remote = ray.remote(fn)
        pending = {remote.remote(item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, DcsimError):
                            raise DcsimError(str(cause)) from None
                        raise
                    on_done(index, result)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def make_backend(name: str | None = None, workers: int | None = None, address: str | None = None):
    """The backend ``name`` (``"local"`` or ``"ray"``).

    None picks, in order: ``local`` for a single worker (``workers=1``: everything in this process) unless an
    ``address`` is given; the ``DCSIM_BACKEND`` environment variable when set; ``ray`` when Ray is installed;
    else ``local``.

    Raises:
        DcsimError: an unknown name, ``address`` with the local backend, a bad worker count, or ``ray`` without
            Ray installed.
    """
    if name is not None and name not in BACKENDS:
        raise DcsimError(f"--backend {name!r}: allowed: {', '.join(BACKENDS)}")
    if address and name == "local":
        raise DcsimError(f"--address {address}: joins a Ray cluster, so it needs --backend ray (or no --backend)")
    if name is None:
        chosen = os.environ.get("DCSIM_BACKEND", "").strip()
        if chosen and chosen not in BACKENDS:
            raise DcsimError(f"environment variable DCSIM_BACKEND={chosen!r}: allowed: {', '.join(BACKENDS)}")
        if address:
            name = "ray"
        elif workers is not None and int(workers) == 1:
            name = "local"
        else:
            name = chosen or ("ray" if have_ray() else "local")
    if name == "ray":
        return RayBackend(workers, address)
    return LocalBackend(workers)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when a ``host:port`` (or ``ray://host:port``) address does not accept connections: Ray itself
    would wait minutes for the cluster's control service. ``auto`` and other forms are left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise DcsimError(f"--address {address}: nothing accepts connections there ({exc.__class__.__name__}: "
                         f"{exc}); start a cluster with `ray start --head` or leave --address out for an embedded "
                         "local Ray") from None


def _workers(workers: int | None) -> int:
    n = (os.cpu_count() or 1) if workers is None else int(workers)
    if n < 1:
        raise DcsimError(f"--jobs {workers}: expected at least 1 worker")
    return n


def _dcsim_identity() -> tuple[str, str]:
    """This process's dcsim version and the folder it is imported from."""
    import dcsim

    return dcsim.__version__, str(Path(dcsim.__file__).resolve().parent)


def _import_roots() -> list[str]:
    """Folders a worker needs on its path: the one holding the dcsim package in use, then this process's
    ``sys.path`` entries that are folders outside the Python installation (the caller's own policy modules
    live there; the standard library and site-packages are the workers' own)."""
    import sys

    import dcsim

    installation = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots = [str(Path(dcsim.__file__).resolve().parent.parent)]
    for entry in sys.path:
        folder = Path(entry or os.getcwd()).resolve()
        inside = any(folder == top or top in folder.parents for top in installation)
        if folder.is_dir() and not inside and str(folder) not in roots:
            roots.append(str(folder))
    return roots
