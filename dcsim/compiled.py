"""The compiled per-job path: when a run takes it, and how it stays in step with SimPy.

A policy that decides nothing at events (``always_on``, or any policy overriding none of ``bid``, ``admit``,
``on_idle``) leaves the engine a fixed per-job path: an arrival queues and starts a job, a completion frees its
GPUs and starts the next. So does a built-in rule, whose decisions at events are a fixed formula the kernel can
make itself (its :class:`dcsim.kernel_rules.KernelRule`: bids at job starts, admissions, idle GPUs put to sleep,
and the wake-ups that follow). So do tabular Q-learning (:func:`learner_rule`) and the DQN (:func:`dqn_rule`): the
kernel decides and learns for them at job starts and market rounds, with numpy's own loops (:mod:`dcsim.npmath`)
wherever the Python path calls numpy (the DQN's gradient steps run in Python, called by the kernel). :mod:`dcsim.kernel` does that path in numba-compiled code, bit for bit as the Python path
(:class:`dcsim.dispatch.Dispatcher` and friends) does it, while everything else (supply changes, market rounds and
the policy's other calls there, the time series) stays in SimPy processes as before.

Ordering is SimPy's, exactly: SimPy handles events by ``(time, priority, event id)``, ids counting every
scheduling. :class:`KernelEnvironment` takes its ids from a counter shared with the kernel, which draws one
wherever the Python path would schedule a timeout (the next arrival, a completion timer), and before each SimPy
event it lets the kernel handle every job event that orders before it. Same-instant ties between jobs and rounds
therefore come out as on the Python path, and so do the event counts.

Which runs (:func:`compiled_reason`): a policy with a compiled form (or none needed), event-timed decisions, no
learning feedback other than the compiled learners', no event trace, the round-level ledger, GPUs starting idle,
and none of the facility parts (power-delivery tree, failures, dispatched battery, cooling setpoint control); a
supply battery and the cooling plant with fixed setpoints are fine. By default only runs of at least
:data:`MIN_JOBS` jobs take it. numba is an optional dependency (``pip install 'dcsim[fast]'``); without it, or with
``DCSIM_COMPILED=0`` in the environment, every run takes the Python path. ``tests/test_compiled.py``,
``tests/test_compiled_rules.py`` and ``tests/test_compiled_learner.py`` check that both paths write identical
outputs.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import weakref
from collections import deque
from heapq import heappush

import numpy as np
import simpy

from dcsim import kernel_rules as kr
from dcsim import npmath
from dcsim.cluster import ENTERING_SLEEP, SLEEP, WAKING
from dcsim.decisions import DecisionBlock
from dcsim.dispatch import RUNNING, STARTING, Dispatcher
from dcsim.errors import DcsimError
from dcsim.kernel_rules import KernelRule, kernel_rule_of
from dcsim.learning import ActionKind
from dcsim.policy import Bids

#: Set to 0 (or false/off/no) to make every run take the Python path; to 1 (true/on/yes) to make every run that can
#: take the compiled one, however few its jobs.
ENV_SWITCH = "DCSIM_COMPILED"
#: With neither, a run takes the compiled path from this many jobs on: loading numba and the kernel's cached machine
#: code costs ~0.5 s, which the Python path spends on ~10k jobs (~45 µs a job).
MIN_JOBS = 10_000
_LOG_NAMES = np.array(["bid", "admit", "on_idle"], dtype=object)  # dcsim.kernel.LOG_METHODS, without numba


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


#: The methods of a learner's per-decision path the compiled form stands for: an instance may not replace any of
#: them (a subclass is refused altogether).
_LEARNER_PATH = ("bid", "_bid_few", "_features", "_decide", "_decide_few", "_consume", "_consume_few", "choose",
                 "choose_rows", "states", "_state_rows", "_state_specs", "learn", "learn_rows", "learning_round",
                 "_sync")


def _learner_common(scenario, policy, cls) -> str | None:
    """Why the learner ``policy`` has no compiled form as a ``cls`` (not ``cls``'s own per-decision path, a rich
    action layout, a market the kernel's features cannot scale by, numpy's loops); None when it has."""
    if type(policy) is not cls or any(name in vars(policy) for name in _LEARNER_PATH):
        return f"the policy decides at events and is not {cls.__name__}'s own per-decision path"
    if policy.layout.rich:
        return f"the learner's action layout is {policy.layout.name!r} (only 'bid' is compiled)"
    spec = scenario.cluster.power_spec()
    if not (scenario.market.base_price_tokens_per_kwh > 0 and (spec["tdp_w"] - spec["idle_w"]) * spec["utilisation"] > 0):
        return "market.base_price_tokens_per_kwh is not > 0 or the GPU's full power is not above idle"
    return npmath.numpy_loops().learner_reason


def _learner_bid(policy, bid: int) -> KernelRule:
    return KernelRule(bid=bid, bid_params=(math.nan, math.nan, math.nan, policy.cheap_multiple,
                                           policy.block_limit_multiple, policy.pace_safety))


def learner_rule(scenario, policy) -> tuple[KernelRule | None, str | None]:
    """The compiled form of a tabular Q-learner (:class:`~policies.qlearning.QLearning` with the ``bid`` action
    layout, learning or frozen): ``(rule, None)``, or ``(None, why not)``."""
    from policies.qlearning import QLearning

    why = _learner_common(scenario, policy, QLearning)
    if why is not None:
        return None, why
    if any(how not in (0, 1) for how, *_ in policy._state_specs()):
        return None, "the learner's bins read a derived column the kernel does not compute"
    if policy.initial_q == 0 and math.copysign(1.0, policy.initial_q) < 0:
        return None, "the learner's initial_q is -0.0 (which zero numpy's max returns is its own business)"
    if policy.alpha_schedule not in ("visits", "constant") or policy.schedule.kind not in ("exponential", "linear"):
        return None, "the learner's learning-rate or exploration schedule has no compiled form"
    return _learner_bid(policy, kr.BID_QTABLE), None


def dqn_rule(scenario, policy) -> tuple[KernelRule | None, str | None]:
    """The compiled form of a :class:`~policies.dqn.DQN` with the ``bid`` action layout, learning or frozen, with
    any learner (its gradient steps stay in Python): ``(rule, None)``, or ``(None, why not)``."""
    from policies.dqn import DQN

    why = _learner_common(scenario, policy, DQN)
    if why is not None:
        return None, why
    if policy.schedule.kind not in ("exponential", "linear"):
        return None, "the learner's exploration schedule has no compiled form"
    if npmath.numpy_loops().float32_reason:
        return None, npmath.numpy_loops().float32_reason
    return _learner_bid(policy, kr.BID_DQN), None


def compiled_rule(scenario, policy) -> tuple[KernelRule | None, str | None]:
    """The compiled form of ``policy``'s per-event decisions in ``scenario``: a rule's (:func:`kernel_rule_of`), a
    Q-learner's (:func:`learner_rule`) or a DQN's (:func:`dqn_rule`); ``(None, why not)`` where there is none."""
    from policies.qlearning import QLearning

    if isinstance(policy, QLearning):
        return learner_rule(scenario, policy)
    dqn = sys.modules.get("policies.dqn")  # (a DQN's module is loaded already: no torch import for other policies)
    if dqn is not None and isinstance(policy, dqn.DQN):
        return dqn_rule(scenario, policy)
    return kernel_rule_of(policy)


def compiled_reason(scenario, policy) -> str | None:
    """Why a run of ``scenario`` under ``policy`` cannot take the compiled path; None when it can."""
    rule, why = compiled_rule(scenario, policy)
    if rule is None:
        return why
    spec = scenario.cluster.power_spec()
    tr = scenario.cluster.transitions
    if rule.on_idle == kr.IDLE_SLEEP and not (tr.sleep_s > 0 and tr.wake_s > 0):
        return "the policy puts GPUs to sleep and a power-state transition takes no time (cluster.transitions)"
    if rule.bid == kr.BID_TWO_BLOCKS and not spec["min_cap_w"] >= spec["idle_w"]:
        return "the policy bids a block up to the minimum cap, which lies below idle power"
    paces = rule.bid == kr.BID_PACE or (rule.bid == kr.BID_ACTIONS and kr.ACTION_PACE in rule.bid_params[1:3])
    if paces and npmath.numpy_loops().reason:  # the pace bid's two powers are numpy's, through its own loop
        return npmath.numpy_loops().reason
    if policy.wants_feedback and rule.bid not in kr.LEARNER_BIDS:
        return "the policy learns from per-event feedback"
    if scenario.decision_timing != "event":
        return "decision_timing is fixed_step"
    if scenario.outputs.trace_events:
        return "outputs.trace_events is on"
    if scenario.outputs.ledger_detail != "round":
        return "outputs.ledger_detail is agent"
    if scenario.cluster.initial_state != "idle":
        return f"cluster.initial_state is {scenario.cluster.initial_state}"
    fac = scenario.facility
    for name in ("topology", "failures", "battery"):
        if getattr(fac, name) is not None:
            return f"facility.{name} is configured"
    if fac.cooling is not None and fac.cooling.setpoint_control is not None:
        return "facility.cooling.setpoint_control is configured"
    return None


def use_compiled(scenario, policy, compiled: bool | None, n_jobs: int | None = None) -> bool:
    """Whether this run takes the compiled path. ``compiled``: None = when it can (numba installed, the run
    eligible) and it pays (at least :data:`MIN_JOBS` jobs, or ``DCSIM_COMPILED=1``), unless ``DCSIM_COMPILED=0``;
    True = it must (a clear error otherwise); False = never. ``n_jobs``: the run's jobs (None: unknown, many)."""
    if compiled is False:
        return False
    if compiled is None:
        switch = os.environ.get(ENV_SWITCH, "").strip().lower()
        big = n_jobs is None or n_jobs >= MIN_JOBS or switch in ("1", "true", "on", "yes")
        if switch in ("0", "false", "off", "no") or not big or not numba_available():
            return False  # (numba is imported, and numpy's loops probed, only for a run that would use them)
        return compiled_reason(scenario, policy) is None
    reason = compiled_reason(scenario, policy)
    if reason is not None:
        raise DcsimError(f"this run cannot take the compiled per-job path: {reason}")
    if not numba_available():
        raise DcsimError("the compiled per-job path needs numba: pip install 'dcsim[fast]'")
    return True


