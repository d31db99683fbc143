"""Cluster state: each GPU's power state, draw, cap and energy meter, and the power-state transitions."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import simpy

from dcsim.buffers import buffer
from dcsim.config import Scenario
from dcsim.policy import GpuSpecView, GpuState

OFF, SLEEP, IDLE, ACTIVE = int(GpuState.OFF), int(GpuState.SLEEP), int(GpuState.IDLE), int(GpuState.ACTIVE)
WAKING, ENTERING_SLEEP, BOOTING, SHUTTING_DOWN = (int(GpuState.WAKING), int(GpuState.ENTERING_SLEEP),
                                                  int(GpuState.BOOTING), int(GpuState.SHUTTING_DOWN))
_TARGET = {WAKING: IDLE, BOOTING: IDLE, ENTERING_SLEEP: SLEEP, SHUTTING_DOWN: OFF}
# A cap that rounds this many ulps short of the board's minimum (idle + (min − idle)) is still the minimum.
CAP_ULPS = 4


class Cluster:
    """The GPUs: power figures, per-GPU buffers and the pools of free GPUs by state.

    Per-GPU energy is kept as ``E(t) = energy_off + power_w·t`` (and billable energy above idle the same way),
    so a power change is one update. Every GPU attribute below is a numpy view whose ``_``-prefixed
    ``array.array`` twin shares its memory (scalar access on the hot path).

    Args:
        scenario: The validated scenario (its ``cluster`` section).
        env: The SimPy environment (transitions are timeouts on it).
        trace: The event trace to append power-state changes to, or None.
    """

    def __init__(self, scenario: Scenario, env: simpy.Environment, trace: list[tuple] | None):
        self.env = env
        self._trace = trace
        cl = scenario.cluster
        spec = cl.power_spec()
        self.idle_w: float = spec["idle_w"]
        self.tdp_w: float = spec["tdp_w"]
        self.min_cap_w: float = spec["min_cap_w"]
        self._min_cap_floor_w = self.min_cap_w - CAP_ULPS * math.ulp(self.min_cap_w)
        self.gamma: float = spec["gamma"]
        self.util: float = spec["utilisation"]
        self.span_w: float = (self.tdp_w - self.idle_w) * self.util
        self.full_power_w: float = self.idle_w + self.span_w
        self.gpu_view = GpuSpecView(self.idle_w, self.tdp_w, self.min_cap_w, self.full_power_w, self.gamma, self.util)
        tr = cl.transitions
        self.transition_s = {WAKING: tr.wake_s, ENTERING_SLEEP: tr.sleep_s, BOOTING: tr.boot_s, SHUTTING_DOWN: tr.shutdown_s}
        energy = {WAKING: tr.wake_j, ENTERING_SLEEP: tr.sleep_j, BOOTING: tr.boot_j, SHUTTING_DOWN: tr.shutdown_j}
        self.state_power_w = [0.0] * len(GpuState)
        self.state_power_w[OFF] = spec["off_w"]
        self.state_power_w[SLEEP] = spec["sleep_w"]
        self.state_power_w[IDLE] = self.state_power_w[ACTIVE] = self.idle_w
        for st, dur in self.transition_s.items():
            self.state_power_w[st] = energy[st] / dur if dur > 0 else 0.0

        n = self.n_gpus = cl.gpus
        initial = {"idle": IDLE, "sleep": SLEEP, "off": OFF}[cl.initial_state]
        self._st, self.state = buffer(n, "b", initial)
        self._asg, self.assigned = buffer(n, "q", -1)  # job index, -1 when free
        self._pw, self.power_w = buffer(n, "d", self.state_power_w[initial])
        self._bw, self.billable_w = buffer(n, "d", 0.0)  # power above idle of running GPUs: what agents pay for
        self._eoff, self.energy_off = buffer(n, "d", 0.0)  # energy(t) = energy_off + power_w * t
        self._boff, self.billable_off = buffer(n, "d", 0.0)  # billable energy since settlement, same form
        self._al, self.alloc_w = buffer(n, "d", 0.0)  # allocated power above idle
        self._ck, self.clock = buffer(n, "d", 0.0)
        self.wake_after = bytearray(n)  # 1: wake as soon as the transition to sleep/off ends
        self.total_power_w: float = float(self.power_w.sum())  # running sum, resynchronised at rounds
        self.allocated_sum_w: float = 0.0  # running sum of alloc_w, resynchronised at rounds
        self.free_idle: dict[int, None] = {}  # insertion-ordered sets of free GPUs by state
        self.free_sleep: dict[int, None] = {}
        self.free_off: dict[int, None] = {}
        {IDLE: self.free_idle, SLEEP: self.free_sleep, OFF: self.free_off}[initial].update(dict.fromkeys(range(n)))
        # The core's handler, called with the GPUs whose transition ended (``count=False`` when it took no time:
        # no event of its own).
        self.on_transition_end: Callable[..., None] | None = None
        # Called with GPUs that joined, left or moved between the free pools, when something keeps its own view
        # of them (a power-delivery tree's per-element free counts); None, the default, costs one test per change.
        self.on_pools_changed: Callable[[list[int]], None] | None = None

    def set_power(self, g: int, power_w: float, billable_w: float, now: float) -> None:
        """Change GPU ``g``'s draw and billable power at ``now`` (the current time, passed in because the callers
        already hold it; energy meters stay exact: ``offset += (old − new)·t``)."""
        old = self._pw[g]
        if old != power_w:
            self._eoff[g] += (old - power_w) * now
            self._pw[g] = power_w
            self.total_power_w += power_w - old
        old = self._bw[g]
        if old != billable_w:
            self._boff[g] += (old - billable_w) * now
            self._bw[g] = billable_w

    def gpu_energy_now(self) -> np.ndarray:
        """Energy each GPU has used since t = 0, J."""
        return self.energy_off + self.power_w * self.env.now

    def cap(self, alloc_w: float) -> tuple[float, float, float]:
        """Clock fraction, power and effective allocation of a running GPU given power ``alloc_w`` above idle.

        ``f`` solves ``idle + span·f**gamma = idle + alloc``; a cap below the board's minimum cannot be
        enforced, so the job pauses (f = 0, idle power, no allocation held).
        """
        if self.idle_w + alloc_w < self._min_cap_floor_w or alloc_w <= 0:
            return 0.0, self.idle_w, 0.0
        ratio = min(alloc_w / self.span_w, 1.0)
        return ratio ** (1.0 / self.gamma), self.idle_w + self.span_w * ratio, alloc_w

    def below_min_cap(self, alloc_w: np.ndarray) -> np.ndarray:
        """Which allocations above idle (W) are below the board's minimum cap (their jobs pause)."""
        return self.idle_w + alloc_w < self._min_cap_floor_w

    def begin_transition(self, gpus: list[int], state: int) -> None:
        """Start moving ``gpus`` into transition ``state`` (waking, booting, entering sleep, shutting down)."""
        power = self.state_power_w[state]
        now = self.env.now
        if self._trace is not None:
            for g in gpus:
                self._trace.append((now, "power_state", g, GpuState(state).name.lower()))
        for g in gpus:
            self._st[g] = state
            self.set_power(g, power, 0.0, now)
        duration = self.transition_s[state]
        if duration <= 0:
            self.on_transition_end(gpus, count=False)
            return
        ev = self.env.timeout(duration)
        ev.callbacks.append(lambda _ev, gpus=gpus: self.on_transition_end(gpus))

    def end_transition(self, gpus: list[int]) -> bool:
        """Settle ``gpus`` in their transition's target state; returns whether they are now idle. GPUs that
        reached sleep/off while a job waited for them start waking at once."""
        target = _TARGET[self._st[gpus[0]]]
        power = self.state_power_w[target]
        now = self.env.now
        if self._trace is not None:
            for g in gpus:
                self._trace.append((now, "power_state", g, GpuState(target).name.lower()))
        for g in gpus:
            self._st[g] = target
            self.set_power(g, power, 0.0, now)
        if target == IDLE:
            return True
        again = [g for g in gpus if self.wake_after[g]]
        for g in again:
            self.wake_after[g] = 0
        if again:
            self.begin_transition(again, WAKING if target == SLEEP else BOOTING)
        return False

    def power_down(self, chosen: list[int], state: int) -> None:
        """Send free idle GPUs ``chosen`` towards sleep (``ENTERING_SLEEP``) or off (``SHUTTING_DOWN``)."""
        pool = self.free_sleep if state == ENTERING_SLEEP else self.free_off
        for g in chosen:
            del self.free_idle[g]
            pool[g] = None
        if self.on_pools_changed is not None:
            self.on_pools_changed(chosen)
        self.begin_transition(chosen, state)
