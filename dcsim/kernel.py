"""The per-job path compiled with numba: arrivals, FCFS starts, clocks, completions and the energy books.

These functions do, operation for operation and in the same order, what :class:`dcsim.dispatch.Dispatcher`,
:class:`dcsim.cluster.Cluster` (``set_power``, ``cap``), :class:`dcsim.market_round.MarketRound`
(``spot_allocation``, ``_reprice``, ``credit_job_value``), :class:`dcsim.energy.EnergyBooks` and
:class:`dcsim.facility.plant.CoolingPlant` (fixed setpoints) do
in Python for a run whose policy decides nothing at events, or whose decisions at events have a compiled form (the
built-in rules, :mod:`dcsim.kernel_rules`; tabular Q-learning, ``BID_QTABLE`` below: what
:class:`policies.learning.LearningPolicy`, :class:`policies.qlearning.QLearning`, :class:`dcsim.reward_meter.RewardMeter`
and :class:`dcsim.learning.TransitionBuilder` do at a job start and a round; the DQN, ``BID_DQN``: the same with
:class:`policies.dqn.DQN`'s acting network and replay, its learning rounds called back in Python). See :mod:`dcsim.compiled` for when that
is and how the SimPy side is kept in step.

Floating-point operations are IEEE (no fast-math), Python's ``min``/``max`` are spelled out with their tie rules,
``**`` on Python floats is the C library's ``pow`` as in CPython, and wherever the Python path calls numpy on arrays
(the pace bid's powers; the learner's logarithms, sines, exponential, powers and reward matrix product; the DQN's
float32 matrix products) the kernel
calls numpy's own loop (:mod:`dcsim.npmath`), and draws from the policy's generator through its own bit generator,
so both paths give the same bits. numba is an optional dependency (extra ``fast``); this module is imported only
when it is installed.

State lives in arrays shared with the Python objects: per-GPU and per-slot buffers (the same memory as the
``array.array`` buffers), and two small state vectors (``ist``: int64, ``fst``: float64) indexed by the constants
below. Job events carry SimPy's ordering key ``(time, NORMAL, eid)``; ``ist[SEQ]`` is the environment's event-id
counter, shared with :class:`dcsim.compiled.KernelEnvironment`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, objmode

from dcsim import kernel_rules as kr
from dcsim import learning
from dcsim import npmath
from dcsim.cluster import ACTIVE, ENTERING_SLEEP, IDLE, SLEEP, WAKING
from dcsim.dispatch import COMPLETED, DEFERRED, DROPPED, FUTURE, QUEUED, RUNNING, SAME_INSTANT_ULPS, STARTING, DropReason
from dcsim.energy import J_PER_KWH, J_PER_MWH

_TOO_LARGE, _QUEUE_FULL, _EXPIRED = int(DropReason.TOO_LARGE), int(DropReason.QUEUE_FULL), int(DropReason.DEADLINE_EXPIRED)
#: Every kernel function: cached machine code, and no reference counting (``_nrt=False``). The kernel allocates
#: nothing (its arrays are the Python objects', kept alive by them), so numba's runtime has nothing to count;
#: with it on, the increfs and decrefs of every array in the argument tuples cost 2.5-4x the kernel's own work.
def _options() -> dict:
    try:  # a private option of numba's CPU target (in every numba since 0.4x); without it, the same code, slower
        from numba.core.cpu import CPUTargetOptions

        return {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}
    except ImportError:
        return {}


#: The modules whose code or constants the kernel's machine code holds: numba checks only a function's own file
#: before it loads the cached code, so the kernel's cache entries carry a digest of all of them (an edit to any,
#: e.g. a changed npmath index, must not load code compiled against the old one).
_DEPENDS = ("kernel", "npmath", "kernel_rules", "learning", "cluster", "dispatch", "energy")


def _install_cache_stamp() -> None:
    """Put a locator in front of numba's own for this package's kernel functions: the same cache folders, with
    the source stamp of all of :data:`_DEPENDS` (skipped on a numba without these classes: plain stamps)."""
    import hashlib
    import os

    try:
        from numba.core import caching
        bases = [getattr(caching, name) for name in ("UserProvidedCacheLocator", "InTreeCacheLocator",
                                                     "UserWideCacheLocator")]
        impl = caching._CacheImpl
    except (ImportError, AttributeError):
        return
    if getattr(impl, "_dcsim_stamp", False):
        return
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in _DEPENDS:
        with open(os.path.join(here, name + ".py"), "rb") as f:
            digest.update(f.read())
    stamp = digest.hexdigest()

    def make(base):
        class Locator(base):
            @classmethod
            def from_function(cls, py_func, py_file):
                if getattr(py_func, "__module__", "").split(".")[0] != "dcsim":
                    return None
                return super().from_function(py_func, py_file)

            def get_source_stamp(self):
                return ("dcsim", stamp, super().get_source_stamp())

        Locator.__name__ = "Dcsim" + base.__name__
        return Locator

    impl._locator_classes = [make(b) for b in bases] + list(impl._locator_classes)
    impl._dcsim_stamp = True


_install_cache_stamp()
_jit = njit(cache=True, **_options())
_NORMAL = 1  # simpy.events.NORMAL
_INF = np.inf

# ist: int64 state
SEQ, N_EVENTS, N_FREE, N_IDLE, Q_HEAD, Q_LEN, HEAP_N, TIMER_N = 0, 1, 2, 3, 4, 5, 6, 7
ARR_I, ARR_N, ARR_BASE, ARR_PENDING, ARR_SEQ, OUT_N, RUNNING_N = 8, 9, 10, 11, 12, 13, 14
MAX_QUEUE, DROP_EXPIRED, N_GPUS, ARR_WAIT, P_I = 15, 16, 17, 18, 19
# with a rule that decides at events (dcsim.kernel_rules): its kinds, the sleep pool, held jobs, the decision log,
# and the two transition FIFOs (0: entering sleep, 1: waking), each its events and its ring of GPUs
N_SLEEP, BID_KIND, ADMIT_KIND, IDLE_KIND, DEF_N, DR_N = 20, 21, 22, 23, 24, 25
EV_HEAD, EV_LEN, GR_HEAD, GR_LEN = 26, 28, 30, 32  # + FIFO
# with a Q-learner (BID_QTABLE): its decision and update counts; LEARNER = 1 where the reward meter is kept here
L_DECISIONS, LEARNER, L_UPDATES = 34, 35, 36
# with keep_transitions: the policy's ReplayBuffer ``recorded`` (its write position and size; REC_ON = 1 when kept)
REC_POS, REC_SIZE, REC_ON = 37, 38, 39
# with a DQN (BID_DQN): its replay ring's write position and size, and the key of its learning round's hook
RP_POS, RP_SIZE, HOOK = 40, 41, 42
N_IST = 43
# fst: float64 state
TOTAL_W, ALLOC_W, T_BOOKS, RENEW_W, CARBON, GRID_PRICE, IMPORT_CAP = 1, 2, 3, 4, 5, 6, 7  # 0: unused
CONSUMED, RENEW_USED, RENEW_GEN, CURTAILED, CHARGED, BATT_OUT, BATT_LOSS, GRID_J, UNSERVED, CARBON_G, COST = range(8, 19)
PRICE, NEXT_ROUND, NEXT_ROUND_ULP, SELLABLE, PEAK_OVER, CREDITED, MINTED = range(19, 26)
ARR_T, HORIZON, IDLE_W, SPAN_W, MIN_CAP_FLOOR, GAMMA, ARR_NOW = range(26, 33)
SOC, CAPACITY, MAX_CHARGE, MAX_DISCHARGE, ETA_C, ETA_D = range(33, 39)
# with facility.cooling (CoolingPlant's state and constants; COOLING = 1.0 when on)
COOLING, P_T, P_K, P_NEXT, P_HEAT, P_IT_J, P_COOL_J, P_OVER_J, P_FAC_J, P_PUE_INT, P_IT_ON, P_HEAT_J = range(39, 51)
P_TAU, P_FAN, P_OVERHEAD = range(51, 54)
# the rule's numbers (KernelRule.params), the GPU's figures the rules read, the transitions' lengths and draws
P0, FULL_W, MIN_CAP_W, TDP_W, UTIL = range(54, 59)
TR_S, PW_ENTER, PW_SLEEP, PW_WAKE = 59, 61, 62, 63  # TR_S + FIFO: entering sleep, waking
RP0 = 64  # KernelRule.params(): the bid's six numbers (RP0..RP0+5), then the admission's two (AP0, AP0+1)
AP0 = RP0 + 6
# with LEARNER: RewardMeter.shared (the wait, misses and drops no agent owns) and the clock's hour at t = 0
RM_SH = AP0 + 2
HOUR0 = RM_SH + 3
N_FST = HOUR0 + 1
#: The reference round of the learners' features, s (policies.learning.REFERENCE_ROUND_S).
REFERENCE_ROUND_S = 300.0
# decision-log method codes (DecisionDispatcher.log_decision's names, in this order)
LOG_METHODS = ("bid", "admit", "on_idle")
#: CoolingPlant's float state in ``fst`` order (P_T .. P_HEAT_J)
PLANT_FIELDS = ("_t", "_k", "_next_change_s", "heat_w", "it_j", "cooling_j", "overhead_j", "facility_j",
                "pue_time_integral_s", "it_on_s", "heat_removed_j")
#: The books' totals in ``fst`` order, by :class:`dcsim.energy.EnergyTotals` field.
BOOK_FIELDS = ("consumed_j", "renewable_used_j", "renewable_generated_j", "curtailed_j", "charged_j", "battery_out_j",
               "battery_loss_j", "grid_j", "unserved_j", "carbon_g", "cost_usd")

# return codes of run_until and schedule_arrival
DONE, NEED_CHUNK, NEED_SLOTS, NEED_HEAP, NEED_FLUSH, NEED_TIMERS = 0, 1, 2, 3, 4, 5

# The tuples of arrays (see dcsim.compiled.CompiledDispatcher._views):
# G: st, asg, pw, bw, eoff, boff, al, ck, idle stack, wallet, agent price, owed, want
# S: gid, arrival, k, deadline, value, beta, duration, status, why, start, finish, remaining, rate, last, job alloc,
#    job energy, mark, version, job gpus (slots x kmax), free-slot stack, queue ring
# H: heap time, heap gid, heap version, heap slot;  T: timer time, timer event time, timer eid
# C: the open chunk's arrival, gpus, deadline, value, beta, duration, deferrable
# O: out gid, status, reason, start, finish, energy
# P: the cooling plant's electric-per-heat k and weather step times (empty without facility.cooling)
# D: pending wakes per slot, wake-after per GPU, sleep pool (stack), held jobs, decision log (time, method, agents),
#    transition events (2 x GPUs: end time, event id, first ring index, GPU count) and rings (2 x GPUs),
#    numpy's loops (dcsim.npmath: addresses, float scratch, int scratch), and the learner's tuple L
# L: Q-table A, Q-table B (A again without double Q), bin specs (how, 4 columns, stride), bin edges, edge counts,
#    the reward meter's per-agent value, misses, settled, lat_off, lat_rate, last_s, first, snap (5n), snap_shared
#    (3n), snap_cluster (2n), returns, the reward weights (7), lf (LF_*), the starting job's features (n x 15),
#    visits A, visits B, the transition builder's open, obs (n x 15 float32), action, reward, elapsed, the policy
#    stream's bit generator (npmath.bit_generator_addresses), row scratch (2n x 8 floats, 2n x 8 ints), sort
#    scratch (2 x 2n ints), the agents 0 .. n - 1, the shared feature columns (7), log2 of job sizes (64, NaN unset),
#    the recorded transitions' ring (ReplayBuffer.data: obs, action, reward, next_obs, dt_s, terminal), the
#    reward meter's team snapshots (7n); a DQN's acting weights (ActingWeights.flat, float32) and their layout
#    (per layer: inputs, outputs, weight and bias offsets), the scratch of its passes (float32), its replay ring
#    (as the recorded one). A Q-learner has empty DQN parts and a DQN empty tables, bins and visits.


@_jit
def _pmin(a, b):
    """Python's ``min(a, b)`` on floats: ``a`` unless ``b < a``."""
    return b if b < a else a


