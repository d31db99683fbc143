"""The LLM serving queue: c GPUs with continuous batching, per-request configurations, admission, energy and money.

A separate SimPy model from the GPU-job engine (:mod:`dcsim.engine`), chosen when a scenario has
``workload.llm_serving`` (docs/serving.md). Its pieces:

* **Batching.** GPU ``g`` serves up to ``max_batch`` requests at once. With ``b`` requests each advances at
  ``r(b) = relative_throughput(b) / b`` of its batch-1 speed (all requests on a GPU at the same rate), so the
  GPU keeps one *virtual progress* ``V_g`` (reference seconds of work done by each of its requests, ``dV/dt =
  r(b)``): a request joining at ``V0`` with work ``w`` finishes when ``V_g = V0 + w``, and its first token comes
  when ``V_g = V0 + w_prefill``. Completion events are scheduled from ``V`` (one live timer per GPU), never polled;
  when ``b`` changes the GPU's timer is rescheduled. Requests join the least-loaded GPU (lowest index on ties).
* **Configurations.** Request ``i`` served with configuration ``k`` needs ``w_i = t_k · s_i`` reference seconds
  (``s_i``: its batch-1 service time in the reference configuration) and draws power at ``φ_i = e_k / t_k`` times
  its equal share of the GPU's dynamic power, so alone at batch 1 it uses ``e_k`` times the reference energy.
* **Power and money.** ``P_g = P_idle + (P(b) − P_idle)/b · Σ φ_i`` (every GPU stays on). Power is constant
  between events and the price changes only at its series' steps (events too), so energy is ``P·Δt`` per interval
  and its cost ``P·Δt / 3.6e9 × price`` (J → MWh × USD/MWh), exactly. A request's revenue is paid when it
  completes.
* **The token market.** The Token Manager's rounds run over the GPUs as in a job run (:mod:`dcsim.serving.market`):
  wallets, prices, settlement for the energy above idle each GPU draws, revenue minted into wallets. A GPU's
  round allocation ``a_g`` caps its power above idle: a batch drawing ``D_g > a_g`` at full clock runs at clock
  ``f = (a_g / D_g)^(1/γ)`` (all its requests ``f`` times slower, drawing ``a_g``); below the minimum cap the GPU
  pauses and takes no new request. An allocation that covers the draw changes nothing.
* **Admission.** At each arrival instant the policy decides once for every request arriving then
  (:meth:`dcsim.policy.Policy.serve`): serve with a configuration, or deny. A served request starts at once if a
  slot is free, else waits in a FIFO queue; it is dropped if the queue is full (``max_queue``) or once it has
  waited ``max_wait_s``. At the horizon every request is served, denied, dropped or pending (queued or in
  service).
"""
from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import simpy

from dcsim.policy import GpuSpecView, Policy, RequestObservation, ServingAdmission, ServingView, check_serving
from dcsim.serving.arrivals import Requests
from dcsim.serving.configurations import ServingConfig
from dcsim.serving.market import ServingMarket
from dcsim.timeseries import StepSeries

#: Request states in the request table.
FUTURE, QUEUED, IN_SERVICE, SERVED, DENIED, DROPPED = range(6)
STATUS_NAMES = ("future", "queued", "in_service", "served", "denied", "dropped")
#: Why a served request was dropped.
DROP_REASONS = ("", "queue_full", "max_wait")
#: Time constant of the completion-rate estimate shown to policies, s.
RATE_WINDOW_S = 60.0
#: Relative tolerance under which a request's work target counts as reached (float rounding of V).
_TOL = 1e-12
#: A GPU's draw within this factor of its allocation fits it (float rounding of the sums): full clock.
_FITS = 1.0 + 1e-9
#: The configuration a serving run uses without a configuration table.
REFERENCE = ServingConfig("reference", 1.0, 1.0, 1.0)