_log = logging.getLogger(__name__)
_HOOK_KEYS = itertools.count(1)
_COLD_NOTED = False


def note_first_compile(K) -> None:
    """Say so (a warning on the ``dcsim.compiled`` logger: stderr unless logging is configured) when this process
    is about to compile the kernel because numba's disk cache holds none for this dcsim: about a minute, once per
    installation, silent otherwise. Best effort: a numba whose cache does not read as expected says nothing."""
    global _COLD_NOTED
    if _COLD_NOTED or K.run_until.signatures:
        return
    _COLD_NOTED = True
    try:
        cache = K.run_until._cache._cache_file
        cold = not cache._load_index()
        where = os.path.dirname(cache._index_path)
    except Exception:  # noqa: BLE001 - numba internals: no note rather than a failed run
        return
    if cold:
        _log.warning("dcsim: compiling the per-job kernel with numba (about a minute, once per installation; "
                     "cached in %s)", where)


def _no_learner() -> tuple:
    """The kernel's learner tuple ``L`` without a learner: empty arrays of its types."""
    f1, f2, f3, i1, i2, i3 = np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0, 0)), np.zeros(0, np.int64), \
        np.zeros((0, 0), np.int64), np.zeros((0, 0, 0), np.int64)
    return (f3, f3, i2, f2, i1, f1, f1, f1, f1, f1, f1, np.zeros(0, np.bool_), f1, f1, f1, f1, f1, f1, f2, i3, i3,
            np.zeros(0, np.bool_), np.zeros((0, 0), np.float32), i1, f1, f1, i1, f2, i2, i1, i1, i1, f1, f1,
            np.zeros((0, 0), np.float32), i1, f1, np.zeros((0, 0), np.float32), f1, np.zeros(0, np.bool_), f1,
            *_no_dqn())