@_jit
def _pmax(a, b):
    """Python's ``max(a, b)`` on floats: ``a`` unless ``b > a``."""
    return b if b > a else a


@_jit
def ulp(x):
    """``math.ulp(x)`` for finite ``x >= 0``."""
    return np.nextafter(x, _INF) - x


@_jit
def delay_to(now, t):
    """:func:`dcsim.dispatch.delay_to`."""
    delay = t - now if t > now else 0.0
    while now + delay < t:
        delay = np.nextafter(delay, _INF)
    return delay


# ---------------------------------------------------------------------------------------------- heap (Python heapq)
@_jit
def _hless(H, a, b):
    ht, hg, hv, hs = H
    if ht[a] != ht[b]:
        return ht[a] < ht[b]
    if hg[a] != hg[b]:
        return hg[a] < hg[b]
    if hv[a] != hv[b]:
        return hv[a] < hv[b]
    return hs[a] < hs[b]


@_jit
def _hswap(H, a, b):
    ht, hg, hv, hs = H
    ht[a], ht[b] = ht[b], ht[a]
    hg[a], hg[b] = hg[b], hg[a]
    hv[a], hv[b] = hv[b], hv[a]
    hs[a], hs[b] = hs[b], hs[a]


@_jit
def heap_push(H, ist, t, g, v, j):
    ht, hg, hv, hs = H
    i = ist[HEAP_N]
    ht[i], hg[i], hv[i], hs[i] = t, g, v, j
    ist[HEAP_N] = i + 1
    while i > 0:
        p = (i - 1) >> 1
        if _hless(H, i, p):
            _hswap(H, i, p)
            i = p
        else:
            break


@_jit
def heap_pop(H, ist):
    """Remove the smallest entry (the caller read it at index 0)."""
    n = ist[HEAP_N] - 1
    ist[HEAP_N] = n
    if n == 0:
        return
    _hswap(H, 0, n)
    i = 0
    while True:
        a = 2 * i + 1
        if a >= n:
            break
        b = a + 1
        c = b if b < n and _hless(H, b, a) else a
        if _hless(H, c, i):
            _hswap(H, c, i)
            i = c
        else:
            break


# ---------------------------------------------------------------------------------------------- cluster and market
@_jit
def _set_power(G, fst, g, power, billable, now):
    pw, bw, eoff, boff = G[2], G[3], G[4], G[5]
    old = pw[g]
    if old != power:
        eoff[g] += (old - power) * now
        pw[g] = power
        fst[TOTAL_W] += power - old
    old = bw[g]
    if old != billable:
        boff[g] += (old - billable) * now
        bw[g] = billable


@_jit
def _reprice(G, g, price, now):
    bw, boff, aprice, owed = G[3], G[5], G[10], G[11]
    if aprice[g] != price:
        used = boff[g] + bw[g] * now
        if used > 0:
            owed[g] += aprice[g] * used / J_PER_KWH
        boff[g] = -bw[g] * now
        aprice[g] = price


# ---------------------------------------------------------------------------------------------- rules (kernel_rules)
@_jit
def _log(D, ist, now, method, agents):
    """:meth:`DecisionDispatcher.log_decision`: a row of the decision log (method: index of LOG_METHODS)."""
    i = ist[DR_N]
    D[4][i], D[5][i], D[6][i] = now, method, agents
    ist[DR_N] = i + 1


@_jit
def _renewable_fraction(fst):
    """The market view's ``renewable_fraction`` now."""
    demand = _pmax(0.0, fst[TOTAL_W])
    return 1.0 if demand <= 0 else _pmin(1.0, fst[RENEW_W] / demand)


_np_power = _jit(npmath.power)
_pace_needed_value = _jit(learning.pace_needed_value)
_np_unary = _jit(npmath.unary)
_np_matmul_rows = _jit(npmath.matmul_rows)
_np_matmul_f32 = _jit(npmath.matmul_f32)
_LOG, _LOG1P, _LOG2, _SIN, _COS = (npmath.UNARY[f] for f in ("log", "log1p", "log2", "sin", "cos"))
_MM_W, _MM_OUT = npmath.MM_W, npmath.MM_OUT
_mm_rows_at = _jit(npmath.mm_rows_at)
_EXP = npmath.UNARY["exp"]
_np_power_base = _jit(npmath.power_base)
_rng_random = _jit(npmath.rng_random)
_rng_integers = _jit(npmath.rng_integers)
# the learner's float parameters (L[17])
(LF_N, LF_DOUBLE, LF_PER_AGENT, LF_LEARNING, LF_GAMMA, LF_TAU, LF_Q_GAMMA, LF_Q_TAU, LF_ALPHA, LF_VISITS, LF_DECAY,
 LF_CONSISTENT, LF_EPS_START, LF_EPS_END, LF_EPS_DECAY, LF_EPS_EXP, LF_N_BID, LF_TEAM) = range(18)
# a DQN's: 1.0 for a DQN, its learn_every_s and the time of its next learning round (DQN._next_learn_s)
LF_DQN, LF_LEARN_EVERY, LF_NEXT_LEARN = range(18, 21)
N_LF = 21
# the row scratch's columns: floats (L[27]) and ints (L[28])
R_REWARD, R_DT, R_BOOT, R_TD, R_RATE, R_W = range(6)
R_G, R_T, R_S, R_A, R_S2, R_FLAT, R_FIRST, R_Q = range(8)


@_jit
def _gamma_pow(D, x, e):
    """numpy's ``array ** e`` for a float ``e``, element by element: ``ndarray.__pow__``'s fast paths (2, 1, 0.5,
    -1, 0), else numpy's power loop with the exponent broadcast."""
    if e == 2.0:
        return x * x
    if e == 1.0:
        return x
    if e == 0.5:
        return np.sqrt(x)
    if e == -1.0:
        return 1.0 / x
    if e == 0.0:
        return 1.0
    return _np_power(D[12], D[13], x, e, True)


@_jit
def _start_wants(G, S, D, ist, fst, j, now):
    """:meth:`DecisionDispatcher.start_wants` under a compiled rule: the starting job's agents bid (a decision),
    each buys its bid's power at the round's price (``want``)."""
    kind = ist[BID_KIND]
    k = S[2][j]
    _log(D, ist, now, 0, k)
    want, jg = G[12], S[18]
    price = fst[PRICE]
    if kind == kr.BID_QTABLE or kind == kr.BID_DQN:
        _learner_bids(G, S, D, ist, fst, j, now)
        return
    action = -1
    if kind == kr.BID_ACTIONS:  # ReferenceRule.actions: every starting agent takes the price test's action
        action = int(fst[RP0 + 1] if price <= fst[RP0] * fst[P0] else fst[RP0 + 2])
    for q in range(k):
        want[jg[j, q]] = _agent_want(S, D, ist, fst, j, k, kind, action, price, now)


@_jit
def _agent_want(S, D, ist, fst, j, k, kind, action, price, now):
    """What one agent of starting job ``j`` buys at the round's ``price`` under the compiled rule's bid."""
    idle, span, full = fst[IDLE_W], fst[SPAN_W], fst[FULL_W]
    if kind == kr.BID_TWO_BLOCKS:  # Python's few_wants_at_price over PriceThreshold's two blocks
        return _two_blocks(fst[MIN_CAP_W] - idle, full - fst[MIN_CAP_W], fst[RP0], price, span)
    if kind == kr.BID_RENEWABLE_SHARE:
        return _one_block(idle + _pmax(fst[RP0], _renewable_fraction(fst)) * (full - idle), _INF, price, idle, span)
    if kind == kr.BID_ACTIONS:
        request, max_price, rest = _action_bid(S, D, fst, j, action, now)
        if _two_block(action):
            floor = _pmax(fst[MIN_CAP_W], idle)
            return _two_blocks(floor - idle, full - floor, rest, price, span)
        return _one_block(request, max_price, price, idle, span)
    if kind == kr.BID_TRUTHFUL:  # the job's value per kWh
        return _one_block(full, _value_per_kwh(S, fst, j, now), price, idle, span)
    # BID_PACE: dcsim.learning.pace_power_w with safety RP0
    return _one_block(_pace_request(S, D, fst, j, now, fst[RP0]), _INF, price, idle, span)


@_jit
def _two_block(action):
    """Whether a :class:`~dcsim.learning.BidAction` bids two blocks (the minimum cap at any price, the rest priced)."""
    return action == kr.ACTION_FLOOR_THEN_VALUE or action == kr.ACTION_FLOOR_THEN_LIMIT


