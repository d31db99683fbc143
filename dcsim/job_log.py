"""The per-job output table, built chunk by chunk: kept whole in memory, or appended to a file as chunks finish.

The dispatcher writes each job's results (status, drop reason, start, finish, energy, node, requeues) into the
chunk of the job table it belongs to when the job ends. A chunk whose jobs have all ended is turned into rows
(:func:`chunk_table`, the same columns and expressions as the whole table) and handed on in row order: kept (the
run's ``jobs`` DataFrame, as before) or written to a spool file (CSV appends, or Parquet row groups) that
:func:`dcsim.outputs.write_run` moves into the run directory. Either way :class:`JobTotals` collects what the
summary and the episode reward read from the table, so a streamed run's summary is the whole table's.

Memory: the chunks from the oldest job still in the system to the newest arrival, plus :class:`JobTotals`'s
per-job arrays (waits, slowdowns, completed values, times in system: 8 bytes each per job).
"""
from __future__ import annotations

import array
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.dispatch import DropReason, JobStatus

_STATUS = [s.name.lower() for s in JobStatus]
_REASON = [r.name.lower() for r in DropReason]
_COMPLETED, _DROPPED, _KILLED, _FUTURE = (int(JobStatus.COMPLETED), int(JobStatus.DROPPED), int(JobStatus.KILLED),
                                          int(JobStatus.FUTURE))
_EXPIRED = int(DropReason.DEADLINE_EXPIRED)


class Chunk:
    """One chunk of the job table: its input rows and its jobs' results so far (array.array, by row)."""

    __slots__ = ("frame", "base", "n", "live", "status", "reason", "start", "finish", "energy", "node", "requeues")

    def __init__(self, frame: pd.DataFrame, base: int, with_node: bool, with_requeues: bool):
        n = len(frame)
        self.frame, self.base, self.n, self.live = frame, base, n, n
        self.status = array.array("b", [_FUTURE]) * n
        self.reason = array.array("b", [0]) * n
        self.start = array.array("d", [np.nan]) * n
        self.finish = array.array("d", [np.nan]) * n
        self.energy = array.array("d", [0.0]) * n
        self.node = array.array("q", [-1]) * n if with_node else None
        self.requeues = array.array("q", [0]) * n if with_requeues else None


def chunk_table(chunk: Chunk, horizon_s: float) -> pd.DataFrame:
    """A chunk's rows of the job table: the input columns plus status, times, slowdown, deadline misses, energy
    (and ``node`` with a power-delivery tree, ``requeues`` with failures)."""
    df = chunk.frame.copy()
    status = np.frombuffer(chunk.status, dtype=np.int8)
    reason = np.frombuffer(chunk.reason, dtype=np.int8)
    start = np.frombuffer(chunk.start, dtype=np.float64)
    finish = np.frombuffer(chunk.finish, dtype=np.float64)
    arrival = df["arrival_s"].to_numpy(float)
    duration = df["work_gpu_s"].to_numpy(float) / df["gpus"].to_numpy(np.int64)
    deadline = np.nan_to_num(df["deadline_s"].to_numpy(float), nan=np.inf)
    done = status == _COMPLETED
    killed = status == _KILLED
    ended = done | (status == _DROPPED) | killed
    df["status"] = pd.Categorical.from_codes(status, categories=_STATUS)
    df["drop_reason"] = pd.Categorical.from_codes(reason, categories=_REASON)
    df["start_s"] = start
    df["finish_s"] = np.where(ended, finish, np.nan)
    df["wait_s"] = start - arrival
    df["duration_full_clock_s"] = duration
    df["slowdown"] = np.where(done, (finish - arrival) / duration, np.nan)
    pending = ~ended & (status != _FUTURE)
    df["deadline_missed"] = np.isfinite(deadline) & (
        (done & (finish > deadline)) | (reason == _EXPIRED) | (pending & (deadline < horizon_s)))
    df["energy_j"] = np.where(done | killed, np.frombuffer(chunk.energy, dtype=np.float64), np.nan)
    if chunk.node is not None:  # with a power-delivery tree: the node each job ran on (-1: not placed)
        df["node"] = np.frombuffer(chunk.node, dtype=np.int64).copy()
    if chunk.requeues is not None:  # with failures: how often each job was stopped and queued again
        df["requeues"] = np.frombuffer(chunk.requeues, dtype=np.int64).copy()
    return df