def _no_dqn() -> tuple:
    """The DQN's part of ``L`` without a DQN (a Q-learner's, or no learner): empty arrays of its types."""
    g1 = np.zeros(0, np.float32)
    return (g1, np.zeros((0, 0), np.int64), g1, *_ring_arrays(None, 0))


def _ring_arrays(buffer, n_features: int) -> tuple:
    """The arrays of a :class:`~dcsim.learning.ReplayBuffer` (``data``: obs, action, reward, next_obs, dt_s,
    terminal), or empty ones for None."""
    if buffer is None:
        return (np.zeros((0, n_features), np.float32), np.zeros(0, np.int64), np.zeros(0),
                np.zeros((0, n_features), np.float32), np.zeros(0), np.zeros(0, np.bool_))
    d = buffer.data
    return d["obs"], d["action"], d["reward"], d["next_obs"], d["dt_s"], d["terminal"]


class KernelEnvironment(simpy.Environment):
    """A SimPy environment whose event ids come from the kernel's shared counter and which lets the kernel handle
    the job events due before each event it processes."""

    def __init__(self, state: np.ndarray):
        super().__init__()
        self._seq = state  # element 0 (kernel.SEQ): the next event id
        self.catch_up = None  # (time, priority, event id) -> None, set when the run starts

    def schedule(self, event, priority=simpy.events.NORMAL, delay=0) -> None:
        seq = self._seq
        eid = int(seq[0])
        seq[0] = eid + 1
        heappush(self._queue, (self._now + delay, priority, eid, event))

    def step(self) -> None:
        if self.catch_up is not None and self._queue:
            t, priority, eid, _ = self._queue[0]
            self.catch_up(t, priority, eid)
        super().step()