@_jit
def _action_bid(S, D, fst, j, action, now):
    """:func:`dcsim.learning.bids_from_actions` of one agent of job ``j`` taking ``action``: its request (W), its
    price limit, and a two-block bid's price for the block above the minimum cap (``cheap_multiple``,
    ``block_limit_multiple`` and ``pace_safety`` at ``RP0 + 3 .. RP0 + 5``)."""
    idle, full = fst[IDLE_W], fst[FULL_W]
    if action == kr.ACTION_FLOOR_THEN_VALUE:
        return full, _INF, _value_per_kwh(S, fst, j, now)
    if action == kr.ACTION_FLOOR_THEN_LIMIT:
        return full, _INF, fst[RP0 + 4] * fst[P0]
    if action == kr.ACTION_HALF:
        request = idle + 0.5 * (full - idle)
    elif action == kr.ACTION_MIN_CAP:
        request = _pmax(fst[MIN_CAP_W], idle)
    elif action == kr.ACTION_PAUSE:
        request = idle
    elif action == kr.ACTION_PACE:
        request = _pace_request(S, D, fst, j, now, fst[RP0 + 5])
    else:
        request = full
    return request, fst[RP0 + 3] * fst[P0] if action == kr.ACTION_FULL_IF_CHEAP else _INF, 0.0


@_jit
def _remaining(S, j, now):
    """Full-clock seconds of work job ``j`` has left now (``Dispatcher.remaining_now``; the observation's)."""
    r = S[11][j] - S[12][j] * (now - S[13][j])
    return r if r > 0.0 else 0.0


@_jit
def _clip(x, lo, hi):
    """``np.clip`` of one float64 (dcsim.learning._clip: ``lo`` only if ``x < lo``)."""
    return lo if x < lo else (hi if x > hi else x)


@_jit
def _own(G, L, g, now):
    """``RewardMeter._own`` of agent ``g``: value credited, tokens spent (paid and owed), energy (J), latency (s)
    and deadline misses up to ``now``."""
    used = G[5][g] + G[3][g] * now
    liability = G[11][g] + (G[10][g] * used if used > 0 else 0.0) / J_PER_KWH
    return L[5][g], L[7][g] + liability, G[4][g] + G[2][g] * now, L[8][g] + L[9][g] * now, L[6][g]


@_jit
def _feedback_rows(G, D, fst, agents, k, now):
    """:meth:`RewardMeter.feedback` of agents ``agents[:k]`` (a starting job's, or all at a round; its few-agent
    form and the numpy form's same operations): each agent's seven components since its last decision, the
    weighted sum by numpy's own matrix product over all the rows at once (numpy's per-row results depend on the row
    count), the snapshots moved on, the returns summed; row q's reward and interval into the row scratch. The books
    are at ``now`` already (every kernel event advances them first; rounds pack Python's)."""
    L, addr, io, ib = D[15], D[12], D[13], D[14]
    last_s, first = L[10], L[11]
    snap, snap_sh, snap_cl, returns, w, n_agents = L[12], L[13], L[14], L[15], L[16], L[17][0]
    sh0, sh1, sh2 = fst[RM_SH], fst[RM_SH + 1], fst[RM_SH + 2]
    consumed, carbon = fst[CONSUMED], fst[CARBON_G]
    rows = _mm_rows_at(io)
    for c in range(7):
        io[_MM_W + c] = w[c]
    for q in range(k):
        g = agents[q]
        o0, o1, o2, o3, o4 = _own(G, L, g, now)
        b = 5 * g
        d0, d1, d2, d3, d4 = o0 - snap[b], o1 - snap[b + 1], o2 - snap[b + 2], o3 - snap[b + 3], o4 - snap[b + 4]
        c3 = 3 * g
        e0, e1, e2 = (sh0 - snap_sh[c3]) / n_agents, (sh1 - snap_sh[c3 + 1]) / n_agents, \
            (sh2 - snap_sh[c3 + 2]) / n_agents
        c2 = 2 * g
        d_consumed, d_carbon = consumed - snap_cl[c2], carbon - snap_cl[c2 + 1]
        carbon_kg = (d2 * d_carbon / d_consumed if d_consumed > 0 else 0.0) / 1000.0
        r = rows + 7 * q
        io[r], io[r + 1], io[r + 2], io[r + 3] = d0, d1, d2 / J_PER_KWH, carbon_kg
        io[r + 4], io[r + 5], io[r + 6] = d3 + e0, d4 + e1, e2
        snap[b], snap[b + 1], snap[b + 2], snap[b + 3], snap[b + 4] = o0, o1, o2, o3, o4
        snap_sh[c3], snap_sh[c3 + 1], snap_sh[c3 + 2] = sh0, sh1, sh2
        snap_cl[c2], snap_cl[c2 + 1] = consumed, carbon
        L[27][q, R_DT] = now - last_s[g]
        last_s[g] = now
        first[g] = False
    _np_matmul_rows(addr, io, ib, k)
    for q in range(k):
        L[27][q, R_REWARD] = io[_MM_OUT + q]
    tf = L[17][LF_TEAM]
    if tf > 0.0:  # the team's share: the cluster's accruals since each agent's last decision, over the agents
        n = int(L[17][LF_N])
        t0 = t1 = t2 = t3 = t4 = 0.0
        for g in range(n):  # RewardMeter._team_now: _own over every agent, summed row by row (numpy's axis-0 sum)
            o0, o1, o2, o3, o4 = _own(G, L, g, now)
            if g == 0:  # the first row as it is (not 0.0 + it: a -0.0 stays -0.0, as in numpy's reduction)
                t0, t1, t2, t3, t4 = o0, o1, o2, o3, o4
            else:
                t0, t1, t2, t3, t4 = t0 + o0, t1 + o1, t2 + o2, t3 + o3, t4 + o4
        team0, team1, team2, team3 = t0, t1, consumed / J_PER_KWH, carbon / 1000.0
        team4, team5, team6 = t3 + sh0, t4 + sh1, sh2
        st = L[40]
        for q in range(k):
            b7, r = 7 * agents[q], rows + 7 * q
            io[r], io[r + 1], io[r + 2], io[r + 3] = team0 - st[b7], team1 - st[b7 + 1], team2 - st[b7 + 2], \
                team3 - st[b7 + 3]
            io[r + 4], io[r + 5], io[r + 6] = team4 - st[b7 + 4], team5 - st[b7 + 5], team6 - st[b7 + 6]
        _np_matmul_rows(addr, io, ib, k)
        for q in range(k):
            team_reward = io[_MM_OUT + q] / n_agents
            L[27][q, R_REWARD] = (1.0 - tf) * L[27][q, R_REWARD] + tf * team_reward
            b7 = 7 * agents[q]
            st[b7], st[b7 + 1], st[b7 + 2], st[b7 + 3] = team0, team1, team2, team3
            st[b7 + 4], st[b7 + 5], st[b7 + 6] = team4, team5, team6
    for q in range(k):
        returns[agents[q]] += L[27][q, R_REWARD]


@_jit
def _shared_features(D, ist, fst, now):
    """The feature columns every agent shares at this instant (price, renewable fraction, hour, battery, queue,
    time to the round), float32-cast, into ``L[32]`` (computed once per decision call, as the Python paths do)."""
    L, addr, io = D[15], D[12], D[13]
    sh = L[32]
    p0 = fst[P0]
    price = _clip(fst[PRICE], 1e-6 * p0, 1e6 * p0)
    hour = 2.0 * np.pi * ((fst[HOUR0] + now / 3600.0) % 24.0) / 24.0
    sh[0] = np.float32(_np_unary(addr, io, _LOG, price / p0) / 2.0)
    sh[1] = np.float32(_renewable_fraction(fst))
    sh[2] = np.float32(_np_unary(addr, io, _SIN, hour))
    sh[3] = np.float32(_np_unary(addr, io, _COS, hour))
    sh[4] = np.float32(fst[SOC] / fst[CAPACITY] if fst[CAPACITY] > 0 else 0.0)
    sh[5] = np.float32(_np_unary(addr, io, _LOG1P, ist[Q_LEN] / _pmax_int(ist[N_GPUS], 1)))
    sh[6] = np.float32(_clip((fst[NEXT_ROUND] - now) / REFERENCE_ROUND_S, 0.0, 1.0))


@_jit
def _gpus_log2(D, k):
    """``np.log2(max(k, 1)) / 5``, float32-cast, remembered per job size (the same loop on the same number)."""
    L = D[15]
    memo = L[33]
    if k < memo.size and memo[k] == memo[k]:
        return memo[k]
    v = np.float32(_np_unary(D[12], D[13], _LOG2, float(_pmax_int(k, 1))) / 5.0)
    if k < memo.size:
        memo[k] = v
    return v


@_jit
def _features(G, S, D, ist, fst, g, q, now):
    """:func:`dcsim.learning.observation_feature_rows` (and ``_observation_features64``'s same values) of agent
    ``g`` into row ``q`` of ``L[18]``, cast to float32: the transcendental functions numpy's own loops, the rest the
    same float64 operations in order; an agent without a job has the numpy form's row (no deadline, no work). The
    shared columns come from :func:`_shared_features` (called first)."""
    L, addr, io = D[15], D[12], D[13]
    x, sh = L[18][q], L[32]
    idle, full, p0 = fst[IDLE_W], fst[FULL_W], fst[P0]
    span_kw = (full - idle) / 1000.0
    price = _clip(fst[PRICE], 1e-6 * p0, 1e6 * p0)
    p_span = price * span_kw
    round_cost = p_span * REFERENCE_ROUND_S / 3600.0
    j = G[1][g]
    has = j >= 0
    r, slack, k, beta, ratio = 0.0, _INF, 0, 1.0, 1.0
    if has:
        r = _remaining(S, j, now)
        slack = S[3][j] - now - r
        k, beta = S[2][j], S[5][j]
        share = S[4][j] / _pmax_int(k, 1)
        ratio = _pmax(share, 1e-12) / (p_span * _pmax(r, 1.0) / 3600.0)
    deadline = np.isfinite(slack)
    x[0] = 1.0 if has else 0.0
    x[1] = 1.0 if deadline else 0.0
    x[2] = np.float32(_clip(slack / 3600.0, -4.0, 8.0) / 4.0 if deadline else 2.0)
    x[3] = np.float32(_clip(r / 3600.0, 0.0, 8.0) / 4.0)
    x[4] = np.float32(_clip(_np_unary(addr, io, _LOG, ratio), -3.0, 3.0) / 3.0 if has else 0.0)
    x[5] = np.float32(_np_unary(addr, io, _LOG1P, G[9][g] / round_cost) / 5.0)
    for c in range(6):
        x[6 + c] = sh[c]
    x[12] = np.float32(beta * x[0])
    x[13] = _gpus_log2(D, k)
    x[14] = sh[6]


