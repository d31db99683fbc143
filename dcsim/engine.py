"""The simulation core: owns the SimPy environment, its processes and the order of events, and runs a scenario.

The model lives in components with one job each, sharing per-GPU and per-job buffers (numpy views over
``array.array``):

- :class:`~dcsim.cluster.Cluster`: GPU power states, draw, caps and per-GPU energy meters;
- :class:`~dcsim.dispatch.Dispatcher`: the job queue, placement, clocks and completion times;
- :class:`~dcsim.meter.EnergyMeter`: the supply now and the exact energy books by source (with ``facility.battery``,
  :class:`~dcsim.facility.dispatch_battery.DispatchedBattery`'s books, the battery dispatched at rounds);
- :class:`~dcsim.market_round.MarketRound`: wallets, prices, clearing, settlement, endowment and the ledger;
- :class:`~dcsim.decisions.DecisionDispatcher`: observations, policy calls and the decision log;
- :class:`~dcsim.reward_meter.RewardMeter`: learning agents' rewards between decisions.

This module wires them together and decides what happens, in which order, at each event (see docs/engine.md).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import simpy

from dcsim.cluster import ACTIVE, SLEEP, Cluster
from dcsim.config import Scenario
from dcsim.decisions import DecisionDispatcher, decision_frame
from dcsim.dispatch import SAME_INSTANT_ULPS, Dispatcher, DropReason, JobStatus, delay_to
from dcsim.arrivals import job_source, streams_jobs
from dcsim.compiled import CompiledDispatcher, KernelEnvironment, compiled_rule, use_compiled
from dcsim.facility.dispatch_battery import DISPATCH_COLUMNS
from dcsim.job_log import JobFile, JobLog, JobTotals
from dcsim.kernel_rules import IDLE_NONE, LEARNER_BIDS
from dcsim.market_round import MarketRound
from dcsim.meter import EnergyMeter
from dcsim.outages import Outages
from dcsim.policy import Policy
from dcsim.power_delivery import PowerDelivery
from dcsim.reward_meter import RewardMeter
from dcsim.seeding import Streams
from dcsim.supply import SupplyInputs

__all__ = ["BATTERY_COLUMNS", "COOLING_COLUMNS", "DropReason", "JobStatus", "RunResult", "SAME_INSTANT_ULPS",
           "SETPOINT_COLUMNS", "Simulation", "TIMESERIES_COLUMNS"]


@dataclass
class RunResult:
    """Everything a run produced, before it is written out."""

    scenario: Scenario
    policy: Policy
    jobs: pd.DataFrame | None  # None when streamed to ``job_file``
    rounds: pd.DataFrame
    timeseries: pd.DataFrame
    energy: dict[str, float]
    tokens: dict[str, float]
    gpu_energy_j: np.ndarray
    ledger: pd.DataFrame
    wallets: np.ndarray
    decisions: pd.DataFrame
    allocations_w: np.ndarray | None = None  # (rounds, gpus) power above idle granted at each round, W
    events: pd.DataFrame | None = None
    agent_returns: np.ndarray | None = None  # learning policies: each agent's summed feedback rewards
    counters: dict[str, float] = field(default_factory=dict)
    elements: pd.DataFrame | None = None  # with a power-delivery tree: power through every element, W
    facility: dict | None = None  # with facility parts on: PUE and energy by part (cooling), counts
    dispatch: pd.DataFrame | None = None  # with facility.battery: the facility agent's decisions (DISPATCH_COLUMNS)
    job_totals: JobTotals | None = None  # what the summary reads from the job table, collected as jobs ended
    job_file: JobFile | None = None  # a streamed run's job table (``jobs`` is None then), until written out
    engine: str = "python"  # the per-job path the run took: "python" or "compiled" (dcsim.compiled)

    def jobs_table(self) -> pd.DataFrame:
        """The job table: ``jobs``, or a streamed run's read back from its file (all of it in memory)."""
        if self.jobs is not None:
            return self.jobs
        if self.job_file is None:
            raise ValueError("this run kept no job table (outputs.jobs_table: false with streamed jobs)")
        return self.job_file.read()