@dataclass
class ServingResult:
    """A finished serving run.

    Attributes:
        scenario: The scenario.
        policy: The policy that decided.
        configs: The configuration table (row order = the policy's ``config`` index).
        requests: One row per request (arrival, tokens, status, configuration, times, energy, revenue).
        steps: One row per price step inside the run: price, energy and its cost, arrivals and decisions.
        decisions: One row per policy call: time and requests deciding.
        totals: Energy (J, idle and dynamic), cost, revenue (USD).
        counters: ``events`` and ``wall_s``.
        rounds: One row per market round (the job engine's ``rounds`` columns).
        ledger: The token flows (``round, time_s, kind, agent, tokens``).
        tokens: ``minted``, ``spent``, ``burned``, ``debit_shortfall`` and ``held`` tokens at the horizon.
        wallets: Each GPU's wallet at the horizon, tokens.
        allocations_w: Each GPU's allocation (W above idle) at every round, ``(rounds, gpus)``, or None.
        clock: Per GPU: seconds run below full clock (``throttled_s``) and paused (``paused_s``).
    """

    scenario: Any
    policy: Policy
    configs: list[ServingConfig]
    requests: pd.DataFrame
    steps: pd.DataFrame
    decisions: pd.DataFrame
    totals: dict[str, float]
    counters: dict[str, float]
    rounds: pd.DataFrame | None = None
    ledger: pd.DataFrame | None = None
    tokens: dict[str, float] | None = None
    wallets: np.ndarray | None = None
    allocations_w: np.ndarray | None = None
    clock: dict[str, np.ndarray] | None = None


def _gpu_view(scenario: Any) -> GpuSpecView:
    spec = scenario.cluster.power_spec()
    full = spec["idle_w"] + (spec["tdp_w"] - spec["idle_w"]) * spec["utilisation"]
    return GpuSpecView(spec["idle_w"], spec["tdp_w"], spec["min_cap_w"], full, spec["gamma"], spec["utilisation"])


def _interp_table(batch_sizes: list[int], values: list[float], upto: int) -> list[float]:
    """``values`` at batch sizes 1..``upto``, linear between the given points (index 0 unused)."""
    return [0.0] + np.interp(np.arange(1, upto + 1), batch_sizes, values).tolist()