@_jit
def _state(L, X, r):
    """:meth:`policies.qlearning.QLearning._state_rows` of feature row ``X[r]`` (float32 values): each bin by
    ``bisect_right`` over its edges (``pace_needed`` derived as there)."""
    spec, edges, n_edges = L[2], L[3], L[4]
    x = X[r]
    index = 0
    for s in range(spec.shape[0]):
        if spec[s, 0] == 0:
            v = np.float64(x[spec[s, 1]])
        else:  # pace_needed of has_job, has_deadline, slack_h, remaining_h
            v = _pace_needed_value(np.float64(x[spec[s, 1]]), np.float64(x[spec[s, 2]]), np.float64(x[spec[s, 3]]),
                                   np.float64(x[spec[s, 4]]))
        b = 0
        while b < n_edges[s] and edges[s, b] <= v:
            b += 1
        index += b * spec[s, 5]
    return index


@_jit
def _greedy(L, t, s):
    """The greedy action of state ``s`` in table ``t``: the first maximum of ``0.5 (A + B)`` with two tables
    (``_greedy_double_rows``), of ``A`` with one (``_greedy_rows``: the first NaN if any)."""
    qa, qb = L[0], L[1]
    n = qa.shape[2]
    if L[17][LF_DOUBLE] != 0.0:
        best, best_value = 0, -_INF
        for a in range(n):
            v = 0.5 * (qa[t, s, a] + qb[t, s, a])
            if a == 0 or v > best_value:
                best, best_value = a, v
        return best
    best, best_value = 0, qa[t, s, 0]
    if best_value == best_value:
        for a in range(1, n):
            v = qa[t, s, a]
            if v != v:
                return a
            if v > best_value:
                best, best_value = a, v
    return best


@_jit
def _first_max(Q, t, s):
    """``_greedy_small``: the first maximum of ``Q[t, s]``."""
    best, best_value = -1, 0.0
    for a in range(Q.shape[2]):
        v = Q[t, s, a]
        if best < 0 or v > best_value:
            best, best_value = a, v
    return best


@_jit
def _sort_rows(ix, lo, m, order, tmp):
    """``np.argsort(flat, kind="stable")`` of scratch rows ``lo .. lo + m`` by their entry (``R_FLAT``): a bottom-up
    merge sort into ``order[:m]`` (row numbers), ``tmp`` its scratch."""
    for i in range(m):
        order[i] = lo + i
    src, dst = order, tmp
    width = 1
    while width < m:
        for start in range(0, m, 2 * width):
            mid, end = min(start + width, m), min(start + 2 * width, m)
            a, b, o = start, mid, start
            while a < mid and b < end:
                if ix[src[b], R_FLAT] < ix[src[a], R_FLAT]:
                    dst[o] = src[b]
                    b += 1
                else:
                    dst[o] = src[a]
                    a += 1
                o += 1
            while a < mid:
                dst[o] = src[a]
                a += 1
                o += 1
            while b < end:
                dst[o] = src[b]
                b += 1
                o += 1
        src, dst = dst, src
        width *= 2
    if src is not order:
        for i in range(m):
            order[i] = src[i]


@_jit
def _q_update(D, Q, V, lo, m, with_boot):
    """:meth:`QTable.update` of scratch rows ``lo .. lo + m`` (none terminal), its numpy batch step by step: every
    target against the table before the batch; the rows stably sorted by entry, each group's ranks and rates, its
    weights ``rate_j * prod_{later} (1 - rate)`` multiplied from the group's end (``np.cumprod``); then the weighted
    TD errors added in batch order (``np.add.at``). ``with_boot``: the rows carry their bootstrap (double Q); else
    ``max`` over the next state's row. The discount and the visits rate are numpy's powers."""
    L = D[15]
    addr, io, lf, fs, ix, order, tmp = D[12], D[13], L[17], L[27], L[28], L[29], L[30]
    n_s, n_a = Q.shape[1], Q.shape[2]
    gamma, tau, consistent = lf[LF_Q_GAMMA], lf[LF_Q_TAU], lf[LF_CONSISTENT] != 0.0
    for i in range(lo, lo + m):
        t, s, a, s2 = ix[i, R_T], ix[i, R_S], ix[i, R_A], ix[i, R_S2]
        discount = _np_power_base(addr, io, gamma, fs[i, R_DT] / tau)
        if with_boot:
            boot = fs[i, R_BOOT]
        else:
            boot = Q[t, s2, 0]
            for b in range(1, n_a):
                if Q[t, s2, b] > boot:
                    boot = Q[t, s2, b]
        if consistent and s2 == s:
            boot = Q[t, s, a]
        ix[i, R_FLAT] = (t * n_s + s) * n_a + a
        fs[i, R_TD] = fs[i, R_REWARD] + discount * boot - Q[t, s, a]
    _sort_rows(ix, lo, m, order, tmp)
    p = 0
    while p < m:
        e = p
        while e + 1 < m and ix[order[e + 1], R_FLAT] == ix[order[p], R_FLAT]:
            e += 1
        for r in range(p, e + 1):
            i = order[r]
            if lf[LF_VISITS] != 0.0:
                visit = V[ix[i, R_T], ix[i, R_S], ix[i, R_A]] + (r - p + 1)
                fs[i, R_RATE] = _np_power(addr, io, float(visit), -lf[LF_DECAY], True)
            else:
                fs[i, R_RATE] = lf[LF_ALPHA]
        later = 1.0
        for r in range(e, p - 1, -1):
            i = order[r]
            if r == e:
                fs[i, R_W] = fs[i, R_RATE]
                later = 1.0 - fs[i, R_RATE]
            else:
                fs[i, R_W] = fs[i, R_RATE] * later
                later = later * (1.0 - fs[i, R_RATE])
        p = e + 1
    for i in range(lo, lo + m):
        t, s, a = ix[i, R_T], ix[i, R_S], ix[i, R_A]
        Q[t, s, a] += fs[i, R_W] * fs[i, R_TD]
        V[t, s, a] += 1


@_jit
def _learn(D, ist, m):
    """``QLearning.learn_rows`` of the ``m`` transitions in scratch rows 0 .. m (states, actions, rewards, holding
    times): one table's update, or double Q-learning's halves (a fair coin per row from the policy's stream; A's rows
    first toward B's value of A's greedy next action, then B's against the updated A), each half's rows copied after
    the transitions' own."""
    L = D[15]
    fs, ix, n = L[27], L[28], L[17][LF_N]
    if L[17][LF_DOUBLE] == 0.0:
        _q_update(D, L[0], L[19], 0, m, False)
    else:
        bg = L[26]
        for i in range(m):
            ix[i, R_FIRST] = 1 if _rng_random(bg) < 0.5 else 0
        base = int(n)
        for half in range(2):
            own, other, visits = (L[0], L[1], L[19]) if half == 0 else (L[1], L[0], L[20])
            h = 0
            for i in range(m):
                if ix[i, R_FIRST] == 1 - half:
                    r = base + h
                    for c in range(8):
                        fs[r, c] = fs[i, c]
                        ix[r, c] = ix[i, c]
                    t, s2 = ix[i, R_T], ix[i, R_S2]
                    fs[r, R_BOOT] = other[t, s2, _first_max(own, t, s2)]
                    h += 1
            if h:
                _q_update(D, own, visits, base, h, True)
    ist[L_UPDATES] += m


@_jit
def _epsilon(D, decisions):
    """``EpsilonSchedule.value`` of the decisions so far (numpy's exp)."""
    lf = D[15][17]
    d = float(decisions)
    start, end, decay = lf[LF_EPS_START], lf[LF_EPS_END], lf[LF_EPS_DECAY]
    if lf[LF_EPS_EXP] != 0.0:
        return end + (start - end) * _np_unary(D[12], D[13], _EXP, -d / decay)
    return start + (end - start) * _pmin(d / decay, 1.0)


@_jit
def _accrue(D, agents, k):
    """``TransitionBuilder.accrue`` of agents ``agents[:k]`` with row q's feedback: each open transition adds the
    reward discounted to its start (numpy's power) and the interval."""
    L, addr, io = D[15], D[12], D[13]
    lf, fs, b_open, b_reward, b_elapsed = L[17], L[27], L[21], L[24], L[25]
    gamma, tau = lf[LF_GAMMA], lf[LF_TAU]
    for q in range(k):
        g = agents[q]
        if b_open[g]:
            discount = _np_power_base(addr, io, gamma, b_elapsed[g] / tau)
            b_reward[g] = b_reward[g] + discount * fs[q, R_REWARD]
            b_elapsed[g] = b_elapsed[g] + fs[q, R_DT]


@_jit
def _explore(D, ist, m):
    """``LearningPolicy._decide``'s exploration for the ``m`` deciders in the row scratch: ε from the decisions so
    far, one ``random()`` per decider, then ``integers(0, n_bid)`` for each that explores, in order."""
    L = D[15]
    ix, bg = L[28], L[26]
    eps = _epsilon(D, ist[L_DECISIONS])
    for q in range(m):
        ix[q, R_FIRST] = 1 if _rng_random(bg) < eps else 0
    n_bid = int(L[17][LF_N_BID])
    for q in range(m):
        if ix[q, R_FIRST] == 1:
            ix[q, R_A] = _rng_integers(bg, n_bid)


@_jit
def _start(D, m):
    """``TransitionBuilder.start`` of the ``m`` deciders in the row scratch (their features' row ``R_Q``)."""
    L = D[15]
    ix, X, b_open, b_obs, b_action, b_reward, b_elapsed = L[28], L[18], L[21], L[22], L[23], L[24], L[25]
    for q in range(m):
        g, row = ix[q, R_G], ix[q, R_Q]
        b_open[g] = True
        for c in range(X.shape[1]):
            b_obs[g, c] = X[row, c]
        b_action[g] = ix[q, R_A]
        b_reward[g] = 0.0
        b_elapsed[g] = 0.0