@dataclass
class JobTotals:
    """What the summary and the episode reward read from the job table, collected chunk by chunk.

    Counts are summed; the arrays (waits of started jobs and slowdowns of completed ones after the warm-up,
    completed jobs' values, arrived jobs' times in the system) are the whole table's, in row order, so means,
    percentiles and sums come out the same as over the whole table.
    """

    warmup_s: float
    horizon_s: float
    status_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_STATUS, 0))
    counted: int = 0
    deadline_misses: int = 0
    _waits: list = field(default_factory=list)
    _slowdown: list = field(default_factory=list)
    _value: list = field(default_factory=list)
    _latency: list = field(default_factory=list)
    _drops: list = field(default_factory=list)

    def add(self, jobs: pd.DataFrame) -> None:
        """Add the rows of ``jobs`` (a chunk of the job table, or all of it)."""
        status = _names(jobs["status"])
        counted = (jobs["arrival_s"] >= self.warmup_s).to_numpy()
        completed = status == "completed"
        names, counts = np.unique(status, return_counts=True)
        for name, count in zip(names.tolist(), counts.tolist()):
            self.status_counts[str(name)] += int(count)
        self.counted += int(counted.sum())
        self.deadline_misses += int(jobs["deadline_missed"].sum())
        self._waits.append(jobs["wait_s"].to_numpy(float)[counted & jobs["start_s"].notna().to_numpy()])
        self._slowdown.append(jobs["slowdown"].to_numpy(float)[counted & completed])
        self._value.append(jobs["value_tokens"].to_numpy(float)[completed])
        self._drops.append(_names(jobs["drop_reason"])[status == "dropped"])
        arrived = status != "future"
        finish = jobs["finish_s"].to_numpy(float)
        end = np.where(np.isnan(finish), self.horizon_s, finish)
        self._latency.append(end[arrived] - jobs["arrival_s"].to_numpy(float)[arrived])

    @classmethod
    def of_table(cls, jobs: pd.DataFrame, warmup_s: float, horizon_s: float) -> "JobTotals":
        totals = cls(warmup_s, horizon_s)
        totals.add(jobs)
        return totals

    @staticmethod
    def _joined(parts: list) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    def waits(self) -> np.ndarray:
        return self._joined(self._waits)

    def slowdowns(self) -> np.ndarray:
        return self._joined(self._slowdown)

    def value_completed(self) -> float:
        """Tokens paid for completed jobs (summed as pandas sums the table's column)."""
        return float(pd.Series(self._joined(self._value), dtype=float).sum())

    def latency_s(self) -> float:
        """Arrived jobs' time in the system (arrival to completion, drop or the horizon), summed."""
        return float(self._joined(self._latency).sum())

    def drops_by_reason(self) -> pd.Series:
        return pd.Series(np.concatenate(self._drops) if self._drops else np.zeros(0, dtype=object),
                         dtype=object).value_counts()


