"""The decision dispatcher: builds batched observations, calls the policy, checks its actions and logs decisions."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import simpy

from dcsim.cluster import ENTERING_SLEEP, SHUTTING_DOWN, Cluster
from dcsim.dispatch import Dispatcher, DropReason
from dcsim.meter import EnergyMeter
from dcsim.policy import (
    Admission,
    AgentObservation,
    Bids,
    FacilityObservation,
    IdleAction,
    JobObservation,
    MarketView,
    Policy,
    check_actions,
    check_bids,
    check_dispatch,
)

if TYPE_CHECKING:
    from dcsim.market_round import MarketRound
    from dcsim.reward_meter import RewardMeter

_SLEEP_ACTION, _OFF_ACTION = int(IdleAction.SLEEP), int(IdleAction.POWER_OFF)
_INF = float("inf")
# Up to this many deciding agents, observations are read agent by agent from the shared buffers (a few µs);
# above it, whole-array numpy is cheaper.
_SMALL_N = 16
_new = object.__new__


def _frozen(cls: type, fields: dict) -> object:
    """An instance of the frozen dataclass ``cls`` with every field given in ``fields``, built without running its
    generated ``__init__`` (a per-field ``object.__setattr__``: half the cost of an observation for one agent).
    Equal, field for field, to ``cls(**fields)``."""
    obj = _new(cls)
    obj.__dict__.update(fields)
    return obj


class DecisionDispatcher:
    """Asks the policy, once for all agents deciding at an instant: bids, admission of deferrable jobs, and what
    idle GPUs do. Under fixed-step timing decisions wait for the next tick.

    Args:
        policy: The decision policy.
        env: The SimPy environment.
        cluster: The GPUs (agent state).
        jobs: The dispatcher (job state, the queue and held jobs).
        meter: The energy meter (the supply now).
        base_price_tokens_per_kwh: The market's p0, shown to policies.
        hour0: Hour of day (UTC) at t = 0.
        tick_s: The fixed decision step, s, or None for event timing.
        trace: The event trace, or None.
    """

    def __init__(self, policy: Policy, env: simpy.Environment, cluster: Cluster, jobs: Dispatcher,
                 meter: EnergyMeter, base_price_tokens_per_kwh: float, hour0: float, tick_s: float | None,
                 trace: list[tuple] | None):
        self.policy = policy
        self.env = env
        self.cluster = cluster
        self.jobs = jobs
        self.meter = meter
        self.market: MarketRound | None = None  # wired by the core
        self.rewards: RewardMeter | None = None  # wired by the core for learning policies
        self._p0 = base_price_tokens_per_kwh
        self._hour0 = hour0
        self.tick_s = tick_s
        self._trace = trace
        self.calls = {name: policy.overrides(name) for name in ("bid", "admit", "on_idle", "dispatch")}
        self.tick_bids: Bids | None = None  # fixed-step timing: the last tick's bids, cleared at the next round
        self.decision_rows: list[tuple] = []
        self._who = {m: f"policy {policy.name!r} {m}" for m in ("bid", "admit", "on_idle", "dispatch")}
        self._bind_job_buffers()
        jobs.on_grow.append(self._bind_job_buffers)

    def _bind_job_buffers(self) -> None:
        """The per-job buffers' scalar twins (Python numbers, no numpy scalars on the per-job path), bound again
        whenever the dispatcher reallocates them."""
        jobs = self.jobs
        self._job_rem, self._job_rate, self._job_last = jobs._rem, jobs._rate, jobs._last
        self._job_deadline, self._job_gpus = jobs._deadline, jobs._k
        self._job_beta, self._job_value = jobs._beta, jobs._value

    # ------------------------------------------------------------------------------------ observations
    def market_view(self) -> MarketView:
        now = self.env.now
        meter, jobs, market = self.meter, self.jobs, self.market
        demand = max(0.0, self.cluster.total_power_w)
        renewable_w = meter.renewable_w
        return _frozen(MarketView, {
            "time_s": now, "hour_utc": (self._hour0 + now / 3600.0) % 24.0, "renewable_w": renewable_w,
            "demand_w": demand, "renewable_fraction": 1.0 if demand <= 0 else min(1.0, renewable_w / demand),
            "price_tokens_per_kwh": market.round_price, "base_price_tokens_per_kwh": self._p0,
            "grid_carbon_g_per_kwh": meter.carbon, "grid_price_usd_per_mwh": meter.grid_price,
            "battery_soc": meter.books.soc_fraction, "queue_length": len(jobs.queue),
            "deferred_jobs": len(jobs.deferred), "next_round_s": market.next_round_s,
        })

    def agent_obs(self, idx: np.ndarray) -> AgentObservation:
        """The observation of agents (GPUs) ``idx``; for learning policies it carries their feedback since
        their previous decision (which starts their next interval).

        A few agents (the per-job decisions: a job starting, a completion freeing its GPUs) are read one by one
        from the shared buffers; many agents (market rounds, ticks) with whole-array numpy. Both give the same
        values and dtypes."""
        n = idx.size
        if n > _SMALL_N:
            return self._agent_obs_arrays(idx)
        ids = idx.tolist()
        now = self.env.now
        asg, st, wal = self.cluster._asg, self.cluster._st, self.market._wal
        rem_s, rate, last_s = self._job_rem, self._job_rate, self._job_last
        deadline, beta_of, value_of, gpus_of = self._job_deadline, self._job_beta, self._job_value, self._job_gpus
        states, has, gpus, cols = [], [], [], []
        for g in ids:
            j = asg[g]
            states.append(st[g])
            if j >= 0:
                r = max(0.0, rem_s[j] - rate[j] * (now - last_s[j]))
                has.append(True)
                gpus.append(gpus_of[j])
                cols.append((r, deadline[j] - now - r, beta_of[j], value_of[j], wal[g]))
            else:
                has.append(False)
                gpus.append(0)
                cols.append((0.0, _INF, 1.0, 0.0, wal[g]))
        # one float block, its rows the five float fields (transposed so each field is contiguous)
        block = np.array(cols, dtype=np.float64).T.copy() if n else np.zeros((5, 0))
        feedback = None if self.rewards is None else self.rewards.feedback(idx)
        return _frozen(AgentObservation, {
            "gpu_ids": idx, "state": np.array(states, dtype=np.int8), "has_job": np.array(has, dtype=bool),
            "job_remaining_s": block[0], "job_slack_s": block[1], "job_clock_sensitivity": block[2],
            "job_value_tokens": block[3], "job_gpus": np.array(gpus, dtype=np.int64), "wallet_tokens": block[4],
            "market": self.market_view(), "gpu": self.cluster.gpu_view, "feedback": feedback})

    def _agent_obs_arrays(self, idx: np.ndarray) -> AgentObservation:
        """:meth:`agent_obs` for many agents, with whole-array numpy."""
        n = idx.size
        jobs = self.jobs
        assigned = self.cluster.assigned[idx]
        has = assigned >= 0
        remaining, slack = np.zeros(n), np.full(n, np.inf)
        beta, value, job_gpus = np.ones(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        if has.any():
            j = assigned[has]
            remaining[has] = jobs.remaining_now(j)
            slack[has] = jobs.deadline_s[j] - self.env.now - remaining[has]
            beta[has] = jobs.beta[j]
            value[has] = jobs.value_tokens[j]
            job_gpus[has] = jobs.job_gpus_n[j]
        feedback = None if self.rewards is None else self.rewards.feedback(idx)
        return AgentObservation(idx, self.cluster.state[idx].copy(), has, remaining, slack, beta, value, job_gpus,
                                self.market.wallet[idx].copy(), self.market_view(), self.cluster.gpu_view, feedback)

    # ------------------------------------------------------------------------------------ decisions
    def ask_bids(self, idx: np.ndarray) -> Bids:
        """The bids of agents ``idx``, checked."""
        self.log_decision("bid", idx.size)
        return check_bids(self.policy.bid(self.agent_obs(idx)), idx.size, self._who["bid"])

    def round_bids(self) -> Bids | None:
        """Bids for a market round: every agent bids at the round (event timing), or the round uses the last
        tick's bids (fixed-step timing); None when the policy does not bid."""
        if not self.calls["bid"]:
            return None
        return self.ask_bids(np.arange(self.cluster.n_gpus)) if self.tick_s is None else self.tick_bids

    def tick_bid(self) -> None:
        """Fixed-step timing: every agent bids at the tick; the bids stand for jobs starting before the round."""
        if self.calls["bid"]:
            self.tick_bids = self.ask_bids(np.arange(self.cluster.n_gpus))
            market = self.market
            market.want_w = market.want_at_price(self.tick_bids, market.round_price).tolist()

    def admit_arrival(self, j: int) -> None:
        """Deferrable job ``j`` arrived and the policy screens admissions: ask it now (event timing), or hold the
        job for the next tick's decision (fixed-step timing)."""
        if self.tick_s is None:
            self.jobs.deferred.extend(self._admission(np.array([j])))
        else:
            self.jobs.hold(j)

    def _admission(self, idx: np.ndarray) -> list[int]:
        """Ask the policy about deferrable jobs ``idx`` that have arrived; queue each or return it as held."""
        now = self.env.now
        jobs = self.jobs
        if jobs.drop_expired:
            expired = jobs.deadline_s[idx] < now
            for j in idx[expired].tolist():
                jobs.drop(j, DropReason.DEADLINE_EXPIRED)
            idx = idx[~expired]
        if idx.size == 0:
            return []
        self.log_decision("admit", idx.size)
        obs = JobObservation(
            jobs.gid[idx], jobs.job_gpus_n[idx], jobs.duration_full_s[idx],
            jobs.deadline_s[idx] - now - jobs.duration_full_s[idx], now - jobs.arrival_s[idx],
            jobs.value_tokens[idx], self.market_view(),
        )
        actions = check_actions(self.policy.admit(obs), idx.size, Admission, self._who["admit"])
        run = actions == Admission.RUN
        jobs.enqueue(idx[run].tolist())
        held = idx[~run].tolist()
        jobs.defer(held)
        return held

    def reconsider_deferred(self, at_tick: bool = False) -> None:
        """Offer every held job to the policy again (at rounds and supply changes; at ticks only under
        fixed-step timing)."""
        jobs = self.jobs
        if jobs.deferred and (self.tick_s is None or at_tick):
            jobs.deferred = self._admission(np.array(jobs.deferred, dtype=np.int64))
            jobs.dispatch()

    def idle_decisions(self, at_tick: bool = False, freed: list[int] | None = None) -> None:
        """Ask the policy what idle GPUs with nothing queued should do: after completions, the GPUs those jobs
        just freed (``freed``); at rounds and ticks, every idle GPU. Under fixed-step timing only at ticks."""
        cl = self.cluster
        if not self.calls["on_idle"] or not cl.free_idle or self.jobs.queue or (self.tick_s is not None and not at_tick):
            return
        if freed is None:
            idx = np.fromiter(cl.free_idle.keys(), dtype=np.int64, count=len(cl.free_idle))
        else:
            idx = np.array([g for g in freed if g in cl.free_idle], dtype=np.int64)
            if idx.size == 0:
                return
        actions = self.idle_actions(idx)
        if idx.size <= _SMALL_N:
            ids, acts = idx.tolist(), actions.tolist()
            for action, state in ((_SLEEP_ACTION, ENTERING_SLEEP), (_OFF_ACTION, SHUTTING_DOWN)):
                chosen = [g for g, a in zip(ids, acts) if a == action]
                if chosen:
                    cl.power_down(chosen, state)
            return
        for action, state in ((_SLEEP_ACTION, ENTERING_SLEEP), (_OFF_ACTION, SHUTTING_DOWN)):
            chosen = idx[actions == action].tolist()
            if chosen:
                cl.power_down(chosen, state)

    def idle_actions(self, idx: np.ndarray) -> np.ndarray:
        """The :class:`IdleAction` of idle agents ``idx``, asked of the policy and checked (logged as a decision)."""
        self.log_decision("on_idle", idx.size)
        return check_actions(self.policy.on_idle(self.agent_obs(idx)), idx.size, IdleAction, self._who["on_idle"])

    def facility_obs(self) -> FacilityObservation:
        """What the facility agent sees now (needs ``facility.battery``: the meter's dispatched battery)."""
        meter = self.meter
        b = meter.battery
        p = b.params
        load_w = max(0.0, self.cluster.total_power_w) + meter.extra_load_w()
        return FacilityObservation(
            market=self.market_view(), load_w=load_w, net_load_w=load_w - meter.renewable_w, soc_j=b.soc_j,
            capacity_j=p.capacity_j, min_soc_j=b.soc_min_j, max_soc_j=b.soc_max_j, max_charge_w=p.max_charge_w,
            max_discharge_w=p.max_discharge_w, round_trip_efficiency=p.round_trip_efficiency,
            grid_charging=b.grid_charging, import_cap_w=b.import_cap_w,
            export_price_usd_per_mwh=b.export_price_usd_per_mwh, export_cap_w=b.export_cap_w,
            demand_charge_usd_per_kw=b.config.demand_charge_usd_per_kw, window_peak_w=b.window_peak_w(),
            interval_import_j=b.interval_import_j, interval_end_s=b.interval_end_s())

    def dispatch_battery(self) -> None:
        """Ask the facility agent for the battery's command until the next round, check it and put it in force
        (clipped to the battery's limits; see :meth:`DispatchedBattery.decide`)."""
        self.log_decision("dispatch", 1)
        command = check_dispatch(self.policy.dispatch(self.facility_obs()), self._who["dispatch"])
        row = self.meter.battery.decide(self.env.now, command.command, command.rate_w)
        if self._trace is not None:
            self._trace.append((self.env.now, "dispatch", -1, f"{row[1]} rate_w={row[3]:.6g}"
                                + (f" clipped_by={row[5]}" if row[5] else "")))

    def log_decision(self, method: str, agents: int) -> None:
        self.decision_rows.append((self.env.now, method, agents))
        if self._trace is not None:
            self._trace.append((self.env.now, "decision", -1, f"{method} x{agents}"))