@_jit
def _close_learn(G, D, ist, agents, k, deciding_only):
    """``TransitionBuilder.close`` of the open transitions of agents ``agents[:k]`` (``deciding_only``: those with
    a running job on an active GPU), their states against the features' rows; recorded if the policy keeps
    transitions, and, learning, the update on them (a DQN: into its replay)."""
    L = D[15]
    lf, X, fs, ix, b_open, b_obs, b_action = L[17], L[18], L[27], L[28], L[21], L[22], L[23]
    st, asg = G[0], G[1]
    per_agent, dqn = lf[LF_PER_AGENT] != 0.0, lf[LF_DQN] != 0.0
    m = 0
    for q in range(k):
        g = agents[q]
        if b_open[g] and not (deciding_only and not (asg[g] >= 0 and st[g] == ACTIVE)):
            b_open[g] = False
            ix[m, R_G], ix[m, R_Q], ix[m, R_A] = g, q, b_action[g]
            if not dqn:
                ix[m, R_T], ix[m, R_S], ix[m, R_S2] = g if per_agent else 0, _state(L, b_obs, g), _state(L, X, q)
            fs[m, R_REWARD], fs[m, R_DT] = L[24][g], L[25][g]
            m += 1
    if m and ist[REC_ON] != 0:
        _record(D, ist, m)
    if m and lf[LF_LEARNING] != 0.0:
        if dqn:  # DQN.learn_rows: into the replay ring (learning rounds sample it)
            _ring_add(ix, fs, X, b_obs, L[44], L[45], L[46], L[47], L[48], L[49], ist, RP_POS, m)
        else:
            _learn(D, ist, m)


@_jit
def _record(D, ist, m):
    """``ReplayBuffer.add`` of the ``m`` transitions just closed into the kept transitions (``recorded``)."""
    L = D[15]
    _ring_add(L[28], L[27], L[18], L[22], L[34], L[35], L[36], L[37], L[38], L[39], ist, REC_POS, m)


@_jit
def _ring_add(ix, fs, X, b_obs, r_obs, r_action, r_reward, r_next, r_dt, r_term, ist, at, m):
    """``ReplayBuffer.add`` of the ``m`` transitions just closed (scratch rows 0 .. m: agent, features' row, action,
    reward, holding time; their start in the builder's ``b_obs``) into the ring ``r_*`` whose write position and
    size are ``ist[at]`` and ``ist[at + 1]``: at its write position, the newest ``capacity`` of them if there are
    more."""
    cap = r_action.size
    if cap == 0:
        return
    first = m - cap if m > cap else 0
    pos = ist[at]
    for i in range(first, m):
        slot = (pos + i - first) % cap
        g, q = ix[i, R_G], ix[i, R_Q]
        for c in range(X.shape[1]):
            r_obs[slot, c] = b_obs[g, c]
            r_next[slot, c] = X[q, c]
        r_action[slot] = ix[i, R_A]
        r_reward[slot] = fs[i, R_REWARD]
        r_dt[slot] = fs[i, R_DT]
        r_term[slot] = False
    n = m - first
    ist[at] = (pos + n) % cap
    ist[at + 1] = min(ist[at + 1] + n, cap)


@_jit
def _mlp_actions(D, m):
    """``DQN.choose`` of the ``m`` deciders in the row scratch (``ActingWeights.q_values``, then numpy's argmax):
    their feature rows gathered in order as one C-ordered float32 block, each layer numpy's float32 matrix product
    over the m rows at once (numpy's per-row results may depend on the row count), its bias added and, between
    layers, ``h *= h > 0``; each row's action the first maximum of its Q-values (the first NaN if any)."""
    L, addr, ib = D[15], D[12], D[14]
    X, ix, W, lay, act = L[18], L[28], L[41], L[42], L[43]
    f, rows = X.shape[1], X.shape[0]
    for q in range(m):
        r = ix[q, R_Q]
        for c in range(f):
            act[q * f + c] = np.float32(X[r, c])
    width = 0
    for layer in range(lay.shape[0]):
        width = max(width, lay[layer, 1])
    wb, ab = W.ctypes.data, act.ctypes.data
    src, dst, other = 0, rows * f, rows * f + rows * width  # the input block, then two blocks of hidden values
    last = lay.shape[0] - 1
    for layer in range(last + 1):
        n_in, n_out, w_at, b_at = lay[layer, 0], lay[layer, 1], lay[layer, 2], lay[layer, 3]
        _np_matmul_f32(addr, ib, ab + 4 * src, wb + 4 * w_at, ab + 4 * dst, m, n_in, n_out)
        for i in range(dst, dst + m * n_out, n_out):
            for c in range(n_out):
                v = act[i + c] + W[b_at + c]
                if layer < last:  # h *= h > 0
                    v = v * np.float32(1.0 if v > 0 else 0.0)
                act[i + c] = v
        src, dst = dst, (other if src == 0 else src)
    n_a = lay[last, 1]
    for q in range(m):
        at = src + q * n_a
        best, best_value = 0, act[at]
        if best_value == best_value:
            for a in range(1, n_a):
                v = act[at + a]
                if v != v:
                    best = a
                    break
                if v > best_value:
                    best, best_value = a, v
        ix[q, R_A] = best


#: The Python side of a compiled DQN's learning rounds, by key (``ist[HOOK]``; set by dcsim.compiled).
HOOKS: dict = {}


def _run_hook(key):
    HOOKS[key]()


@_jit
def _learning_due(D, ist, now):
    """``DQN.bid``'s learning round, after the bids: while learning, at the first decision at or after the time of
    the next round (every ``learn_every_s`` of simulated time), the policy's ``learning_round`` (gradient steps on
    samples of the replay, drawn from the policy's stream, and the acting weights refreshed in place) runs in
    Python, through the hook ``ist[HOOK]``."""
    lf = D[15][17]
    if lf[LF_DQN] != 0.0 and lf[LF_LEARNING] != 0.0 and now >= lf[LF_NEXT_LEARN]:
        lf[LF_NEXT_LEARN] = now + lf[LF_LEARN_EVERY]
        key = ist[HOOK]
        with objmode():
            _run_hook(key)


@_jit
def _decide(G, D, ist, agents, k, deciding_only):
    """The greedy actions of agents ``agents[:k]`` (``deciding_only``: those with a running job on an active
    GPU) into the row scratch, explored and their transitions opened while learning; returns how many decided."""
    L = D[15]
    lf, X, ix = L[17], L[18], L[28]
    st, asg = G[0], G[1]
    per_agent = lf[LF_PER_AGENT] != 0.0
    m = 0
    for q in range(k):
        g = agents[q]
        if deciding_only and not (asg[g] >= 0 and st[g] == ACTIVE):
            continue
        ix[m, R_G], ix[m, R_Q] = g, q
        if lf[LF_DQN] == 0.0:
            ix[m, R_A] = _greedy(L, g if per_agent else 0, _state(L, X, q))
        m += 1
    if lf[LF_DQN] != 0.0 and m:
        _mlp_actions(D, m)
    if m and lf[LF_LEARNING] != 0.0:
        _explore(D, ist, m)
    if m and (lf[LF_LEARNING] != 0.0 or ist[REC_ON] != 0):  # transitions open while learning or recording
        _start(D, m)
    ist[L_DECISIONS] += m
    return m


@_jit
def _learner_bids(G, S, D, ist, fst, j, now):
    """:meth:`LearningPolicy.bid` of a learner for starting job ``j``'s agents (``_bid_few``, and the numpy form's
    same steps for more than 16): the reward meter's feedback, the features; learning or keeping transitions, the
    open transitions accrue the feedback and close (recorded; learning, the table(s) updated or the replay added
    to); the greedy actions, ε-greedy exploration from the policy's stream while learning, the new transitions
    opened; what each action's bid buys at the round's price; a DQN's learning round when one is due. (A frozen
    policy that keeps no transitions skips the transitions: nothing reads them.)"""
    L = D[15]
    want, agents = G[12], S[18][j]
    k = S[2][j]
    _feedback_rows(G, D, fst, agents, k, now)
    _shared_features(D, ist, fst, now)
    for q in range(k):
        _features(G, S, D, ist, fst, agents[q], q, now)
    if L[17][LF_LEARNING] != 0.0 or ist[REC_ON] != 0:
        _accrue(D, agents, k)
        _close_learn(G, D, ist, agents, k, False)
    _decide(G, D, ist, agents, k, False)
    ix, price = L[28], fst[PRICE]
    for q in range(k):
        want[ix[q, R_G]] = _agent_want(S, D, ist, fst, j, k, kr.BID_ACTIONS, ix[q, R_A], price, now)
    _learning_due(D, ist, now)


@_jit
def _pace_request(S, D, fst, j, now, safety):
    """:func:`dcsim.learning.pace_power_w` of job ``j``'s agents: the power that finishes by the deadline with
    ``safety`` (numpy's two powers), full power without a deadline."""
    idle, full = fst[IDLE_W], fst[FULL_W]
    r = _remaining(S, j, now)
    sl = S[3][j] - now - r
    time_left = (sl + r) / safety
    rate = r / time_left if time_left > 0 else _INF
    # the two powers are numpy's (its loop through dcsim.npmath): ``clipped ** exponent``, then ``f ** gamma``
    f = _np_power(D[12], D[13], _pmin(_pmax(rate, 0.0), 1.0), 1.0 / _pmax(S[5][j], 1e-6), False)
    fg = _gamma_pow(D, f, fst[GAMMA])
    scale = (fst[TDP_W] - idle) * fst[UTIL]
    return _pmin(_pmax(idle + scale * fg, fst[MIN_CAP_W]), full) if np.isfinite(sl) else full


@_jit
def _value_per_kwh(S, fst, j, now):
    """:func:`dcsim.learning.job_value_per_kwh` of job ``j``'s agents."""
    e = _remaining(S, j, now) * (fst[FULL_W] - fst[IDLE_W]) / 3.6e6
    return S[4][j] / _pmax_int(S[2][j], 1) / e if e > 0 else 0.0


