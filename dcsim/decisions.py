"""The decision dispatcher: builds batched observations, calls the policy, checks its actions and logs decisions."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
import pandas as pd
import simpy

from dcsim.cluster import ENTERING_SLEEP, SHUTTING_DOWN, Cluster
from dcsim.dispatch import Dispatcher, DropReason
from dcsim.meter import EnergyMeter
from dcsim.policy import (
    Admission,
    AgentObservation,
    Bids,
    CoolingObservation,
    FacilityObservation,
    IdleAction,
    JobObservation,
    MarketView,
    Policy,
    check_actions,
    check_bids,
    _market_view,
    check_cooling,
    check_dispatch,
    few_actions,
    few_agent_observation,
    few_bid_values,
)

if TYPE_CHECKING:
    from dcsim.market_round import MarketRound
    from dcsim.reward_meter import RewardMeter

#: The policy methods of GPU-job runs the engine calls when a policy overrides them.
_METHODS = ("bid", "admit", "on_idle", "dispatch", "cooling_setpoint")
_SLEEP_ACTION, _OFF_ACTION = int(IdleAction.SLEEP), int(IdleAction.POWER_OFF)
_INF = float("inf")
# Up to this many deciding agents, observations are read agent by agent from the shared buffers (a few µs);
# above it, whole-array numpy is cheaper.
_SMALL_N = 16


DECISION_COLUMNS = ["time_s", "method", "agents"]


class DecisionBlock(NamedTuple):
    """Rows of the decision log as arrays (the compiled path's decisions between two Python calls): times (s),
    method names (object array of str) and agents."""

    time_s: np.ndarray
    method: np.ndarray
    agents: np.ndarray

    def rows(self) -> list[tuple]:
        return list(zip(self.time_s.tolist(), self.method.tolist(), self.agents.tolist()))


def decision_frame(rows: list) -> pd.DataFrame:
    """The decision log (tuples ``(time_s, method, agents)`` and :class:`DecisionBlock` s, in order) as a table:
    what ``pd.DataFrame`` of all its rows as tuples gives, built column by column (a run logs a decision per job
    start; pandas' per-row string inference costs ~1 µs a row, Arrow's own conversion a few ns)."""
    n = sum(len(r.time_s) if type(r) is DecisionBlock else 1 for r in rows)
    if n < 1000:
        flat = [t for r in rows for t in (r.rows() if type(r) is DecisionBlock else (r,))]
        return pd.DataFrame(flat, columns=DECISION_COLUMNS)
    times, methods, agents, run = [], [], [], []

    def close_run() -> None:
        if run:
            t, m, k = zip(*run)
            times.append(np.array(t))
            methods.append(np.array(m, dtype=object))
            agents.append(np.array(k, dtype=np.int64))
            run.clear()

    for r in rows:
        if type(r) is DecisionBlock:
            close_run()
            times.append(r.time_s)
            methods.append(r.method)
            agents.append(r.agents)
        else:
            run.append(r)
    close_run()
    method_dtype = pd.Series(["bid"]).dtype  # the string dtype pandas infers here
    names = np.concatenate(methods)
    if getattr(method_dtype, "storage", None) == "pyarrow":
        import pyarrow as pa

        method = pd.array(pa.array(names, type=pa.large_string()), dtype=method_dtype)
    else:
        method = pd.array(names.tolist(), dtype=method_dtype)
    return pd.DataFrame({"time_s": np.concatenate(times), "method": method, "agents": np.concatenate(agents)},
                        columns=DECISION_COLUMNS)


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
        self.calls = {name: policy.overrides(name) for name in _METHODS}
        self.tick_bids: Bids | None = None  # fixed-step timing: the last tick's bids, cleared at the next round
        # the compiled path's Q-learner: a round's bids of every agent come from the kernel (wired by the core)
        self.compiled_round_bids: Callable[[], Bids] | None = None
        self.decision_rows: list[tuple] = []
        self.setpoint_rows: list[tuple] = []  # (time_s, supply_air_c, chilled_water_c) of each cooling decision
        self._who = {m: f"policy {policy.name!r} {m}" for m in _METHODS}
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
        return _market_view(self._market_values())

    def _market_values(self) -> tuple:
        """The :class:`MarketView`'s field values now, in field order."""
        now = self.env.now
        meter, jobs, market = self.meter, self.jobs, self.market
        demand = max(0.0, self.cluster.total_power_w)
        renewable_w = meter.renewable_w
        return (now, (self._hour0 + now / 3600.0) % 24.0, renewable_w, demand,
                1.0 if demand <= 0 else min(1.0, renewable_w / demand), market.round_price, self._p0, meter.carbon,
                meter.grid_price, meter.books.soc_fraction, len(jobs.queue), len(jobs.deferred), market.next_round_s)

    def agent_obs(self, idx: np.ndarray) -> AgentObservation:
        """The observation of agents (GPUs) ``idx``; for learning policies it carries their feedback since
        their previous decision (which starts their next interval).

        A few agents (the per-job decisions: a job starting, a completion freeing its GPUs) are read one by one
        from the shared buffers into Python values, their arrays built only when the policy reads them
        (:func:`dcsim.policy.few_agent_observation`); many agents (market rounds, ticks) with whole-array numpy.
        Both give the same values and dtypes."""
        if idx.size > _SMALL_N:
            return self._agent_obs_arrays(idx)
        return self._few_obs(idx.tolist(), idx)

    def _few_obs(self, ids: list[int], idx: np.ndarray | None = None) -> AgentObservation:
        """:meth:`agent_obs` for a few agents ``ids`` (``idx``: the same as an int64 array, if the caller has it)."""
        now = self.env.now
        asg, st, wal = self.cluster._asg, self.cluster._st, self.market._wal
        rem_s, rate, last_s = self._job_rem, self._job_rate, self._job_last
        rows = []
        for g in ids:  # one tuple per agent, in dcsim.policy.ROW_FIELDS order
            j = asg[g]
            if j >= 0:
                r = rem_s[j] - rate[j] * (now - last_s[j])
                r = r if r > 0.0 else 0.0  # max(0.0, r)
                rows.append((st[g], True, r, self._job_deadline[j] - now - r, self._job_beta[j], self._job_value[j],
                             self._job_gpus[j], wal[g]))
            else:
                rows.append((st[g], False, 0.0, _INF, 1.0, 0.0, 0, wal[g]))
        feedback = None
        if self.rewards is not None:
            feedback = self.rewards.feedback(np.array(ids, dtype=np.int64) if idx is None else idx)
        obs = few_agent_observation(ids, rows, self._market_values(), self.cluster.gpu_view, feedback)
        if idx is not None:
            obs.__dict__["gpu_ids"] = idx
        return obs

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

    def start_wants(self, gpus: list[int], price: float) -> list[float]:
        """A job starts on ``gpus`` between rounds: its agents bid now (a decision); returns the power above idle
        each buys at the round's ``price``. A few agents' bids are checked and priced as Python numbers
        (:func:`dcsim.policy.few_bid_values`), anything else as arrays (:func:`dcsim.policy.check_bids`)."""
        n = len(gpus)
        if n > _SMALL_N:
            return self.market._wants_at_price(self.ask_bids(np.asarray(gpus, dtype=np.int64)), price)
        self.log_decision("bid", n)
        bids = self.policy.bid(self._few_obs(list(gpus)))  # a copy: the observation may outlive the job's list
        values = few_bid_values(bids, n)
        if values is None:
            return self.market._wants_at_price(check_bids(bids, n, self._who["bid"]), price)
        request_w, max_price, steps = values
        if steps is None:  # one block each (MarketRound.few_wants_at_price, inlined)
            cl = self.cluster
            idle_w, span_w = cl.idle_w, cl.span_w
            return [min(max(r - idle_w if p >= price else 0.0, 0.0), span_w) for r, p in zip(request_w, max_price)]
        return self.market.few_wants_at_price(request_w, max_price, steps, price)

    def round_bids(self) -> Bids | None:
        """Bids for a market round: every agent bids at the round (event timing), or the round uses the last
        tick's bids (fixed-step timing); None when the policy does not bid."""
        if not self.calls["bid"]:
            return None
        if self.tick_s is not None:
            return self.tick_bids
        if self.compiled_round_bids is not None:  # the compiled path's Q-learner: the kernel decides for all
            n = self.cluster.n_gpus
            self.log_decision("bid", n)
            return check_bids(self.compiled_round_bids(), n, self._who["bid"])
        return self.ask_bids(np.arange(self.cluster.n_gpus))

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
        free_idle = cl.free_idle
        if freed is None:
            ids = list(free_idle) if len(free_idle) <= _SMALL_N else None
        else:
            ids = [g for g in freed if g in free_idle]
            if not ids:
                return
        if ids is not None and len(ids) <= _SMALL_N:  # a few GPUs (a completion): Python numbers throughout
            acts = self._few_idle_actions(ids)
            for action, state in ((_SLEEP_ACTION, ENTERING_SLEEP), (_OFF_ACTION, SHUTTING_DOWN)):
                chosen = [g for g, a in zip(ids, acts) if a == action]
                if chosen:
                    cl.power_down(chosen, state)
            return
        if ids is None:
            idx = np.fromiter(free_idle.keys(), dtype=np.int64, count=len(free_idle))
        else:
            idx = np.array(ids, dtype=np.int64)
        actions = self.idle_actions(idx)
        for action, state in ((_SLEEP_ACTION, ENTERING_SLEEP), (_OFF_ACTION, SHUTTING_DOWN)):
            chosen = idx[actions == action].tolist()
            if chosen:
                cl.power_down(chosen, state)

    def idle_actions(self, idx: np.ndarray) -> np.ndarray:
        """The :class:`IdleAction` of idle agents ``idx``, asked of the policy and checked (logged as a decision)."""
        self.log_decision("on_idle", idx.size)
        return check_actions(self.policy.on_idle(self.agent_obs(idx)), idx.size, IdleAction, self._who["on_idle"])

    def _few_idle_actions(self, ids: list[int]) -> list[int]:
        """:meth:`idle_actions` for a few agents ``ids``, as a list of Python ints."""
        n = len(ids)
        self.log_decision("on_idle", n)
        actions = self.policy.on_idle(self._few_obs(ids))
        acts = few_actions(actions, n, IdleAction)
        if acts is None:
            acts = check_actions(actions, n, IdleAction, self._who["on_idle"]).tolist()
        return acts

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

    def cooling_obs(self) -> CoolingObservation:
        """What the facility agent sees when it sets the cooling setpoint (needs ``setpoint_control``)."""
        plant = self.meter.cooling
        c = plant.control
        return CoolingObservation(
            market=self.market_view(), outdoor_dry_bulb_c=plant.outdoor_dry_bulb_c(),
            outdoor_wet_bulb_c=plant.outdoor_wet_bulb_c(), supply_air_c=plant.supply_air_c,
            chilled_water_c=plant.chilled_water_c, room_temp_c=plant.room_temperature_c(),
            it_power_w=max(0.0, self.cluster.total_power_w), cooling_power_w=plant.cooling_power_w(),
            electric_per_heat=plant.electric_per_heat_now(), levels_c=tuple(c.levels_c),
            electric_per_heat_by_level=plant.electric_per_heat_by_level(), min_c=c.min_c, max_c=c.max_c,
            inlet_limit_c=c.inlet_limit_c)

    def set_cooling(self) -> None:
        """Ask the facility agent for the supply-air setpoint until the next round, check it and put it in force
        (call after booking energy up to now)."""
        self.log_decision("cooling_setpoint", 1)
        plant = self.meter.cooling
        c = plant.control
        command = check_cooling(self.policy.cooling_setpoint(self.cooling_obs()), c.min_c, c.max_c,
                                self._who["cooling_setpoint"])
        plant.set_supply_air(command.supply_air_c)
        self.setpoint_rows.append((self.env.now, plant.supply_air_c, plant.chilled_water_c))
        if self._trace is not None:
            self._trace.append((self.env.now, "cooling_setpoint", -1, f"supply_air_c={plant.supply_air_c:.6g} "
                                f"chilled_water_c={plant.chilled_water_c:.6g}"))

    def log_decision(self, method: str, agents: int) -> None:
        self.decision_rows.append((self.env.now, method, agents))
        if self._trace is not None:
            self._trace.append((self.env.now, "decision", -1, f"{method} x{agents}"))