class Simulation:
    """One run of a scenario under a policy.

    SimPy drives time through processes (arrivals, supply changes, market rounds, fixed-step ticks) and
    timeout callbacks (power-state transitions, job completions). Every event books energy up to its instant
    first, then lets the components act in a fixed order, so runs are deterministic.

    Args:
        scenario: The validated scenario.
        policy: The decision policy.
        jobs: The job table (see :mod:`dcsim.jobs`), or a source handing it out in chunks (:mod:`dcsim.arrivals`).
        supply: Supply series aligned to the scenario start.
        streams: The run's random streams.
        progress: Called with the simulated time at each periodic round, or None.
        stream_jobs: Write ended jobs' rows to a file as the run goes instead of keeping the job table (the
            result's ``jobs`` is then None and ``job_file`` holds it); None: as ``outputs.stream_jobs`` says.
        compiled: Take the compiled per-job path (:mod:`dcsim.compiled`): None = when the run can, numba is
            installed and the run has enough jobs to repay loading it; True = must (an error if it cannot); False =
            the Python path. Both give identical results.
    """

    def __init__(self, scenario: Scenario, policy: Policy, jobs: pd.DataFrame, supply: SupplyInputs,
                 streams: Streams, progress: Callable[[float], None] | None = None, stream_jobs: bool | None = None,
                 compiled: bool | None = None):
        self.scenario = scenario
        self.policy = policy
        self.supply = supply
        self.progress = progress
        self.source = source = job_source(jobs)
        self.compiled = use_compiled(scenario, policy, compiled, source.n_jobs)
        if self.compiled:
            from dcsim import kernel

            kernel_state = np.zeros(kernel.N_IST, dtype=np.int64)  # the kernel's ints; [0] the shared event ids
            self.env = env = KernelEnvironment(kernel_state)
        else:
            self.env = env = simpy.Environment()
        self.horizon_s = scenario.horizon_s
        start = pd.Timestamp(scenario.start)
        hour0 = start.hour + start.minute / 60 + start.second / 3600
        self._trace: list[tuple] | None = [] if scenario.outputs.trace_events else None
        timing = scenario.decision_timing
        self.tick_s: float | None = None if timing == "event" else timing.fixed_step
        self.n_events = 0
        self.ts_rows: list[tuple] = []
        self.cooling_rows: list[tuple] = []  # with facility.cooling: COOLING_COLUMNS of each time-series row
        self.setpoint_rows: list[tuple] = []  # with its setpoint_control: SETPOINT_COLUMNS of each row

        self.cluster = cluster = Cluster(scenario, env, self._trace)
        self.n_gpus = cluster.n_gpus
        self.meter = meter = EnergyMeter(scenario, supply, env, cluster)
        self._chunks = enumerate(source.chunks())
        self.streamed = streams_jobs(scenario, source) if stream_jobs is None else stream_jobs
        spool = None
        if self.streamed and scenario.outputs.jobs_table:
            from dcsim.tables import choose_format

            spool = JobFile(choose_format(scenario.outputs.format, source.n_jobs))
        self.job_log = JobLog(scenario.horizon_s, scenario.warmup_s, with_node=scenario.facility.topology is not None,
                              with_requeues=scenario.facility.failures is not None, keep=not self.streamed, spool=spool)
        initial_slots = min(max(source.n_jobs, 16), 2 * cluster.n_gpus + 1024)
        if self.compiled:
            self.jobs = CompiledDispatcher(self.job_log, source.chunk_jobs, env, cluster, scenario.workload.drop_expired,
                                           scenario.workload.max_queue, self._trace, initial_slots=initial_slots,
                                           state=kernel_state, chunks=self._chunks, meter=meter,
                                           rule=compiled_rule(scenario, policy)[0])
        else:
            self.jobs = Dispatcher(self.job_log, source.chunk_jobs, env, cluster, scenario.workload.drop_expired,
                                   scenario.workload.max_queue, self._trace, initial_slots=initial_slots)
        self.decisions = DecisionDispatcher(policy, env, cluster, self.jobs, meter,
                                            scenario.market.base_price_tokens_per_kwh, hour0, self.tick_s, self._trace)
        self.market = MarketRound(scenario, streams, env, cluster, meter, self.jobs, self.decisions.start_wants,
                                  self.decisions.round_bids,
                                  bids_at_start=self.decisions.calls["bid"] and self.tick_s is None)
        self.rewards = RewardMeter(scenario, env, cluster, self.jobs, self.market, meter) if policy.wants_feedback else None
        # the seams: components call one another through these links, and the core through its handlers
        self.jobs.market = self.decisions.market = self.market
        if self.compiled:  # the kernel logs the rule's decisions at events, and decides idle GPUs at rounds too
            self.jobs.decision_rows = self.decisions.decision_rows
            if self.jobs.rule.bid in LEARNER_BIDS:  # a learner: the kernel decides (and learns) for it at job starts
                self.jobs.attach_learner(policy, hour0)
                self.decisions.compiled_round_bids = self.jobs.learner_round_bids
            if self.jobs.rule.on_idle != IDLE_NONE:
                self.decisions.idle_decisions = self.jobs.idle_decisions
        self.jobs.rewards = self.decisions.rewards = self.market.rewards = self.rewards
        self.jobs.on_due = self._on_completion_timer
        self._advance = meter.advance
        self._on_idle = self.decisions.calls["on_idle"]
        cluster.on_transition_end = self._on_transition_end
        self.power: PowerDelivery | None = None
        if scenario.facility.topology is not None:
            self._wire_power_delivery()
        self.outages: Outages | None = None
        if scenario.facility.failures is not None:
            self._wire_outages(streams)
        self.battery_rows: list[tuple] = []  # with facility.battery: BATTERY_COLUMNS of each time-series row
        # the facility agent dispatches the battery at every round, if the policy decides it (else: the fixed rule)
        dispatches = meter.battery is not None and self.decisions.calls["dispatch"]
        self._dispatch = self.decisions.dispatch_battery if dispatches else None
        # the facility agent sets the cooling setpoint at every round, if the policy decides it (else: the fixed one)
        plant = meter.cooling
        self._setpoint = plant is not None and plant.control is not None
        sets_cooling = self._setpoint and self.decisions.calls["cooling_setpoint"]
        self._set_cooling = self.decisions.set_cooling if sets_cooling else None
        if self.rewards is not None and hasattr(policy, "use_reward"):
            # learners that decide admissions charge a held job's wait with the scenario's own reward weights
            policy.use_reward(scenario.reward, scenario.workload.drop_expired)
        policy.reset(streams.generator("policy"), cluster.gpu_view, cluster.n_gpus)

    def _wire_power_delivery(self) -> None:
        """Plug the power-delivery tree in: placement, the safety layer and the per-element series."""
        self.power = power = PowerDelivery(self.scenario, self.env, self.cluster)
        power.jobs = self.jobs
        self.jobs.power = self.market.power = power
        self.cluster.on_pools_changed = power.pools_changed  # its per-element free counts follow the pools
        advance = self.meter.advance

        def observe_and_advance() -> None:
            power.observe()
            advance()

        self._advance = observe_and_advance
        begin = self.cluster.begin_transition

        def begin_then_enforce(gpus: list[int], state: int) -> None:
            begin(gpus, state)  # a transition's draw (waking, booting) is not the policy's to cap
            if power.enforcing:
                self.jobs.apply_allocations(power.limit_current(), self.cluster.state == ACTIVE)

        self.cluster.begin_transition = begin_then_enforce

    def _wire_outages(self, streams: Streams) -> None:
        """Plug failures in: outages stop jobs and take GPUs out; a transition a failure cut short never ends."""
        tree = None if self.power is None else self.power.tree
        self.outages = out = Outages(self.scenario, streams, self.env, self.cluster, self.jobs, self.meter,
                                     self.supply, tree)
        self.jobs.track_requeues()
        begin = self.cluster.begin_transition

        def begin_noting_transition(gpus: list[int], state: int) -> None:
            out.began_transition(gpus)
            begin(gpus, state)

        self.cluster.begin_transition = begin_noting_transition
        core_end = self.cluster.on_transition_end

        def end_unless_failed(gpus: list[int], count: bool = True) -> None:
            kept, orphans = out.transition_survivors(gpus)
            if kept:
                core_end(kept, count)
                if orphans:
                    out.free_orphans(orphans)
                    self.jobs.dispatch()
                    self.jobs.arm()
            elif count:
                self._event()

        self.cluster.on_transition_end = end_unless_failed
        set_supply = self.meter.set_supply

        def set_supply_unless_tripped(renewable_w: float, carbon: float, price: float) -> None:
            set_supply(0.0 if out.tripped else renewable_w, carbon, price)

        self.meter.set_supply = set_supply_unless_tripped

    def _failures(self):
        out, jobs = self.outages, self.jobs
        for t, kind, component, up in out.schedule():
            if t > self.env.now:
                yield self.env.timeout(delay_to(self.env.now, t))
            self._event()
            out.apply(kind, component, up)
            if self._trace is not None:
                self._trace.append((self.env.now, "repair" if up else "failure", component, kind))
            if kind == "renewable":
                self._record("trip_end" if up else "trip")
                continue
            jobs.dispatch()
            jobs.arm()

    # ------------------------------------------------------------------------------------ event handlers
    def _event(self) -> None:
        """Every event starts here: book energy up to now and count it."""
        self._advance()
        self.n_events += 1

    def _on_transition_end(self, gpus: list[int], count: bool = True) -> None:
        if count:
            self._event()
        if self.cluster.end_transition(gpus):
            self.jobs.gpus_ready(gpus)
        self.jobs.arm()

    def _on_completion_timer(self, _ev: simpy.Event) -> None:
        self._advance()  # _event() inlined on the per-job path
        self.n_events += 1
        jobs = self.jobs
        freed = jobs.complete_due()
        if freed:
            jobs.dispatch()
            if self._on_idle:
                self.decisions.idle_decisions(freed=freed)
        jobs.arm()

    def _round(self, trigger: str) -> None:
        self._event()
        if self._set_cooling is not None:  # first: the battery and the market see the cooling load it gives
            self._set_cooling()
        if self._dispatch is not None:  # before clearing, so the supply curve sells what the battery will deliver
            self._dispatch()
        self.market.run_round(trigger)
        self._record(f"round:{trigger}")
        if self._trace is not None:
            self._trace.append((self.env.now, "round", -1, f"{trigger} price={self.market.round_price:.6g} "
                                f"allocated_w={self.cluster.allocated_sum_w:.6g}"))
        self.jobs.drop_expired_queued()
        self.decisions.reconsider_deferred()
        self.jobs.dispatch()
        self.decisions.idle_decisions()
        self.jobs.arm()

    # ------------------------------------------------------------------------------------ processes
    def _arrivals(self):
        jobs, decisions = self.jobs, self.decisions
        horizon = self.horizon_s
        env = self.env
        n_gpus = self.n_gpus
        trace = self._trace
        screen = decisions.calls["admit"]
        for index, frame in self._chunks:
            jobs.open_chunk(index, frame)
            _, _, arrival, k, _, deferrable, *_ = jobs._rows
            for i, t in enumerate(arrival):
                if t >= horizon:
                    return
                if t > env.now:
                    yield env.timeout(delay_to(env.now, t))
                self._advance()  # _event() inlined on the per-job path
                self.n_events += 1
                j = jobs.arrive(i)  # bound to the chunk's columns and the slot buffers (open_chunk)
                if k[i] > n_gpus:
                    jobs.drop(j, DropReason.TOO_LARGE)
                    continue
                if trace is not None:
                    trace.append((env.now, "arrival", jobs._gid[j], f"gpus={k[i]}"))
                if screen and deferrable[i]:
                    decisions.admit_arrival(j)
                else:
                    jobs.enqueue((j,))
                jobs.dispatch()
                jobs.arm()

    def _kernel_arrivals(self):
        """The compiled path's arrivals process: it only starts them; the kernel takes every arrival after."""
        self.jobs.begin_arrivals()
        return
        yield  # a process: SimPy needs a generator

    def _supply_changes(self):
        times = self.supply.change_times(self.horizon_s)
        renewable = np.atleast_1d(self.supply.renewable_w.value_at(times)).tolist()
        carbon = np.atleast_1d(self.supply.carbon_g_per_kwh.value_at(times)).tolist()
        price = np.atleast_1d(self.supply.grid_price_usd_per_mwh.value_at(times)).tolist()
        band = self.scenario.market.hysteresis_fraction
        meter, market = self.meter, self.market
        for i, t in enumerate(times.tolist()):
            if t > self.env.now:
                yield self.env.timeout(delay_to(self.env.now, t))
            self._event()
            meter.set_supply(renewable[i], carbon[i], price[i])
            if self._trace is not None:
                self._trace.append((self.env.now, "supply", -1, f"renewable_w={meter.renewable_w:.6g} "
                                    f"carbon={meter.carbon:.6g} price={meter.grid_price:.6g}"))
            if t == 0.0:
                continue
            moved = abs(meter.renewable_w - market.renewable_at_round_w)
            if band is not None and moved > band * max(market.demand_at_round_w, 1e-9):  # W: no demand, any move
                self._round("supply")
            else:
                self._record("supply")
                self.decisions.reconsider_deferred()
                self.jobs.arm()

    def _market(self):
        for k, t in enumerate(self.market.round_times.tolist()):
            if t > self.env.now:
                yield self.env.timeout(delay_to(self.env.now, t))
            self.market.round_index = k
            self._round("periodic")
            if self.progress is not None:
                self.progress(self.env.now)

    def _ticks(self):
        """Fixed-step decision timing: every tick, the policy bids, reconsiders held jobs and idle GPUs."""
        t = 0.0
        decisions = self.decisions
        while t < self.horizon_s:
            if t > self.env.now:
                yield self.env.timeout(delay_to(self.env.now, t))
            self._event()
            if self._trace is not None:
                self._trace.append((self.env.now, "tick", -1, ""))
            decisions.tick_bid()
            decisions.reconsider_deferred(at_tick=True)
            self.jobs.dispatch()
            decisions.idle_decisions(at_tick=True)
            self.jobs.arm()
            t += self.tick_s

    def _record(self, event: str) -> None:
        """Append a row to the time series (at rounds, supply changes and the end)."""
        meter, cl, jobs = self.meter, self.cluster, self.jobs
        b = meter.books.totals
        self.ts_rows.append((
            self.env.now, event, max(0.0, cl.total_power_w), meter.renewable_w, meter.books.soc_j,
            self.market.round_price, meter.carbon, meter.grid_price, jobs.queue_length(), jobs.running_count(),
            int(np.count_nonzero(cl.state == ACTIVE)), int(np.count_nonzero(cl.state == SLEEP)), b.consumed_j,
            b.renewable_used_j, b.battery_out_j, b.grid_j, b.unserved_j, b.curtailed_j, b.charged_j,
        ))
        plant = meter.cooling
        if plant is not None:
            it_w = max(0.0, cl.total_power_w)
            facility_w = it_w + plant.extra_power_w()
            self.cooling_rows.append((facility_w, plant.cooling_power_w(), facility_w / it_w if it_w > 0 else np.nan,
                                      plant.room_temperature_c(), plant.outdoor_dry_bulb_c()))
            if self._setpoint:
                self.setpoint_rows.append((plant.supply_air_c, plant.chilled_water_c, plant.supply_air_c
                                           > plant.control.inlet_limit_c, plant.inlet_over_s))
        battery = meter.battery
        if battery is not None:
            g = battery.totals
            self.battery_rows.append(("fixed" if battery.command is None else battery.command.name, battery.rate_w,
                                      g.grid_import_j, g.grid_export_j, g.charge_from_grid_j, g.export_revenue_usd))

    def _facility_summary(self) -> dict | None:
        parts = {} if self.meter.cooling is None else dict(self.meter.cooling.summary())  # PUE, energy by part
        if self._setpoint:
            parts["setpoint"] = self.meter.cooling.setpoint_summary() | {
                "control": "policy" if self._set_cooling is not None else "fixed",
                "decisions": len(self.decisions.setpoint_rows)}
        if self.power is not None:
            parts["power_delivery"] = self.power.summary()
        if self.outages is not None:
            parts["failures"] = self.outages.summary()
        if self.meter.battery is not None:
            parts["battery"] = self.meter.battery.summary()
        return parts or None

    # ------------------------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Run to the horizon and return the results."""
        wall0 = time.perf_counter()
        self.env.process(self._supply_changes())
        if self.tick_s is not None:  # the tick at t = 0 comes first, so round 0 clears the policy's bids
            self.env.process(self._ticks())
        self.env.process(self._market())
        if self.compiled:
            self.jobs.start()
            self.env.catch_up = self.jobs.catch_up
            self.env.process(self._kernel_arrivals())
        else:
            self.env.process(self._arrivals())
        if self.outages is not None:
            self.env.process(self._failures())
        self.env.run(until=self.horizon_s)
        if self.compiled:  # every job event before the horizon is handled (the stop event orders after them)
            self.env.catch_up = None
            self.n_events += self.jobs.kernel_events()
        self._advance()
        self.jobs.close()
        for index, frame in self._chunks:  # jobs that never arrived (a trace's rows past the horizon)
            self.job_log.open(index, frame, index * self.source.chunk_jobs)
        jobs_table = self.job_log.close(self.source.empty())
        if self.meter.battery is not None:
            self.meter.battery.close()
        market, cl, books = self.market, self.cluster, self.meter.books
        market.close()
        self._record("end")
        if self.rewards is not None:
            self.rewards.close(self.env.now)
            self.policy.end_episode(self.decisions.agent_obs(np.arange(self.n_gpus)))
        wall_s = time.perf_counter() - wall0
        alloc_rows = market.alloc_rows
        counters = {"events": self.n_events, "wall_s": wall_s, "simulated_s": self.horizon_s,
                    "peak_overallocation_w": market.peak_overallocation_w}
        elements = None
        if self.power is not None:
            self.power.close()
            elements = self.power.element_table()
        return RunResult(
            scenario=self.scenario, policy=self.policy, jobs=jobs_table,
            rounds=pd.DataFrame(market.round_rows),
            timeseries=self._timeseries(),
            energy=books.totals.as_dict() | {"battery_soc_start_j": books.initial_soc_j, "battery_soc_end_j": books.soc_j},
            tokens=dict(market.tokens) | {"held": float(market.wallet.sum())},
            gpu_energy_j=cl.gpu_energy_now(),
            ledger=pd.DataFrame(market.ledger_rows, columns=["round", "time_s", "kind", "agent", "tokens"]),
            wallets=market.wallet.copy(),
            decisions=decision_frame(self.decisions.decision_rows),
            allocations_w=None if alloc_rows is None else
            (np.stack(alloc_rows) if alloc_rows else np.zeros((0, self.n_gpus), dtype=np.float32)),
            events=None if self._trace is None else pd.DataFrame(self._trace, columns=["time_s", "kind", "agent", "details"]),
            agent_returns=None if self.rewards is None else self.rewards.returns.copy(),
            counters=counters,
            elements=elements,
            facility=self._facility_summary(),
            dispatch=None if self.meter.battery is None else
            pd.DataFrame(self.meter.battery.decision_rows, columns=DISPATCH_COLUMNS),
            job_totals=self.job_log.totals, job_file=self.job_log.spool,
            engine="compiled" if self.compiled else "python",
        )

    def _timeseries(self) -> pd.DataFrame:
        ts = pd.DataFrame(self.ts_rows, columns=TIMESERIES_COLUMNS)
        if self.meter.cooling is not None:  # power_w stays the IT power; the books' columns are facility energy
            ts = pd.concat([ts, pd.DataFrame(self.cooling_rows, columns=COOLING_COLUMNS)], axis=1)
            if self._setpoint:
                ts = pd.concat([ts, pd.DataFrame(self.setpoint_rows, columns=SETPOINT_COLUMNS)], axis=1)
        if self.meter.battery is not None:
            ts = pd.concat([ts, pd.DataFrame(self.battery_rows, columns=BATTERY_COLUMNS)], axis=1)
        return ts