@_jit
def learner_round(G, S, D, ist, fst, now, request, max_price, steps_w, steps_price):
    """:meth:`LearningPolicy.bid` at a market round for every agent (the numpy form; a cluster of at most 16 GPUs
    takes the few-row form in Python, the same numbers): every agent's feedback and features, the open
    transitions' accrual; those with a running job on an active GPU decide (learning: their transitions close and
    update the table(s), ε-greedy actions, new transitions), the others bid FULL. Writes the bids of
    :func:`dcsim.learning.bids_from_actions` (the two-step curves only used if any bid is two blocks) and returns
    whether any is."""
    L = D[15]
    n = ist[N_GPUS]
    agents, ix, fs, asg = L[31], L[28], L[27], G[1]
    _feedback_rows(G, D, fst, agents, n, now)
    _shared_features(D, ist, fst, now)
    for g in range(n):
        _features(G, S, D, ist, fst, g, g, now)
    if L[17][LF_LEARNING] != 0.0 or ist[REC_ON] != 0:
        _accrue(D, agents, n)
        _close_learn(G, D, ist, agents, n, True)
    m = _decide(G, D, ist, agents, n, True)
    idle, full = fst[IDLE_W], fst[FULL_W]
    floor = _pmax(fst[MIN_CAP_W], idle)
    for g in range(n):
        request[g], max_price[g] = full, _INF
    two = False
    for q in range(m):
        g, action = ix[q, R_G], ix[q, R_A]
        request[g], max_price[g], fs[q, R_BOOT] = _action_bid(S, D, fst, asg[g], action, now)  # R_BOOT: rest's price
        two = two or _two_block(action)
    if two:
        for g in range(n):
            steps_w[g, 0], steps_w[g, 1] = request[g] - idle, 0.0
            steps_price[g, 0], steps_price[g, 1] = max_price[g], 0.0
        for q in range(m):
            if _two_block(ix[q, R_A]):
                g = ix[q, R_G]
                steps_w[g, 0], steps_w[g, 1] = floor - idle, full - floor
                steps_price[g, 0], steps_price[g, 1] = _INF, fs[q, R_BOOT]
    _learning_due(D, ist, now)
    return two


@_jit
def _one_block(request, max_price, price, idle, span):
    """:meth:`MarketRound.few_wants_at_price` of a one-block bid."""
    return _pmin(_pmax(request - idle if max_price >= price else 0.0, 0.0), span)


@_jit
def _two_blocks(first_w, second_w, second_price, price, span):
    """:meth:`MarketRound.few_wants_at_price` of a two-block bid whose first block is price-blind."""
    x0 = first_w if _INF >= price else 0.0
    x1 = second_w if second_price >= price else 0.0
    return _pmin(_pmax(x0 + x1, 0.0), span)


@_jit
def _pmax_int(a, b):
    return b if b > a else a


@_jit
def _defers(S, ist, fst, j, now):
    """The compiled rule's admission of arrived deferrable job ``j``: True to hold it."""
    kind = ist[ADMIT_KIND]
    if kind == kr.ADMIT_PRICE_ABOVE:
        return fst[PRICE] > fst[AP0]
    if kind == kr.ADMIT_RENEWABLE_BELOW:
        return _renewable_fraction(fst) < fst[AP0]
    scarce = fst[PRICE] > fst[P0] * fst[AP0 + 1]  # ADMIT_SLACK (DeadlineSlack.admit)
    wait_s = _pmax(fst[NEXT_ROUND] - now, 0.0)
    duration = S[6][j]
    slack = S[3][j] - now - duration
    return scarce and slack - wait_s > (fst[AP0] - 1) * duration


@_jit
def _tr_add(G, D, ist, fst, f, g, now):
    """GPU ``g`` joins the transition being begun on FIFO ``f`` (:meth:`Cluster.begin_transition`'s loop)."""
    ring = D[11]
    n = ring.shape[1]
    ring[f, (ist[GR_HEAD + f] + ist[GR_LEN + f]) % n] = g
    ist[GR_LEN + f] += 1
    G[0][g] = ENTERING_SLEEP if f == 0 else WAKING
    _set_power(G, fst, g, fst[PW_ENTER] if f == 0 else fst[PW_WAKE], 0.0, now)


@_jit
def _tr_begin(D, ist, fst, f, count, now):
    """The transition of the last ``count`` GPUs added on FIFO ``f`` begins: its end is a timeout (id drawn now)."""
    et, es, e0, en = D[7], D[8], D[9], D[10]
    n = et.shape[1]
    i = (ist[EV_HEAD + f] + ist[EV_LEN + f]) % n
    et[f, i] = now + fst[TR_S + f]
    es[f, i] = ist[SEQ]
    ist[SEQ] += 1
    e0[f, i] = (ist[GR_HEAD + f] + ist[GR_LEN + f] - count) % n
    en[f, i] = count
    ist[EV_LEN + f] += 1


@_jit
def idle_decision(G, D, ist, fst, lo, now):
    """:meth:`DecisionDispatcher.idle_decisions` for the idle pool's GPUs from ``lo`` up (those a completion
    freed, or all at a round): one decision; under ``IDLE_SLEEP`` they go to sleep (:meth:`Cluster.power_down`)."""
    n_idle = ist[N_IDLE]
    m = n_idle - lo
    if m <= 0 or ist[Q_LEN] > 0:
        return
    _log(D, ist, now, 2, m)
    if ist[IDLE_KIND] != kr.IDLE_SLEEP:
        return
    idle, pool = G[8], D[2]
    for q in range(lo, n_idle):
        g = idle[q]
        pool[ist[N_SLEEP]] = g
        ist[N_SLEEP] += 1
    ist[N_IDLE] = lo
    for q in range(lo, n_idle):
        _tr_add(G, D, ist, fst, 0, idle[q], now)
    _tr_begin(D, ist, fst, 0, m, now)


@_jit
def _spot_allocation(G, S, D, ist, fst, j, now):
    bw, boff, wal, owed, want = G[3], G[5], G[9], G[11], G[12]
    jg, k = S[18], S[2][j]
    if ist[BID_KIND] != kr.BID_NONE:
        _start_wants(G, S, D, ist, fst, j, now)
    price = fst[PRICE]
    left = _pmax(fst[NEXT_ROUND] - now, fst[NEXT_ROUND_ULP])
    a = fst[SPAN_W]
    for q in range(k):
        g = jg[j, q]
        _reprice(G, g, price, now)
        if price > 0:
            owes = owed[g] + price * (boff[g] + bw[g] * now) / J_PER_KWH
            afford = _pmax(wal[g] - owes, 0.0) * J_PER_KWH / (price * left)
        else:
            afford = _INF
        a = _pmin(_pmin(a, want[g]), afford)
    headroom = _pmax(0.0, fst[SELLABLE] - fst[ALLOC_W])
    return _pmax(0.0, _pmin(a, headroom / k))


@_jit
def set_job_alloc(G, S, H, ist, fst, j, alloc, now):
    """:meth:`Dispatcher.set_job_alloc` with :meth:`Cluster.cap`."""
    al, ck = G[6], G[7]
    gid, beta_, rem, rate_, last, jal, ver, jg = S[0], S[5], S[11], S[12], S[13], S[14], S[17], S[18]
    idle = fst[IDLE_W]
    if idle + alloc < fst[MIN_CAP_FLOOR] or alloc <= 0:
        f, power, a = 0.0, idle, 0.0
    else:
        span = fst[SPAN_W]
        ratio = _pmin(alloc / span, 1.0)
        f, power, a = ratio ** (1.0 / fst[GAMMA]), idle + span * ratio, alloc
    billable = power - idle
    for q in range(S[2][j]):
        g = jg[j, q]
        _set_power(G, fst, g, power, billable, now)
        fst[ALLOC_W] += a - al[g]
        al[g] = a
        ck[g] = f
    jal[j] = a
    beta = beta_[j]
    rate = 0.0 if f == 0.0 else (f if beta == 1.0 else f ** beta)
    old = rate_[j]
    if rate != old:
        remaining = rem[j] - old * (now - last[j])
        remaining = remaining if remaining > 0.0 else 0.0
        rem[j] = remaining
        last[j] = now
        rate_[j] = rate
        ver[j] += 1
        if rate > 0:
            heap_push(H, ist, now + remaining / rate, gid[j], ver[j], j)


# ---------------------------------------------------------------------------------------------- jobs
@_jit
def _end(S, O, ist, j):
    """A job ended (dropped): its results to the out buffer, its slot freed (Dispatcher._end)."""
    gid, stat, why, start, finish, jen, ver, free = S[0], S[7], S[8], S[9], S[10], S[15], S[17], S[19]
    n = ist[OUT_N]
    O[0][n], O[1][n], O[2][n], O[3][n], O[4][n], O[5][n] = gid[j], stat[j], why[j], start[j], finish[j], jen[j]
    ist[OUT_N] = n + 1
    why[j] = 0
    gid[j] = -1
    stat[j] = FUTURE
    ver[j] += 1
    free[ist[N_FREE]] = j
    ist[N_FREE] += 1


@_jit
def _drop(S, O, ist, fst, j, reason, now):
    if ist[LEARNER] != 0:  # RewardMeter.drop: the wait, a miss if it expired, and the drop are shared
        fst[RM_SH] += now - S[1][j]
        fst[RM_SH + 1] += 1.0 if reason == _EXPIRED else 0.0
        fst[RM_SH + 2] += 1.0
    S[7][j] = DROPPED
    S[8][j] = reason
    S[10][j] = now
    _end(S, O, ist, j)


@_jit
def _start_job(G, S, H, D, ist, fst, j, now):
    st, pw, eoff = G[0], G[2], G[4]
    S[7][j] = RUNNING
    S[9][j] = now
    jg = S[18]
    if ist[LEARNER] != 0:  # RewardMeter.start: the wait is shared; from now its GPUs accrue its latency
        fst[RM_SH] += now - S[1][j]
        k = S[2][j]
        lat_off, lat_rate = D[15][8], D[15][9]
        for q in range(k):
            g = jg[j, q]
            lat_off[g] -= now / k
            lat_rate[g] += 1.0 / k
    S[13][j] = now
    mark = 0.0
    for q in range(S[2][j]):
        g = jg[j, q]
        st[g] = ACTIVE
        mark += eoff[g] + pw[g] * now
    S[16][j] = mark
    set_job_alloc(G, S, H, ist, fst, j, _spot_allocation(G, S, D, ist, fst, j, now), now)
    over = fst[ALLOC_W] - fst[SELLABLE]
    if over > fst[PEAK_OVER]:
        fst[PEAK_OVER] = over