def _names(column: pd.Series) -> np.ndarray:
    """A categorical (or string) column's values as an object array of str, without pandas' string conversion
    (which goes through pyarrow for a categorical column and costs more than the rest of the totals)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = np.asarray([str(c) for c in column.cat.categories] + ["nan"], dtype=object)
        return categories[column.cat.codes.to_numpy()]  # code -1 (missing): "nan", as astype(str) writes it
    return column.astype(str).to_numpy(object)


class JobFile:
    """A streamed run's job table, spooled to a temporary file until :meth:`move_to` puts it in the run folder
    (the temporary folder is removed with this object if it never is)."""

    def __init__(self, fmt: str):
        self.format = fmt
        self._dir = Path(tempfile.mkdtemp(prefix="dcsim-jobs-"))
        self.path = self._dir / f"jobs.{fmt}"
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        self._csv = None
        self._parquet = None
        self.rows = 0

    def append(self, df: pd.DataFrame) -> None:
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        else:
            if self._csv is None:
                self._csv = open(self.path, "w", encoding="utf-8", newline="")
                df.to_csv(self._csv, index=False)
            else:
                df.to_csv(self._csv, index=False, header=False)
        self.rows += len(df)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._csv is not None:
            self._csv.close()
            self._csv = None

    def move_to(self, folder: Path) -> Path:
        """Move the table into ``folder`` as ``jobs.csv`` or ``jobs.parquet``; returns its path."""
        self.close()
        target = Path(folder) / self.path.name
        shutil.move(str(self.path), target)
        self.path = target
        self._cleanup()
        return target

    def read(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The table (or some of its columns) read back; floats exactly as they were."""
        self.close()
        if self.format == "parquet":
            return pd.read_parquet(self.path, columns=columns, engine="pyarrow")
        return pd.read_csv(self.path, usecols=columns, float_precision="round_trip")


class JobLog:
    """Collects the job table chunk by chunk and hands finished chunks on in row order.

    Args:
        horizon_s: The run's horizon (pending jobs past their deadline by then count as misses).
        warmup_s: Jobs arriving earlier are left out of the wait statistics.
        with_node: Record each job's node (a power-delivery tree is configured).
        with_requeues: Record how often each job was requeued (failures are configured).
        keep: Keep the whole table in memory (the run's ``jobs``).
        spool: Else the file the finished chunks are appended to; with neither, only :class:`JobTotals` are kept.
    """

    def __init__(self, horizon_s: float, warmup_s: float, with_node: bool, with_requeues: bool,
                 keep: bool = True, spool: JobFile | None = None):
        self.horizon_s = horizon_s
        self.with_node, self.with_requeues = with_node, with_requeues
        self.keep = keep
        self.spool = spool
        self.chunks: dict[int, Chunk] = {}  # open chunks by index
        self.totals = JobTotals(warmup_s, horizon_s)
        self._kept: list[pd.DataFrame] = []
        self._next = 0  # the next chunk to hand on
        self._first: pd.DataFrame | None = None  # an empty input frame, for a table with no rows

    def open(self, index: int, frame: pd.DataFrame, base: int) -> Chunk:
        if self._first is None:
            self._first = frame.iloc[:0]
        chunk = self.chunks[index] = Chunk(frame, base, self.with_node, self.with_requeues)
        return chunk

    def chunk_ended(self, index: int) -> None:
        """Every job of chunk ``index`` has ended: hand on the chunks that are now ready, in order."""
        chunks = self.chunks
        while self._next in chunks and chunks[self._next].live == 0:
            self._hand_on(chunks.pop(self._next))
            self._next += 1

    def _hand_on(self, chunk: Chunk) -> None:
        df = chunk_table(chunk, self.horizon_s)
        self.totals.add(df)
        if self.keep:
            self._kept.append(df)
        elif self.spool is not None:
            self.spool.append(df)

    def close(self, empty: pd.DataFrame) -> pd.DataFrame | None:
        """Hand on every chunk still open (pending jobs as they are now); returns the whole table when kept."""
        for index in sorted(self.chunks):
            self._hand_on(self.chunks.pop(index))
        if not self.keep:
            if self.spool is not None:
                if self.spool.rows == 0:
                    self.spool.append(self._empty_table(empty))
                self.spool.close()
            return None
        if not self._kept:
            df = self._empty_table(empty)
            self.totals.add(df)
            return df
        return pd.concat(self._kept, ignore_index=True) if len(self._kept) > 1 else self._kept[0].reset_index(drop=True)

    def _empty_table(self, empty: pd.DataFrame) -> pd.DataFrame:
        frame = self._first if self._first is not None else empty
        return chunk_table(Chunk(frame.iloc[:0], 0, self.with_node, self.with_requeues), self.horizon_s)