class CompiledDispatcher(Dispatcher):
    """:class:`Dispatcher` whose per-job path runs in :mod:`dcsim.kernel`.

    The per-slot buffers are the Python dispatcher's own (so pending jobs' results are written as before); the
    queue, the completion heap, the timers, the job → GPUs map, the free slots and the idle pool live in arrays
    the kernel owns. Round-time calls (:meth:`dispatch`, :meth:`apply_allocations`, :meth:`arm`,
    :meth:`drop_expired_queued`) go to the kernel too.
    """

    def __init__(self, *args, state: np.ndarray, chunks, meter, rule: KernelRule | None = None, **kwargs):
        from dcsim import kernel as K

        note_first_compile(K)
        self._K = K
        self.ist = state
        self.fst = np.zeros(K.N_FST)
        self._kmax = 1
        self._kver = None
        self._chunk_iter = chunks
        self.meter = meter
        self.rule = rule or KernelRule()
        self.decision_rows: list[tuple] = []  # the decision log the kernel's rows go to (wired by the core)
        self._started = False
        self._want_src = None
        n = max(1, args[3].n_gpus if len(args) > 3 else kwargs["cluster"].n_gpus)
        # pending wakes and held jobs are per slot (grown with the slots); the rest per GPU
        self._D = [np.zeros(0, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(0, np.int64),
                   np.zeros(2 * n + 64), np.zeros(2 * n + 64, np.int64), np.zeros(2 * n + 64, np.int64),
                   np.zeros((2, n)), np.zeros((2, n), np.int64), np.zeros((2, n), np.int64),
                   np.zeros((2, n), np.int64), np.zeros((2, n), np.int64)]
        # numpy's own loops (the pace bid's powers; a learner's features and reward), checked; its matrix product
        # takes as many rows as a job has GPUs
        self._loops = npmath.numpy_loops().scratch(n)
        self._D += [self._loops.addr, self._loops.io, self._loops.ib, _no_learner()]
        self.learner = None  # a learner (rule BID_QTABLE or BID_DQN), attached by the core with attach_learner
        self._hook_key: int | None = None  # a DQN's learning-round hook in dcsim.kernel.HOOKS
        self._hour0 = 0.0
        self._round_out = None
        super().__init__(*args, **kwargs)
        self._D = tuple(self._D)
        heap = max(1024, 4 * n + 16)
        self._H = (np.zeros(heap), np.zeros(heap, np.int64), np.zeros(heap, np.int64), np.zeros(heap, np.int64))
        self._T = (np.zeros(256), np.zeros(256), np.zeros(256, np.int64))
        self._C = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0),
                   np.zeros(0, np.int8))
        self._idle = np.zeros(n, np.int64)

    # the queue and the running jobs, for anything that reads them (the engine uses the counts)
    @property
    def queue(self) -> deque:
        ist, q = self.ist, self._kqueue
        head, size = int(ist[self._K.Q_HEAD]), q.size
        return deque(int(q[(head + i) % size]) for i in range(int(ist[self._K.Q_LEN])))

    @queue.setter
    def queue(self, value) -> None:
        if len(value):
            raise ValueError("the compiled dispatcher's queue is the kernel's")

    @property
    def job_gpus(self) -> dict[int, list[int]]:
        stat = self.status
        running = np.flatnonzero((stat == STARTING) | (stat == RUNNING)).tolist()
        return {j: self._kjg[j, :int(self.job_gpus_n[j])].tolist() for j in running}

    @job_gpus.setter
    def job_gpus(self, value) -> None:
        if len(value):
            raise ValueError("the compiled dispatcher's jobs are the kernel's")

    # the jobs the policy holds back (kernel-owned: an arrival's admission adds to them, a round rewrites them)
    @property
    def deferred(self) -> list[int]:
        return self._D[3][:int(self.ist[self._K.DEF_N])].tolist()

    @deferred.setter
    def deferred(self, value) -> None:
        self._D[3][:len(value)] = value
        self.ist[self._K.DEF_N] = len(value)

    def queue_length(self) -> int:
        return int(self.ist[self._K.Q_LEN])

    def running_count(self) -> int:
        return int(self.ist[self._K.RUNNING_N])

    def kernel_events(self) -> int:
        """Job events (arrivals, completion timers) the kernel handled."""
        return int(self.ist[self._K.N_EVENTS])

    # ------------------------------------------------------------------------------------ buffers
    def _grow(self, slots: int) -> None:
        K = self._K
        old = self._cap
        super()._grow(slots)
        new = self._cap
        ist = self.ist
        ver = np.zeros(new, np.int64)
        jg = np.full((new, self._kmax), -1, np.int64)
        free = np.zeros(new, np.int64)
        queue = np.zeros(new, np.int64)
        nfree = int(ist[K.N_FREE])
        if self._kver is not None:
            ver[:old] = self._kver
            jg[:old] = self._kjg
            free[:nfree] = self._kfree[:nfree]
            head, n, size = int(ist[K.Q_HEAD]), int(ist[K.Q_LEN]), self._kqueue.size
            queue[:n] = self._kqueue[(head + np.arange(n)) % size]
            ist[K.Q_HEAD] = 0
        free[nfree:nfree + new - old] = np.arange(new - 1, old - 1, -1)  # the lowest new slot is taken first
        ist[K.N_FREE] = nfree + new - old
        self._kver, self._kjg, self._kfree, self._kqueue = ver, jg, free, queue
        D = list(self._D)
        for i in (0, 3):  # pending wakes, held jobs: per slot
            grown = np.zeros(new, np.int64)
            grown[:D[i].size] = D[i]
            D[i] = grown
        self._D = tuple(D) if isinstance(self._D, tuple) else D
        out = 2 * new + 2 * self.cluster.n_gpus + 64
        kept = int(ist[K.OUT_N])
        old_out = getattr(self, "_O", None)
        self._O = (np.zeros(out, np.int64), np.zeros(out, np.int8), np.zeros(out, np.int8), np.zeros(out),
                   np.zeros(out), np.zeros(out))
        if old_out is not None and kept:
            for a, b in zip(self._O, old_out):
                a[:kept] = b[:kept]
        self._mark_view = np.frombuffer(self._mark, dtype=np.float64)
        self._S = (self.gid, self.arrival_s, self.job_gpus_n, self.deadline_s, self.value_tokens, self.beta,
                   self.duration_full_s, self.status, self.drop_reason, self.start_s, self.finish_s, self.remaining_s,
                   self.rate, self.last_s, self.job_alloc_w, self.job_energy_j, self._mark_view, self._kver, self._kjg,
                   self._kfree, self._kqueue)

    def _widen(self, kmax: int) -> None:
        jg = np.full((self._cap, kmax), -1, np.int64)
        jg[:, :self._kmax] = self._kjg
        self._kjg, self._kmax = jg, kmax
        S = list(self._S)
        S[18] = jg
        self._S = tuple(S)

    def _grow_heap(self) -> None:
        n = int(self.ist[self._K.HEAP_N])
        size = 2 * self._H[0].size + 2 * self.cluster.n_gpus
        H = tuple(np.zeros(size, a.dtype) for a in self._H)
        for a, b in zip(H, self._H):
            a[:n] = b[:n]
        self._H = H

    def _grow_timers(self) -> None:
        n = int(self.ist[self._K.TIMER_N])
        size = 2 * self._T[0].size
        T = tuple(np.zeros(size, a.dtype) for a in self._T)
        for a, b in zip(T, self._T):
            a[:n] = b[:n]
        self._T = T

    def _room(self, pushes: int) -> None:
        """Room in the heap for ``pushes`` more entries and in the timers for one more."""
        K = self._K
        while int(self.ist[K.HEAP_N]) + pushes + 2 > self._H[0].size:
            self._grow_heap()
        while int(self.ist[K.TIMER_N]) + 2 > self._T[0].size:
            self._grow_timers()

    # ------------------------------------------------------------------------------------ a Q-learner
    def attach_learner(self, policy, hour0: float) -> None:
        """The learner the kernel decides for (rule ``BID_QTABLE`` or ``BID_DQN``), and the clock's hour at t = 0."""
        self.learner, self._hour0 = policy, float(hour0)

    def _learner_tuple(self) -> tuple:
        """The kernel's ``L``: the policy's tables (a Q-learner) or acting network and replay (a DQN), bins,
        transition builder and stream, the reward meter's buffers (all the same memory: the Python side's rounds
        read and write them too)."""
        K, p, rm = self._K, self.learner, self.rewards
        dqn = self.rule.bid == kr.BID_DQN
        n = rm.n
        lf = np.zeros(K.N_LF)
        if dqn:
            empty = _no_learner()
            q_part, visits = empty[:5], empty[19:21]  # no tables, bins or visit counts
            acting = p.acting
            if acting is None:
                raise RuntimeError("a compiled DQN needs its acting network as numpy weights (DQN.acting)")
            width = int(acting.layout[:, 1].max())
            self._acting_flat = acting.flat
            # the scratch of the network's passes: the deciding rows' features, then two blocks of hidden values
            dqn_part = (acting.flat, acting.layout, np.zeros(n * (len(p.features) + 2 * width), np.float32),
                        *_ring_arrays(p.replay, len(p.features)))
            lf[K.LF_DQN], lf[K.LF_LEARN_EVERY] = 1.0, p.learn_every_s
        else:
            q_part, visits = self._q_tables(p)
            dqn_part = _no_dqn()
            a = p.table
            lf[K.LF_DOUBLE], lf[K.LF_PER_AGENT] = p.table_b is not None, p.per_agent
            lf[K.LF_Q_GAMMA], lf[K.LF_Q_TAU], lf[K.LF_ALPHA] = a.gamma, a.tau_s, a.alpha
            lf[K.LF_VISITS], lf[K.LF_DECAY] = a.alpha_schedule == "visits", a.alpha_decay_exponent
            lf[K.LF_CONSISTENT] = p.consistent
        lf[K.LF_N], lf[K.LF_LEARNING], lf[K.LF_GAMMA], lf[K.LF_TAU] = n, p.learning, p.gamma, p.tau_s
        sch = p.schedule
        lf[K.LF_EPS_START], lf[K.LF_EPS_END], lf[K.LF_EPS_DECAY] = sch.start, sch.end, sch.decay_decisions
        lf[K.LF_EPS_EXP], lf[K.LF_N_BID] = sch.kind == "exponential", p.layout.size(ActionKind.BID)
        lf[K.LF_TEAM] = rm.team_fraction
        bld = p.builder
        self._rng_kept = p.rng  # the kernel holds its bit generator's addresses: keep the generator alive
        return (*q_part, rm.value, rm.misses, rm.settled, rm.lat_off, rm.lat_rate, rm.last_s,
                rm.first, rm.snap.reshape(-1), rm.snap_shared.reshape(-1), rm.snap_cluster.reshape(-1), rm.returns,
                np.ascontiguousarray(rm.weights, dtype=np.float64), lf, np.zeros((n, bld.obs.shape[1])), *visits,
                bld.open, bld.obs, bld.action, bld.reward, bld.elapsed_s,
                npmath.bit_generator_addresses(p.rng), np.zeros((2 * n, 8)), np.zeros((2 * n, 8), np.int64),
                np.zeros(2 * n, np.int64), np.zeros(2 * n, np.int64), np.arange(n, dtype=np.int64), np.zeros(7),
                np.full(64, np.nan), *_ring_arrays(p.recorded, bld.obs.shape[1]), rm.snap_team.reshape(-1),
                *dqn_part)

    @staticmethod
    def _q_tables(p) -> tuple[tuple, tuple]:
        """A Q-learner's part of ``L``: its tables A and B (A again without double Q) and bins; its visit counts."""
        specs = p._state_specs()
        width = max(len(edges) for *_, edges, _ in specs)
        spec = np.zeros((len(specs), 6), np.int64)
        edge = np.zeros((len(specs), max(width, 1)))
        n_edges = np.zeros(len(specs), np.int64)
        for i, (how, cols, edges, stride) in enumerate(specs):
            spec[i, 0], spec[i, 5] = how, stride
            spec[i, 1:5] = cols if how == 1 else (cols, 0, 0, 0)
            edge[i, :len(edges)] = edges
            n_edges[i] = len(edges)
        a, b = p.table, p.table_b if p.table_b is not None else p.table
        for t in (a, b):
            if not (t.q.flags.c_contiguous and t.q.dtype == np.float64 and t.visits.flags.c_contiguous
                    and t.visits.dtype == np.int64):
                raise RuntimeError("the Q-tables must be C-ordered float64 arrays with int64 visit counts")
            if np.signbit(t.q[t.q == 0]).any():
                raise DcsimError("the Q-table holds -0.0 entries (which zero numpy's max returns is its own "
                                 "business): run it with DCSIM_COMPILED=0")
        return (a.q, b.q, spec, edge, n_edges), (a.visits, b.visits)

    def _learning_round(self) -> None:
        """A compiled DQN's learning round, called by the kernel (its hook) at the decision that is due one: the
        replay's position and size in, ``DQN.learning_round`` (which samples the replay from the policy's stream,
        the kernel's too, and refreshes the acting weights in place), the update count out."""
        K, p = self._K, self.learner
        p.replay.pos, p.replay.size = int(self.ist[K.RP_POS]), int(self.ist[K.RP_SIZE])
        p.learning_round()
        if p.acting is None or p.acting.flat is not self._acting_flat:
            raise RuntimeError("the DQN's acting weights moved during the run (the kernel reads the old ones)")
        self.ist[K.L_UPDATES] = p.updates

    def learner_round_bids(self) -> Bids:
        """Every agent's bids at a market round, decided by the kernel for the Q-learner (what
        ``LearningPolicy.bid`` returns for all agents, with the same updates of its state)."""
        n = self.cluster.n_gpus
        out = self._round_out
        if out is None or out[0].size != n:
            out = self._round_out = (np.zeros(n), np.zeros(n), np.zeros((n, 2)), np.zeros((n, 2)))
        self._flush()
        self._pack()
        two = self._K.learner_round(self._G, self._S, self._D, self.ist, self.fst, self.env.now, *out)
        self._flush()
        self._unpack()
        request, price, steps_w, steps_price = (a.copy() for a in out)
        return Bids(request, price, steps_w, steps_price) if two else Bids(request, price)

    def _shared_in(self) -> None:
        if self.rewards is not None:
            K = self._K
            self.fst[K.RM_SH:K.RM_SH + 3] = self.rewards.shared
            if self.learner is not None:
                p = self.learner
                self.ist[K.L_DECISIONS], self.ist[K.L_UPDATES] = p.decisions, p.updates
                if p.recorded is not None:
                    self.ist[K.REC_POS], self.ist[K.REC_SIZE] = p.recorded.pos, p.recorded.size
                if self.rule.bid == kr.BID_DQN:
                    self.ist[K.RP_POS], self.ist[K.RP_SIZE] = p.replay.pos, p.replay.size
                    self._D[15][17][K.LF_NEXT_LEARN] = p._next_learn_s

    def _shared_out(self) -> None:
        if self.rewards is not None:
            K = self._K
            self.rewards.shared[:] = self.fst[K.RM_SH:K.RM_SH + 3]
            if self.learner is not None:
                p = self.learner
                p.decisions, p.updates = int(self.ist[K.L_DECISIONS]), int(self.ist[K.L_UPDATES])
                if p.recorded is not None:
                    p.recorded.pos, p.recorded.size = int(self.ist[K.REC_POS]), int(self.ist[K.REC_SIZE])
                if self.rule.bid == kr.BID_DQN:
                    p.replay.pos, p.replay.size = int(self.ist[K.RP_POS]), int(self.ist[K.RP_SIZE])
                    p._next_learn_s = float(self._D[15][17][K.LF_NEXT_LEARN])

    # ------------------------------------------------------------------------------------ state in and out
    def start(self) -> None:
        """At the start of the run (everything wired): the kernel's constants and the idle pool."""
        K, cl, mk = self._K, self.cluster, self.market
        if cl.free_sleep or cl.free_off:
            raise RuntimeError("the compiled path needs every free GPU idle")
        idle = list(cl.free_idle)  # insertion order: popitem() takes from the end
        self._idle[:len(idle)] = idle
        ist, f = self.ist, self.fst
        ist[K.N_IDLE] = len(idle)
        ist[K.N_GPUS] = cl.n_gpus
        ist[K.MAX_QUEUE] = -1 if self._max_queue is None else int(self._max_queue)
        ist[K.DROP_EXPIRED] = int(bool(self.drop_expired))
        f[K.IDLE_W], f[K.SPAN_W], f[K.MIN_CAP_FLOOR], f[K.GAMMA] = cl.idle_w, cl.span_w, cl._min_cap_floor_w, cl.gamma
        f[K.HORIZON] = self.log.horizon_s
        books = self.meter.books
        f[K.IMPORT_CAP] = books.import_cap_w
        f[K.CAPACITY], f[K.MAX_CHARGE], f[K.MAX_DISCHARGE] = books.capacity_j, books.max_charge_w, books.max_discharge_w
        f[K.ETA_C], f[K.ETA_D] = books.eta_c, books.eta_d
        plant = self.meter.cooling
        if plant is None:
            self._P = (np.zeros(0), np.zeros(0))
        else:
            self._P = (np.asarray(plant.k, dtype=np.float64), np.asarray(plant.change_s, dtype=np.float64))
            f[K.COOLING] = 1.0
            f[K.P_TAU], f[K.P_FAN], f[K.P_OVERHEAD] = plant.tau_s, plant.fan_w, plant.overhead_w
        self._want = np.asarray(mk.want_w, dtype=np.float64)
        self._want_src = mk.want_w
        rule = self.rule
        ist[K.BID_KIND], ist[K.ADMIT_KIND], ist[K.IDLE_KIND] = rule.bid, rule.admit, rule.on_idle
        if rule.bid in kr.LEARNER_BIDS:
            if self.learner is None or self.rewards is None:
                raise RuntimeError("a compiled learner needs its policy (attach_learner) and the reward meter")
            D = list(self._D)
            D[15] = self._learner_tuple()
            self._D = tuple(D)
            f[K.HOUR0] = self._hour0
            rec = self.learner.recorded
            ist[K.REC_ON] = int(rec is not None and rec.capacity > 0)
            if rule.bid == kr.BID_DQN:  # its learning rounds run in Python, called by the kernel through a hook
                key = next(_HOOK_KEYS)
                ist[K.HOOK] = key
                method = weakref.WeakMethod(self._learning_round)
                K.HOOKS[key] = lambda: method()()
                self._hook_key = key
        ist[K.LEARNER] = int(self.rewards is not None)
        f[K.RP0:K.AP0 + 2] = rule.params()
        f[K.P0] = mk.config.base_price_tokens_per_kwh
        f[K.FULL_W], f[K.MIN_CAP_W], f[K.TDP_W], f[K.UTIL] = cl.full_power_w, cl.min_cap_w, cl.tdp_w, cl.util
        f[K.TR_S], f[K.TR_S + 1] = cl.transition_s[ENTERING_SLEEP], cl.transition_s[WAKING]
        f[K.PW_ENTER], f[K.PW_SLEEP] = cl.state_power_w[ENTERING_SLEEP], cl.state_power_w[SLEEP]
        f[K.PW_WAKE] = cl.state_power_w[WAKING]
        self._G = (cl.state, cl.assigned, cl.power_w, cl.billable_w, cl.energy_off, cl.billable_off, cl.alloc_w,
                   cl.clock, self._idle, mk.wallet, mk.agent_price, mk.owed_tokens, self._want)
        self._started = True

    def _pack(self) -> None:
        K, f, cl, mk, meter = self._K, self.fst, self.cluster, self.market, self.meter
        f[K.TOTAL_W], f[K.ALLOC_W] = cl.total_power_w, cl.allocated_sum_w
        f[K.T_BOOKS], f[K.RENEW_W], f[K.CARBON], f[K.GRID_PRICE] = (meter._t_books, meter.renewable_w, meter.carbon,
                                                                    meter.grid_price)
        totals = meter.books.totals
        for i, name in enumerate(K.BOOK_FIELDS):
            f[K.CONSUMED + i] = getattr(totals, name)
        f[K.SOC] = meter.books.soc_j
        plant = meter.cooling
        if plant is not None:
            for i, name in enumerate(K.PLANT_FIELDS):
                f[K.P_T + i] = getattr(plant, name)
            self.ist[K.P_I] = plant._i
        f[K.PRICE], f[K.NEXT_ROUND], f[K.NEXT_ROUND_ULP] = mk.round_price, mk.next_round_s, math.ulp(mk.next_round_s)
        f[K.SELLABLE], f[K.PEAK_OVER] = mk.round_sellable_w, mk.peak_overallocation_w
        f[K.CREDITED], f[K.MINTED] = mk._credited_since_round, mk.tokens["minted"]
        if mk.want_w is not self._want_src:  # a round's bids replaced what each agent buys at its price
            self._want[:] = mk.want_w
            self._want_src = mk.want_w
        self._shared_in()

    def _unpack(self) -> None:
        K, f, cl, mk, meter = self._K, self.fst, self.cluster, self.market, self.meter
        cl.total_power_w, cl.allocated_sum_w = float(f[K.TOTAL_W]), float(f[K.ALLOC_W])
        meter._t_books = float(f[K.T_BOOKS])
        totals = meter.books.totals
        for i, name in enumerate(K.BOOK_FIELDS):
            setattr(totals, name, float(f[K.CONSUMED + i]))
        meter.books.soc_j = float(f[K.SOC])
        plant = meter.cooling
        if plant is not None:
            for i, name in enumerate(K.PLANT_FIELDS):
                setattr(plant, name, float(f[K.P_T + i]))
            plant._i = int(self.ist[K.P_I])
        mk.peak_overallocation_w = float(f[K.PEAK_OVER])
        mk._credited_since_round, mk.tokens["minted"] = float(f[K.CREDITED]), float(f[K.MINTED])
        self._shared_out()

    def _flush(self) -> None:
        """Write the jobs that ended in the kernel into their chunks of the job table, hand on finished chunks, and
        append the kernel's decisions to the decision log."""
        K = self._K
        n = int(self.ist[K.DR_N])
        if n:
            D = self._D
            block = DecisionBlock(D[4][:n].copy(), _LOG_NAMES[D[5][:n]], D[6][:n].copy())
            if block.time_s[0] == 0.0 and self.env.now == 0:  # the Python path logs SimPy's clock, an int before
                self.decision_rows.extend((self.env.now if t == 0.0 else t, m, k) for t, m, k in block.rows())
            else:
                self.decision_rows.append(block)
            self.ist[K.DR_N] = 0
        n = int(self.ist[K.OUT_N])
        if n == 0:
            return
        gid, status, reason, start, finish, energy = (a[:n] for a in self._O)
        index = gid // self.chunk_jobs
        chunks = self.log.chunks
        ended = False
        for c in np.unique(index).tolist():
            m = index == c
            chunk = chunks[c]
            rows = gid[m] - chunk.base
            np.frombuffer(chunk.status, dtype=np.int8)[rows] = status[m]
            np.frombuffer(chunk.reason, dtype=np.int8)[rows] = reason[m]
            np.frombuffer(chunk.start, dtype=np.float64)[rows] = start[m]
            np.frombuffer(chunk.finish, dtype=np.float64)[rows] = finish[m]
            np.frombuffer(chunk.energy, dtype=np.float64)[rows] = energy[m]
            chunk.live -= int(rows.size)
            ended |= chunk.live == 0
        self.ist[K.OUT_N] = 0
        if ended:
            self.log.chunk_ended(int(index[-1]))

    # ------------------------------------------------------------------------------------ arrivals
    def open_chunk(self, index: int, frame) -> None:
        K = self._K
        chunk = self.log.open(index, frame, index * self.chunk_jobs)
        gpus = np.ascontiguousarray(frame["gpus"].to_numpy(np.int64))
        self._C = (np.ascontiguousarray(frame["arrival_s"].to_numpy(float)), gpus,
                   np.ascontiguousarray(np.nan_to_num(frame["deadline_s"].to_numpy(float), nan=np.inf)),
                   np.ascontiguousarray(frame["value_tokens"].to_numpy(float)),
                   np.ascontiguousarray(frame["clock_sensitivity"].to_numpy(float)),
                   np.ascontiguousarray(frame["work_gpu_s"].to_numpy(float) / gpus),
                   np.ascontiguousarray(frame["deferrable"].to_numpy(bool).astype(np.int8)))
        if gpus.size and int(gpus.max()) > self._kmax:
            self._widen(int(min(gpus.max(), self.cluster.n_gpus)))
        ist = self.ist
        ist[K.ARR_I], ist[K.ARR_N], ist[K.ARR_BASE] = 0, len(frame), chunk.base

    def _next_chunk(self) -> None:
        """The arrivals reached the end of a chunk: open the next (the first one at the start) and schedule its
        first arrival."""
        K = self._K
        for index, frame in self._chunk_iter:
            self.open_chunk(index, frame)
            if K.schedule_arrival(self._C, self.ist, self.fst) != K.NEED_CHUNK:
                return
        self.ist[K.ARR_WAIT] = 0  # no chunk left: no more arrivals

    def begin_arrivals(self) -> None:
        """The arrivals process starts (at t = 0, after the first round): open the first chunk and take the
        arrivals due now, in this step."""
        K = self._K
        self.fst[K.ARR_NOW] = self.env.now
        self._next_chunk()
        self.catch_up(self.env.now, simpy.events.NORMAL, 0)  # only same-step arrivals order before id 0

    # ------------------------------------------------------------------------------------ the kernel's turn
    def catch_up(self, t: float, priority: int, eid: int) -> None:
        """Handle every job event SimPy would handle before the event ``(t, priority, eid)``."""
        if not self._started:
            return
        K = self._K
        self._pack()
        while True:
            code = K.run_until(self._G, self._S, self._H, self._T, self._C, self._O, self._P, self._D, self.ist,
                               self.fst, t, priority, eid)
            if code == K.DONE:
                break
            if code == K.NEED_CHUNK:
                self._next_chunk()
            elif code == K.NEED_SLOTS:
                self._grow(2 * self._cap)
            elif code == K.NEED_HEAP:
                self._grow_heap()
            elif code == K.NEED_TIMERS:
                self._grow_timers()
            else:
                self._flush()
        self._flush()
        self._unpack()

    # ------------------------------------------------------------------------------------ round-time calls
    def dispatch(self) -> None:
        K = self._K
        if self.ist[K.Q_LEN] == 0:
            return
        self._flush()
        self._room(self.cluster.n_gpus)
        self._pack()
        K.dispatch(self._G, self._S, self._H, self._O, self._D, self.ist, self.fst, self.env.now)
        self._flush()
        self._unpack()

    def enqueue(self, jobs: list[int]) -> None:
        if jobs:
            self._flush()
            self._shared_in()
            self._K.enqueue(self._S, self._O, self.ist, self.fst, np.asarray(jobs, dtype=np.int64), self.env.now)
            self._shared_out()
            self._flush()

    def drop(self, j: int, reason) -> None:
        self._flush()
        self._shared_in()
        self._K.drop(self._S, self._O, self.ist, self.fst, j, int(reason), self.env.now)
        self._shared_out()
        self._flush()

    def idle_decisions(self, at_tick: bool = False, freed: list[int] | None = None) -> None:
        """:meth:`DecisionDispatcher.idle_decisions` at a round, by the compiled rule (completions' are the
        kernel's own)."""
        if at_tick or freed is not None:
            raise RuntimeError("the compiled path decides idle GPUs at rounds only")
        self._flush()
        self._pack()
        self._K.idle_decision(self._G, self._D, self.ist, self.fst, 0, self.env.now)
        self._flush()
        self._unpack()

    def drop_expired_queued(self) -> None:
        K = self._K
        if not self.drop_expired or self.ist[K.Q_LEN] == 0:
            return
        self._flush()
        self._shared_in()
        K.drop_expired_queued(self._S, self._O, self.ist, self.fst, self.env.now)
        self._shared_out()
        self._flush()

    def arm(self) -> None:
        self._room(0)
        self._K.arm(self._H, self._T, self._S, self.ist, self.env.now)

    def apply_allocations(self, alloc_w: np.ndarray, active: np.ndarray) -> None:
        """:meth:`Dispatcher.apply_allocations`: the moved jobs found as there, their allocations set by the kernel."""
        moved = self.moved_allocations(alloc_w, active)
        if moved is not None:
            jobs = np.ascontiguousarray(moved[0], dtype=np.int64)
            allocs = np.ascontiguousarray(moved[1], dtype=np.float64)
            self._room(jobs.size)
            self._pack()
            self._K.set_allocs(self._G, self._S, self._H, self._T, self.ist, self.fst, jobs, allocs, self.env.now)
            self._unpack()

    def close(self) -> None:
        """At the horizon: the kernel's ended jobs written, then every pending job's results (as the Python path),
        and the idle pool handed back to the cluster."""
        if self._hook_key is not None:
            self._K.HOOKS.pop(self._hook_key, None)
            self._hook_key = None
        self._flush()
        super().close()
        cl = self.cluster
        cl.free_idle.clear()
        cl.free_idle.update(dict.fromkeys(self._idle[:int(self.ist[self._K.N_IDLE])].tolist()))
        cl.free_sleep.clear()
        cl.free_sleep.update(dict.fromkeys(self._D[2][:int(self.ist[self._K.N_SLEEP])].tolist()))