@_jit
def _qpop(S, ist):
    queue = S[20]
    j = queue[ist[Q_HEAD]]
    ist[Q_HEAD] = (ist[Q_HEAD] + 1) % queue.size
    ist[Q_LEN] -= 1
    return j


@_jit
def dispatch(G, S, H, O, D, ist, fst, now):
    """:meth:`Dispatcher.dispatch`: strict FCFS while enough GPUs are free (idle ones first, then sleeping ones,
    which wake: :meth:`Dispatcher._claim_placed`)."""
    if ist[Q_LEN] == 0:
        return
    st, asg, idle, sleep_pool = G[0], G[1], G[8], D[2]
    deadline, kk, jg, queue = S[3], S[2], S[18], S[20]
    free = ist[N_IDLE] + ist[N_SLEEP]
    while ist[Q_LEN] > 0:
        j = queue[ist[Q_HEAD]]
        if ist[DROP_EXPIRED] != 0 and deadline[j] < now:
            _qpop(S, ist)
            _drop(S, O, ist, fst, j, _EXPIRED, now)
            continue
        k = kk[j]
        if k > free:
            break
        _qpop(S, ist)
        free -= k
        not_ready = 0
        for q in range(k):  # popitem() of the idle pool (the last GPU that became idle), then of the sleep pool
            if ist[N_IDLE] > 0:
                n = ist[N_IDLE] - 1
                g = idle[n]
                ist[N_IDLE] = n
            else:
                n = ist[N_SLEEP] - 1
                g = sleep_pool[n]
                ist[N_SLEEP] = n
            asg[g] = j
            jg[j, q] = g
            if st[g] != IDLE:
                not_ready += 1
        ist[RUNNING_N] += 1
        if not_ready == 0:
            _start_job(G, S, H, D, ist, fst, j, now)
            continue
        D[0][j] = not_ready
        S[7][j] = STARTING
        wake_after = D[1]
        asleep = 0
        for q in range(k):
            g = jg[j, q]
            if st[g] != IDLE and st[g] != SLEEP:  # mid-transition to sleep: wake as soon as it settles
                wake_after[g] = 1
        for q in range(k):
            g = jg[j, q]
            if st[g] == SLEEP:
                _tr_add(G, D, ist, fst, 1, g, now)
                asleep += 1
        if asleep:
            _tr_begin(D, ist, fst, 1, asleep, now)


@_jit
def drop_expired_queued(S, O, ist, fst, now):
    """:meth:`Dispatcher.drop_expired_queued` (the caller checked ``drop_expired``)."""
    deadline, queue = S[3], S[20]
    n, head, size = ist[Q_LEN], ist[Q_HEAD], queue.size
    any_expired = False
    for q in range(n):
        if deadline[queue[(head + q) % size]] < now:
            any_expired = True
            break
    if not any_expired:
        return
    kept = 0
    for q in range(n):
        j = queue[(head + q) % size]
        if deadline[j] < now:
            _drop(S, O, ist, fst, j, _EXPIRED, now)
        else:
            queue[(head + kept) % size] = j
            kept += 1
    ist[Q_LEN] = kept


@_jit
def arm(H, T, S, ist, now):
    """:meth:`Dispatcher.arm`: a timer (its event id drawn now) at the earliest valid completion, unless an
    earlier one is pending. Timers only ever go in earlier than every pending one, so they form a stack."""
    ver, stat = S[17], S[7]
    hv, hs = H[2], H[3]
    while ist[HEAP_N] > 0:
        j = hs[0]
        if ver[j] == hv[0] and stat[j] == RUNNING:
            break
        heap_pop(H, ist)
    if ist[HEAP_N] == 0:
        return
    t = H[0][0]
    traw, tev, tseq = T
    n = ist[TIMER_N]
    if n > 0 and t >= traw[n - 1]:
        return
    traw[n] = t
    tev[n] = now + delay_to(now, t)
    tseq[n] = ist[SEQ]
    ist[SEQ] += 1
    ist[TIMER_N] = n + 1


@_jit
def set_allocs(G, S, H, T, ist, fst, jobs, allocs, now):
    """The end of :meth:`Dispatcher.apply_allocations`: set each moved job's allocation in order, then arm."""
    for q in range(jobs.size):
        set_job_alloc(G, S, H, ist, fst, jobs[q], allocs[q], now)
    arm(H, T, S, ist, now)


@_jit
def _complete(G, S, O, D, ist, fst, j, now):
    st, asg, pw, eoff, al, ck, idle, wal = G[0], G[1], G[2], G[4], G[6], G[7], G[8], G[9]
    gid, kk, val, stat, start, jen, mark, ver, jg, free = S[0], S[2], S[4], S[7], S[9], S[15], S[16], S[17], S[18], S[19]
    k = kk[j]
    value = val[j]
    share = value / k
    energy = 0.0
    idle_w = fst[IDLE_W]
    for q in range(k):
        g = jg[j, q]
        energy += eoff[g] + pw[g] * now
        _set_power(G, fst, g, idle_w, 0.0, now)
        fst[ALLOC_W] -= al[g]
        al[g] = 0.0
        ck[g] = 0.0
        st[g] = IDLE
        asg[g] = -1
        idle[ist[N_IDLE]] = g
        ist[N_IDLE] += 1
    ist[RUNNING_N] -= 1
    energy = jen[j] + (energy - mark[j])
    if ist[LEARNER] != 0:  # RewardMeter.complete: the value shares, the latency stops, a late job's miss shared
        L = D[15]
        rv, rl_off, rl_rate, rm = L[5], L[8], L[9], L[6]
        late = now > S[3][j]
        for q in range(k):
            g = jg[j, q]
            rv[g] += share
            rl_off[g] += now / k
            rl_rate[g] -= 1.0 / k
            if late:
                rm[g] += 1.0 / k
    for q in range(k):  # MarketRound.credit_job_value (round-level ledger)
        wal[jg[j, q]] += share
    fst[MINTED] += value
    fst[CREDITED] += value
    n = ist[OUT_N]
    O[0][n], O[1][n], O[2][n], O[3][n], O[4][n], O[5][n] = gid[j], COMPLETED, 0, start[j], now, energy
    ist[OUT_N] = n + 1
    gid[j] = -1
    stat[j] = FUTURE
    ver[j] += 1
    free[ist[N_FREE]] = j
    ist[N_FREE] += 1


@_jit
def _plant_book(fst, dt, it_w, heat_j):
    """:meth:`CoolingPlant._book`."""
    fst[P_HEAT_J] += heat_j
    it_j = it_w * dt
    cooling_j = fst[P_K] * heat_j + fst[P_FAN] * dt
    overhead_j = fst[P_OVERHEAD] * dt
    facility_j = it_j + cooling_j + overhead_j
    fst[P_IT_J] += it_j
    fst[P_COOL_J] += cooling_j
    fst[P_OVER_J] += overhead_j
    fst[P_FAC_J] += facility_j
    if it_w > 0.0:
        fst[P_PUE_INT] += facility_j / it_w
        fst[P_IT_ON] += dt
    return facility_j


@_jit
def _plant_interval(fst, dt, it_w):
    """:meth:`CoolingPlant._interval` (fixed setpoints)."""
    if dt <= 0.0:
        return 0.0
    q0 = fst[P_HEAT]
    tau = fst[P_TAU]
    if tau > 0.0:
        decayed = -math.expm1(-dt / tau)
        heat_j = it_w * dt + (q0 - it_w) * tau * decayed
        fst[P_HEAT] = it_w + (q0 - it_w) * (1.0 - decayed)
    else:
        heat_j = it_w * dt
        fst[P_HEAT] = it_w
    return _plant_book(fst, dt, it_w, heat_j)


@_jit
def _plant_energy_to(P, ist, fst, now, it_w):
    """:meth:`CoolingPlant.energy_to`: the facility energy of ``[last call, now]`` at IT power ``it_w``."""
    k, change = P
    total = 0.0
    while fst[P_NEXT] <= now:  # the weather changes inside the interval: split there
        total += _plant_interval(fst, fst[P_NEXT] - fst[P_T], it_w)
        fst[P_T] = fst[P_NEXT]
        i = ist[P_I] + 1
        ist[P_I] = i
        fst[P_K] = k[i]
        fst[P_NEXT] = change[i + 1] if i + 1 < change.size else _INF
    if now > fst[P_T]:
        total += _plant_interval(fst, now - fst[P_T], it_w)
        fst[P_T] = now
    return total


@_jit
def _advance(P, ist, fst, now):
    """:meth:`EnergyMeter.advance` (or, with cooling, its ``_advance_facility``) with :meth:`EnergyBooks.advance`
    (a battery or none; not the dispatched one)."""
    dt = now - fst[T_BOOKS]
    if dt > 0:
        demand = _pmax(0.0, fst[TOTAL_W])
        if fst[COOLING] != 0.0:  # the books take the interval's mean facility power
            demand = _plant_energy_to(P, ist, fst, now, demand) / dt
        renewable, carbon, price, cap = fst[RENEW_W], fst[CARBON], fst[GRID_PRICE], fst[IMPORT_CAP]
        capacity = fst[CAPACITY]
        if capacity == 0.0 and (renewable >= demand or demand - renewable <= cap):
            # no battery and no shortfall: one interval, no splitting
            used = _pmin(renewable, demand)
            grid = demand - used
            fst[CONSUMED] += demand * dt
            fst[RENEW_USED] += used * dt
            fst[RENEW_GEN] += renewable * dt
            fst[CURTAILED] += (renewable - used) * dt
            if grid > 0.0:
                fst[GRID_J] += grid * dt
                fst[CARBON_G] += grid * dt * carbon / J_PER_KWH
                fst[COST] += grid * dt * price / J_PER_MWH
        else:
            eta_c, eta_d = fst[ETA_C], fst[ETA_D]
            while dt > 0:
                step = dt
                charge = discharge = 0.0
                soc = fst[SOC]
                if renewable >= demand:
                    used = demand
                    surplus = renewable - demand
                    if soc < capacity:
                        charge = _pmin(surplus, fst[MAX_CHARGE])
                        if charge > 0:
                            step = _pmin(step, (capacity - soc) / (charge * eta_c))
                    curtailed = surplus - charge
                    need = 0.0
                else:
                    used = renewable
                    curtailed = 0.0
                    deficit = demand - renewable
                    if soc > 0:
                        discharge = _pmin(deficit, fst[MAX_DISCHARGE])
                        if discharge > 0:
                            step = _pmin(step, soc * eta_d / discharge)
                    need = deficit - discharge
                grid = _pmin(need, cap)
                unserved = need - grid
                fst[CONSUMED] += demand * step
                fst[RENEW_USED] += used * step
                fst[RENEW_GEN] += renewable * step
                fst[CURTAILED] += curtailed * step
                fst[CHARGED] += charge * step
                fst[BATT_OUT] += discharge * step
                fst[BATT_LOSS] += (charge * (1 - eta_c) + discharge * (1 / eta_d - 1)) * step
                fst[GRID_J] += grid * step
                fst[UNSERVED] += unserved * step
                fst[CARBON_G] += grid * step * carbon / J_PER_KWH
                fst[COST] += grid * step * price / J_PER_MWH
                if step < dt:  # the battery hit a limit inside the interval: pin it exactly and go on
                    fst[SOC] = capacity if charge > 0 else 0.0
                else:
                    fst[SOC] = _pmin(capacity, _pmax(0.0, soc + (charge * eta_c - discharge / eta_d) * step))
                dt -= step
        fst[T_BOOKS] = now