TIMESERIES_COLUMNS = [
    "time_s", "event", "power_w", "renewable_w", "battery_soc_j", "price_tokens_per_kwh", "carbon_g_per_kwh",
    "grid_price_usd_per_mwh", "queue_length", "jobs_running", "gpus_active", "gpus_sleeping",
    "consumed_j", "renewable_used_j", "battery_out_j", "grid_j", "unserved_j", "curtailed_j", "charged_j",
]
#: Time-series columns added with ``facility.cooling``: the facility power, cooling power and PUE at the row's
#: instant (PUE = facility / IT power; NaN when IT power is 0), the room air and the outdoor dry-bulb, °C.
COOLING_COLUMNS = ["facility_power_w", "cooling_power_w", "pue", "room_temp_c", "outdoor_dry_bulb_c"]
#: Time-series columns added with ``facility.cooling.setpoint_control``: the supply-air (IT inlet) and chilled-water
#: setpoints in force after the row's event, °C, whether the inlet is above ``inlet_limit_c`` then, and the
#: cumulative time it has been above it, s.
SETPOINT_COLUMNS = ["supply_air_c", "chilled_water_c", "inlet_over_limit", "inlet_violation_s"]
#: Time-series columns added with ``facility.battery``: the battery command in force after the row's event ("fixed" =
#: the fixed rule) and its rate, W; cumulative grid import and export, charging from the grid, J; export revenue, USD.
BATTERY_COLUMNS = ["battery_command", "battery_rate_w", "grid_import_j", "grid_export_j", "charge_from_grid_j",
                   "export_revenue_usd"]