class ServingSimulation:
    """One serving run (see the module docstring for the model).

    Args:
        scenario: A scenario with ``workload.llm_serving``.
        policy: Decides admission and configuration; ``reset`` is called with the ``policy`` stream.
        requests: The arrivals (:func:`dcsim.serving.arrivals.build_requests`).
        configs: The configuration table (at least one row).
        price: The energy price series, USD/MWh, aligned to t = 0.
        streams: The run's named streams.
        carbon: The grid carbon intensity series, g/kWh (the market's carbon adder); None: a constant 0.
        progress: Called with the simulated time now and then (a progress bar), or None.
    """

    def __init__(self, scenario: Any, policy: Policy, requests: Requests, configs: list[ServingConfig],
                 price: StepSeries, streams: Any, progress: Callable[[float], None] | None = None,
                 carbon: StepSeries | None = None):
        cfg = scenario.workload.llm_serving
        self.scenario, self.policy, self.cfg = scenario, policy, cfg
        self.env = simpy.Environment()
        self.configs = list(configs) or [REFERENCE]
        self.price = price
        self.progress = progress
        self.horizon_s = float(scenario.horizon_s)
        self.c = int(scenario.cluster.gpus)
        self.max_batch = int(cfg.max_batch)
        self.idle_w = float(scenario.cluster.power_spec()["idle_w"])
        bt = cfg.batching
        rel = _interp_table(bt.batch_sizes, bt.relative_throughput, self.max_batch)
        power = _interp_table(bt.batch_sizes, bt.power_w, self.max_batch)
        self._rate_of = [0.0] + [rel[b] / b for b in range(1, self.max_batch + 1)]
        self._dyn_of = [0.0] + [(power[b] - self.idle_w) / b for b in range(1, self.max_batch + 1)]
        self._hour0 = (scenario.start.hour + scenario.start.minute / 60 + scenario.start.second / 3600) % 24

        n = len(requests)
        self.n = n
        self.arrival_s = np.asarray(requests.arrival_s, dtype=float)
        self.prompt = np.asarray(requests.prompt_tokens, dtype=float)
        self.output = np.asarray(requests.output_tokens, dtype=float)
        self.service_s = self.prompt / bt.prefill_tokens_per_s + self.output / bt.decode_tokens_per_s
        self._prefill_s = (self.prompt / bt.prefill_tokens_per_s).tolist()
        self._service_l = self.service_s.tolist()
        self._arrival_l = self.arrival_s.tolist()
        self.status = [FUTURE] * n
        self.config = [-1] * n
        self.gpu = [-1] * n
        self.start = [math.nan] * n
        self.first_token = [math.nan] * n
        self.finish = [math.nan] * n
        self.drop_at = [math.nan] * n
        self.drop_reason = [0] * n
        self.energy_j = [0.0] * n
        self.revenue = [0.0] * n
        self._u0 = [0.0] * n
        self._phi = [0.0] * n
        self._t_k = [c.time_factor for c in self.configs]
        self._phi_k = [c.energy_factor / c.time_factor for c in self.configs]
        self._q_k = [c.quality for c in self.configs]
        rv = cfg.revenue
        self._usd_prompt, self._usd_output, self._by_quality = rv.usd_per_prompt_token, rv.usd_per_output_token, rv.scale_by_quality
        self._cfg_arrays = (np.array(self._t_k), np.array([c.energy_factor for c in self.configs]), np.array(self._q_k))

        # per-GPU state (Python lists: a few GPUs change at each event)
        c = self.c
        self._b = [0] * c
        self._b_np = np.zeros(c, dtype=np.int64)  # the same counts, for argmin over GPUs
        self._v = [0.0] * c
        self._u = [0.0] * c
        self._last = [0.0] * c
        self._phi_sum = [0.0] * c
        self._finish_heap: list[list[tuple[float, int]]] = [[] for _ in range(c)]
        self._prefill_heap: list[list[tuple[float, int]]] = [[] for _ in range(c)]
        self._version = [0] * c
        self._gpu_dyn_w = [0.0] * c
        self.in_service = 0
        # the market's hold on each GPU: its clock f (progress rate factor), its power factor f^γ, whether it is
        # paused, and its allocation above idle; open batch slots on GPUs that are not paused
        self._speed = [1.0] * c
        self._pfrac = [1.0] * c
        self._paused = [False] * c
        self._capacity = c * self.max_batch
        self._throttled_s = [0.0] * c
        self._paused_s = [0.0] * c
        self._clock_t = [0.0] * c
        self._gamma = float(scenario.cluster.power_spec()["gamma"])
        dyn_max = max(power[b] - self.idle_w for b in range(1, self.max_batch + 1)) * max(self._phi_k)
        self.market = ServingMarket(scenario, streams, self.env, dyn_max, price,
                                    carbon if carbon is not None else StepSeries.constant("carbon", 0.0),
                                    self._apply_caps)
        self._cap_w = [self.market.cluster.span_w] * c
        self._bw, self._boff = self.market.cluster._bw, self.market.cluster._boff
        self._credit_usd = [0.0] * c  # revenue of completions since the last round, minted at the next round
        self.queue: deque[int] = deque()

        # the meter: total power, energy and cost, booked per price step
        self._power_w = c * self.idle_w
        self._meter_t = 0.0
        self._price_now = float(price.value_at(np.array([0.0]))[0])
        self.energy_j_total = 0.0
        self.cost_usd = 0.0
        self.revenue_usd = 0.0
        self._step_rows: list[tuple] = []
        self._step = [0.0, 0.0, 0.0, 0, 0, 0, 0.0]  # start, energy, cost, arrivals, served, denied, quality sum
        self._rate, self._rate_t = 0.0, 0.0
        self.decision_rows: list[tuple[float, int]] = []
        self.events = 0
        policy.reset(streams.generator("policy"), _gpu_view(scenario), self.c)

    # ------------------------------------------------------------------------------------ meter
    def _meter(self, now: float) -> None:
        """Book energy and cost from the last meter reading to ``now`` at the power and price of that interval."""
        dt = now - self._meter_t
        if dt > 0:
            e = self._power_w * dt
            cost = e / 3.6e9 * self._price_now
            self.energy_j_total += e
            self.cost_usd += cost
            self._step[1] += e
            self._step[2] += cost
            self._meter_t = now

    def _prices(self):
        """Price changes, at the price series' own steps inside the run."""
        times = self.price.change_times(0.0, self.horizon_s)
        values = self.price.value_at(times)
        for t, p in zip(times.tolist(), values.tolist()):
            if t <= 0.0:
                self._price_now = p
                continue
            yield self.env.timeout(t - self.env.now)
            self.events += 1
            self._meter(t)
            self._close_step(t)
            self._price_now = p
            if self.progress is not None:
                self.progress(t)

    def _close_step(self, t: float) -> None:
        s = self._step
        self._step_rows.append((s[0], t, self._price_now, s[1], s[2], s[3], s[4], s[5],
                                s[6] / s[4] if s[4] else math.nan))
        self._step = [t, 0.0, 0.0, 0, 0, 0, 0.0]

    # ------------------------------------------------------------------------------------ GPUs
    def _advance(self, g: int, now: float) -> None:
        """Bring GPU ``g``'s virtual progress and energy share to ``now``, noting first tokens on the way."""
        dt = now - self._last[g]
        if dt <= 0:
            return
        b = self._b[g]
        if b:
            rate = self._rate_of[b] * self._speed[g]
            if rate == 0.0:  # paused by the market: no progress, idle power
                self._last[g] = now
                return
            v0 = self._v[g]
            v1 = v0 + rate * dt
            heap = self._prefill_heap[g]
            limit = v1 + _TOL * max(1.0, v1)
            last = self._last[g]
            while heap and heap[0][0] <= limit:
                target, i = heapq.heappop(heap)
                self.first_token[i] = min(now, last + max(0.0, target - v0) / rate)
            self._v[g] = v1
            self._u[g] += self._dyn_of[b] * self._pfrac[g] * dt
        self._last[g] = now

    def _set_power(self, g: int) -> None:
        """GPU ``g``'s draw from now on (its batch or its allocation changed; it is advanced to now): full clock if
        its batch's draw fits its allocation, else the clock that makes it draw the allocation (paused: idle)."""
        b = self._b[g]
        demand = self._dyn_of[b] * self._phi_sum[g] if b else 0.0
        if self._paused[g]:
            speed = pfrac = 0.0
        elif demand <= self._cap_w[g] * _FITS:
            speed = pfrac = 1.0
        else:
            pfrac = self._cap_w[g] / demand
            speed = pfrac ** (1.0 / self._gamma)
        if speed != self._speed[g]:
            self._set_clock(g, speed)
        self._pfrac[g] = pfrac
        new = demand * pfrac
        self._power_w += new - self._gpu_dyn_w[g]
        self._gpu_dyn_w[g] = new
        bw = self._bw  # the market's meter of the GPU's billable energy: E = billable_off + billable_w·t
        old = bw[g]
        if old != new:
            self._boff[g] += (old - new) * self.env.now
            bw[g] = new

    def _mint_credits(self) -> None:
        """Mint the revenue each GPU earned since the last round into its wallet (before a round and at the end)."""
        credit = self._credit_usd
        for g, usd in enumerate(credit):
            if usd:
                self.market.credit(g, usd)
                credit[g] = 0.0

    def _set_clock(self, g: int, speed: float) -> None:
        """Book the time GPU ``g`` spent at its old clock (throttled or paused) and switch to ``speed``."""
        now = self.env.now
        old = self._speed[g]
        self.market.cluster._ck[g] = speed
        if old < 1.0:
            (self._paused_s if old == 0.0 else self._throttled_s)[g] += now - self._clock_t[g]
        self._clock_t[g] = now
        self._speed[g] = speed

    def _schedule(self, g: int) -> None:
        """(Re)schedule GPU ``g``'s next completion from its virtual progress (older timers are ignored)."""
        self._version[g] += 1
        heap = self._finish_heap[g]
        rate = self._rate_of[self._b[g]] * self._speed[g]
        if not heap or rate == 0.0:  # nothing to finish, or paused until a round grants power
            return
        delay = max(0.0, (heap[0][0] - self._v[g]) / rate)
        version = self._version[g]
        ev = self.env.timeout(delay)
        ev.callbacks.append(lambda _ev, g=g, version=version: self._on_timer(g, version))

    def _start(self, i: int, g: int, now: float) -> None:
        """Request ``i`` joins GPU ``g``'s batch now (the GPU is already advanced to now)."""
        k = self.config[i]
        t_k = self._t_k[k]
        v = self._v[g]
        self.status[i] = IN_SERVICE
        self.gpu[i] = g
        self.start[i] = now
        self._u0[i] = self._u[g]
        phi = self._phi_k[k]
        self._phi[i] = phi
        heapq.heappush(self._finish_heap[g], (v + t_k * self._service_l[i], i))
        prefill = t_k * self._prefill_s[i]
        if prefill <= 0.0:
            self.first_token[i] = now
        else:
            heapq.heappush(self._prefill_heap[g], (v + prefill, i))
        self._b[g] += 1
        self._b_np[g] += 1
        self._phi_sum[g] += phi
        self.in_service += 1

    def _fill(self, now: float) -> set[int]:
        """Start queued requests on free slots (least-loaded GPU first); returns the GPUs whose batch changed."""
        changed: set[int] = set()
        self._expire(now)
        queue = self.queue
        while queue and self.in_service < self._capacity:
            g = int(self._b_np.argmin())
            if g not in changed:
                self._advance(g, now)
                changed.add(g)
            self._start(queue.popleft(), g, now)
        return changed

    def _expire(self, now: float) -> None:
        """Drop queued requests that have waited ``max_wait_s`` by ``now`` (FIFO: the oldest is at the head)."""
        limit = self.cfg.max_wait_s
        if limit is None:
            return
        queue, arrival = self.queue, self._arrival_l
        while queue and arrival[queue[0]] + limit <= now:
            i = queue.popleft()
            self._drop(i, arrival[i] + limit, 2)

    def _drop(self, i: int, at: float, reason: int) -> None:
        self.status[i] = DROPPED
        self.drop_at[i] = at
        self.drop_reason[i] = reason

    def _on_timer(self, g: int, version: int) -> None:
        if version != self._version[g]:
            return  # superseded by a later reschedule
        self.events += 1
        now = self.env.now
        self._meter(now)
        self._advance(g, now)
        heap = self._finish_heap[g]
        v = self._v[g]
        limit = v + _TOL * max(1.0, v)
        u = self._u[g]
        done = 0
        while heap and heap[0][0] <= limit:
            _, i = heapq.heappop(heap)
            self._complete(i, g, now, u)
            done += 1
        if not done and heap and now + (heap[0][0] - v) / (self._rate_of[self._b[g]] * self._speed[g]) == now:
            # the rest of the work is below the resolution of the clock at this time: it is done now (else a
            # zero delay would fire again with nothing to advance)
            _, i = heapq.heappop(heap)
            self._complete(i, g, now, u)
        changed = self._fill(now)
        changed.add(g)
        for h in changed:
            self._set_power(h)
            self._schedule(h)

    def _complete(self, i: int, g: int, now: float, u: float) -> None:
        if math.isnan(self.first_token[i]):
            self.first_token[i] = now  # its prefill target equals its finish target (no output tokens)
            heap = self._prefill_heap[g]
            heap[:] = [e for e in heap if e[1] != i]
            heapq.heapify(heap)
        self.status[i] = SERVED
        self.finish[i] = now
        phi = self._phi[i]
        self.energy_j[i] = phi * (u - self._u0[i])
        self._b[g] -= 1
        self._b_np[g] -= 1
        self._phi_sum[g] -= phi
        if self._b[g] == 0:
            self._phi_sum[g] = 0.0  # no drift from float sums on an empty GPU
        self.in_service -= 1
        k = self.config[i]
        value = self._usd_prompt * self.prompt[i] + self._usd_output * self.output[i]
        if self._by_quality:
            value *= self._q_k[k]
        self.revenue[i] = value
        self.revenue_usd += value
        self._credit_usd[g] += value
        self._rate = self._rate * math.exp(-(now - self._rate_t) / RATE_WINDOW_S) + 1.0 / RATE_WINDOW_S
        self._rate_t = now

    # ------------------------------------------------------------------------------------ the market
    def _apply_caps(self, alloc_w: np.ndarray) -> np.ndarray:
        """A round's allocations (W above idle per GPU) hold from now: re-clock, pause or resume the GPUs whose
        draw they change (a GPU whose allocation covers its draw before and after is left as it is). Returns the
        allocation each GPU holds (0 for a paused one)."""
        now = self.env.now
        market = self.market
        held = np.asarray(alloc_w, dtype=float).copy()
        metered = resumed = False
        for g, a in enumerate(held.tolist()):
            paused = market.below_min_cap(a)
            if paused:
                held[g] = 0.0
            if a == self._cap_w[g] and paused == self._paused[g]:
                continue
            b = self._b[g]
            demand = self._dyn_of[b] * self._phi_sum[g] if b else 0.0
            old_cap, self._cap_w[g] = self._cap_w[g], a
            if paused == self._paused[g] and not paused and demand <= a * _FITS and demand <= old_cap * _FITS:
                continue  # full clock before and after
            if not metered:
                self._meter(now)
                metered = True
            self._advance(g, now)
            if paused != self._paused[g]:
                self._paused[g] = paused
                free = self.max_batch - b
                if paused:
                    self._b_np[g] += self.max_batch  # never the least-loaded GPU while paused
                    self._capacity -= free
                else:
                    self._b_np[g] -= self.max_batch
                    self._capacity += free
                    resumed = True
            self._set_power(g)
            self._schedule(g)
        if resumed:  # queued requests may start on the GPUs that run again
            for h in self._fill(now):
                self._set_power(h)
                self._schedule(h)
        return held

    def _rounds(self):
        """The Token Manager's periodic rounds (:class:`dcsim.serving.market.ServingMarket`)."""
        env, market = self.env, self.market
        for k, t in enumerate(market.round.round_times.tolist()):
            if t > env.now:
                yield env.timeout(t - env.now)
            self.events += 1
            self._mint_credits()
            market.run_round(k)

    # ------------------------------------------------------------------------------------ arrivals
    def _view(self, now: float) -> ServingView:
        slo = self.cfg.slo
        return ServingView(
            time_s=now, hour_utc=(self._hour0 + now / 3600.0) % 24.0, price_usd_per_mwh=self._price_now,
            queue_length=len(self.queue), in_service=self.in_service,
            free_slots=self._capacity - self.in_service, gpus=self.c, max_batch=self.max_batch,
            completion_rate_per_s=self._rate * math.exp(-(now - self._rate_t) / RATE_WINDOW_S),
            slo_ttft_s=slo.ttft_s, slo_e2e_s=slo.e2e_s)

    def _decide(self, lo: int, hi: int, now: float) -> None:
        """Requests ``lo..hi-1`` arrive now: one policy call for all of them, then queue, start or deny each."""
        self._meter(now)
        self._expire(now)
        idx = np.arange(lo, hi)
        t, e, q = self._cfg_arrays
        obs = RequestObservation(idx, self.prompt[lo:hi], self.output[lo:hi], self.service_s[lo:hi], t, e, q,
                                 self._view(now))
        self.decision_rows.append((now, hi - lo))
        admission, config = check_serving(self.policy.serve(obs), hi - lo, len(self.configs),
                                          f"policy {self.policy.name!r} serve")
        step = self._step
        step[3] += hi - lo
        max_queue = self.cfg.max_queue
        slots = self._capacity
        changed: set[int] = set()
        queue = self.queue
        for i, a, k in zip(range(lo, hi), admission.tolist(), config.tolist()):
            if a == ServingAdmission.DENY:
                self.status[i] = DENIED
                step[5] += 1
                continue
            self.config[i] = k
            step[4] += 1
            step[6] += self._q_k[k]
            if not queue and self.in_service < slots:
                g = int(self._b_np.argmin())
                if g not in changed:
                    self._advance(g, now)
                    changed.add(g)
                self._start(i, g, now)
            elif max_queue is not None and len(queue) >= max_queue:
                self._drop(i, now, 1)
            else:
                self.status[i] = QUEUED
                queue.append(i)
        for h in changed:
            self._set_power(h)
            self._schedule(h)

    def _arrivals(self):
        arrival = self.arrival_s
        if arrival.size == 0:
            return
        bounds = np.flatnonzero(np.diff(arrival) != 0) + 1
        starts = [0] + bounds.tolist()
        ends = bounds.tolist() + [arrival.size]
        times = arrival[starts].tolist()
        env = self.env
        for lo, hi, t in zip(starts, ends, times):
            if t > env.now:
                yield env.timeout(t - env.now)
            self.events += 1
            self._decide(lo, hi, t)

    # ------------------------------------------------------------------------------------ run
    def run(self) -> ServingResult:
        """Simulate to the horizon and return the result (requests still queued or in service are pending)."""
        wall0 = time.perf_counter()
        self.env.process(self._arrivals())
        self.env.process(self._prices())
        self.env.process(self._rounds())
        self.env.run(until=self.horizon_s)
        end = self.horizon_s
        self._meter(end)
        self._expire_before(end)
        for g in range(self.c):
            self._advance(g, end)
            u = self._u[g]
            for _, i in self._finish_heap[g]:
                self.energy_j[i] = self._phi[i] * (u - self._u0[i])  # energy so far of a request still in service
            self._set_clock(g, self._speed[g])  # book the time at a lowered clock up to the horizon
        self._mint_credits()
        self.market.close()
        self._close_step(end)
        wall = time.perf_counter() - wall0
        return self._result(wall)

    def _expire_before(self, end: float) -> None:
        """At the horizon: drop queued requests whose wait limit passed before it (no event was left to do so)."""
        limit = self.cfg.max_wait_s
        if limit is None:
            return
        queue, arrival = self.queue, self._arrival_l
        while queue and arrival[queue[0]] + limit < end:
            i = queue.popleft()
            self._drop(i, arrival[i] + limit, 2)

    def _result(self, wall: float) -> ServingResult:
        status = np.array(self.status, dtype=np.int8)
        config = np.array(self.config, dtype=np.int64)
        names = np.array([c.name for c in self.configs] + [""], dtype=object)
        quality = np.array(self._q_k + [math.nan])
        arrival = self.arrival_s
        start, first, finish = np.array(self.start), np.array(self.first_token), np.array(self.finish)
        requests = pd.DataFrame({
            "arrival_s": arrival, "prompt_tokens": self.prompt, "output_tokens": self.output,
            "service_s": self.service_s,
            "status": pd.Categorical.from_codes(status, STATUS_NAMES),
            "config": names[config], "quality": quality[config], "gpu": np.array(self.gpu, dtype=np.int64),
            "start_s": start, "first_token_s": first, "finish_s": finish,
            "wait_s": start - arrival, "ttft_s": first - arrival, "e2e_s": finish - arrival,
            "drop_s": np.array(self.drop_at),
            "drop_reason": np.array(DROP_REASONS, dtype=object)[np.array(self.drop_reason, dtype=np.int64)],
            "energy_j": np.array(self.energy_j), "revenue_usd": np.array(self.revenue),
        })
        steps = pd.DataFrame(self._step_rows, columns=[
            "start_s", "end_s", "price_usd_per_mwh", "energy_j", "energy_cost_usd", "arrivals", "admitted",
            "denied", "mean_quality_admitted"])
        decisions = pd.DataFrame(self.decision_rows, columns=["time_s", "requests"])
        idle_j = self.c * self.idle_w * self.horizon_s
        totals = {"energy_j": self.energy_j_total, "idle_energy_j": idle_j,
                  "dynamic_energy_j": self.energy_j_total - idle_j, "energy_cost_usd": self.cost_usd,
                  "revenue_usd": self.revenue_usd}
        mr = self.market.round
        alloc = mr.alloc_rows
        return ServingResult(
            self.scenario, self.policy, self.configs, requests, steps, decisions, totals,
            {"events": self.events, "wall_s": wall},
            rounds=pd.DataFrame(mr.round_rows),
            ledger=pd.DataFrame(mr.ledger_rows, columns=["round", "time_s", "kind", "agent", "tokens"]),
            tokens=dict(mr.tokens) | {"held": float(mr.wallet.sum())}, wallets=mr.wallet.copy(),
            allocations_w=None if alloc is None else
            (np.stack(alloc) if alloc else np.zeros((0, self.c), dtype=np.float32)),
            clock={"throttled_s": np.array(self._throttled_s), "paused_s": np.array(self._paused_s)})