@_jit
def schedule_arrival(C, ist, fst):
    """The arrivals process moves to the open chunk's next row after an arrival at ``fst[ARR_NOW]``: return
    at the horizon, take it at once when it is due (no event of its own), or wait for it (an event id drawn)."""
    i = ist[ARR_I]
    if i >= ist[ARR_N]:
        ist[ARR_WAIT] = 1
        return NEED_CHUNK
    ist[ARR_WAIT] = 0
    t = C[0][i]
    now = fst[ARR_NOW]
    if t >= fst[HORIZON]:  # no more arrivals: none pending, none waited for
        return DONE
    ist[ARR_PENDING] = 1
    if t > now:
        fst[ARR_T] = now + delay_to(now, t)
        ist[ARR_SEQ] = ist[SEQ]
        ist[SEQ] += 1
    else:  # in the same step as the last arrival: before anything else at this instant
        fst[ARR_T] = now
        ist[ARR_SEQ] = -1
    return DONE


@_jit
def _enqueue(S, O, ist, fst, j, now):
    """:meth:`Dispatcher.enqueue` of one job: it queues, or is dropped when the queue is full."""
    if ist[MAX_QUEUE] >= 0 and ist[Q_LEN] >= ist[MAX_QUEUE]:
        _drop(S, O, ist, fst, j, _QUEUE_FULL, now)
    else:
        S[7][j] = QUEUED
        queue = S[20]
        queue[(ist[Q_HEAD] + ist[Q_LEN]) % queue.size] = j
        ist[Q_LEN] += 1


@_jit
def enqueue(S, O, ist, fst, jobs, now):
    """:meth:`Dispatcher.enqueue` (a round admitting held jobs)."""
    for q in range(jobs.size):
        _enqueue(S, O, ist, fst, jobs[q], now)


@_jit
def drop(S, O, ist, fst, j, reason, now):
    """:meth:`Dispatcher.drop` (a round dropping a held job whose deadline passed)."""
    _drop(S, O, ist, fst, j, reason, now)


@_jit
def _arrival(G, S, H, T, C, O, P, D, ist, fst, now):
    _advance(P, ist, fst, now)
    ist[N_EVENTS] += 1
    i = ist[ARR_I]
    ist[ARR_I] = i + 1
    ist[ARR_PENDING] = 0
    free = S[19]
    ist[N_FREE] -= 1
    j = free[ist[N_FREE]]
    S[0][j] = ist[ARR_BASE] + i
    S[1][j] = C[0][i]
    S[2][j] = C[1][i]
    S[3][j] = C[2][i]
    S[4][j] = C[3][i]
    S[5][j] = C[4][i]
    S[6][j] = S[11][j] = C[5][i]
    S[9][j] = np.nan
    S[12][j] = S[15][j] = 0.0
    if S[2][j] > ist[N_GPUS]:
        _drop(S, O, ist, fst, j, _TOO_LARGE, now)
    else:
        if ist[ADMIT_KIND] != kr.ADMIT_NONE and C[6][i] != 0:  # DecisionDispatcher.admit_arrival (event timing)
            if ist[DROP_EXPIRED] != 0 and S[3][j] < now:
                _drop(S, O, ist, fst, j, _EXPIRED, now)
            else:
                _log(D, ist, now, 1, 1)
                if _defers(S, ist, fst, j, now):
                    S[7][j] = DEFERRED
                    D[3][ist[DEF_N]] = j
                    ist[DEF_N] += 1
                else:
                    _enqueue(S, O, ist, fst, j, now)
        else:
            _enqueue(S, O, ist, fst, j, now)
        dispatch(G, S, H, O, D, ist, fst, now)
        arm(H, T, S, ist, now)
    fst[ARR_NOW] = now
    return schedule_arrival(C, ist, fst)


@_jit
def _timer(G, S, H, T, O, P, D, ist, fst, now):
    _advance(P, ist, fst, now)
    ist[N_EVENTS] += 1
    ist[TIMER_N] -= 1
    lo = ist[N_IDLE]  # the GPUs the completions free go on the idle pool from here
    due = now + SAME_INSTANT_ULPS * ulp(now)
    ht, hg, hv, hs = H
    ver, stat = S[17], S[7]
    freed = False
    while ist[HEAP_N] > 0 and ht[0] <= due:
        v, j = hv[0], hs[0]
        heap_pop(H, ist)
        if ver[j] == v and stat[j] == RUNNING:
            freed = True
            _complete(G, S, O, D, ist, fst, j, now)
    if freed:
        dispatch(G, S, H, O, D, ist, fst, now)
        if ist[IDLE_KIND] != kr.IDLE_NONE:  # those still idle (dispatch takes from the top) decide
            idle_decision(G, D, ist, fst, lo, now)
    arm(H, T, S, ist, now)


@_jit
def _transition_end(G, S, H, T, O, P, D, ist, fst, f, now):
    """The transition at the head of FIFO ``f`` ends (the engine's ``_on_transition_end``): its GPUs settle
    asleep (those a job claimed meanwhile wake at once) or idle (the jobs waiting only for them start)."""
    _advance(P, ist, fst, now)
    ist[N_EVENTS] += 1
    e0, en, ring = D[9], D[10], D[11]
    n = ring.shape[1]
    h = ist[EV_HEAD + f]
    first, count = e0[f, h], en[f, h]
    ist[EV_HEAD + f] = (h + 1) % n
    ist[EV_LEN + f] -= 1
    ist[GR_HEAD + f] = (first + count) % n  # the ring's head entries are this event's GPUs
    ist[GR_LEN + f] -= count
    st, asg = G[0], G[1]
    if f == 0:  # Cluster.end_transition to SLEEP
        for q in range(count):
            g = ring[0, (first + q) % n]
            st[g] = SLEEP
            _set_power(G, fst, g, fst[PW_SLEEP], 0.0, now)
        wake_after = D[1]
        again = 0
        for q in range(count):
            g = ring[0, (first + q) % n]
            if wake_after[g] != 0:
                wake_after[g] = 0
                _tr_add(G, D, ist, fst, 1, g, now)
                again += 1
        if again:
            _tr_begin(D, ist, fst, 1, again, now)
    else:  # to IDLE, then Dispatcher.gpus_ready
        for q in range(count):
            g = ring[1, (first + q) % n]
            st[g] = IDLE
            _set_power(G, fst, g, fst[IDLE_W], 0.0, now)
        pending = D[0]
        for q in range(count):
            j = asg[ring[1, (first + q) % n]]
            if j >= 0:
                pending[j] -= 1
                if pending[j] == 0:
                    _start_job(G, S, H, D, ist, fst, j, now)
    arm(H, T, S, ist, now)


@_jit
def run_until(G, S, H, T, C, O, P, D, ist, fst, t_stop, prio_stop, eid_stop):
    """Handle every job event that SimPy would handle before the event ``(t_stop, prio_stop, eid_stop)``, in
    SimPy's order ``(time, priority, eid)``. Returns DONE, or what the caller must do first (at an event boundary,
    or after an arrival whose successor is in the next chunk) before calling again."""
    tev, tseq = T[1], T[2]
    et, es = D[7], D[8]
    n_gpus = ist[N_GPUS]
    while True:
        if ist[ARR_WAIT] != 0:
            return NEED_CHUNK
        # the earliest of: the next arrival (0), the earliest completion timer (1), each transition FIFO's head (2, 3)
        which = -1
        te, se = _INF, 0
        if ist[ARR_PENDING] != 0:
            which, te, se = 0, fst[ARR_T], ist[ARR_SEQ]
        nt = ist[TIMER_N]
        if nt > 0 and (which < 0 or tev[nt - 1] < te or (tev[nt - 1] == te and tseq[nt - 1] < se)):
            which, te, se = 1, tev[nt - 1], tseq[nt - 1]
        for f in range(2):
            if ist[EV_LEN + f] > 0:
                h = ist[EV_HEAD + f]
                if which < 0 or et[f, h] < te or (et[f, h] == te and es[f, h] < se):
                    which, te, se = 2 + f, et[f, h], es[f, h]
        if which < 0:
            return DONE
        use_a = which == 0
        if te > t_stop or (te == t_stop and (prio_stop < _NORMAL or (prio_stop == _NORMAL and se > eid_stop))):
            return DONE
        # room for the most one event can need (every GPU starting a job, every job in the system ending)
        if use_a and ist[N_FREE] == 0:
            return NEED_SLOTS
        if ist[HEAP_N] + n_gpus + 2 > H[0].size:
            return NEED_HEAP
        if ist[TIMER_N] + 2 > T[0].size:
            return NEED_TIMERS
        if ist[OUT_N] + (S[0].size - ist[N_FREE]) + 2 > O[0].size or ist[DR_N] + n_gpus + 4 > D[4].size:
            return NEED_FLUSH
        if use_a:
            _arrival(G, S, H, T, C, O, P, D, ist, fst, te)
        elif which == 1:
            _timer(G, S, H, T, O, P, D, ist, fst, te)
        else:
            _transition_end(G, S, H, T, O, P, D, ist, fst, which - 2, te)
