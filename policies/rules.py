"""Rule-based baseline policies: always-on, race-to-idle, renewable-follower, price-threshold, deadline-slack, truthful,
a battery rule for the facility agent (grid-price thresholds and peak shaving) and a cooling-setpoint rule (follow the
outdoor temperature)."""
from __future__ import annotations

import math

import numpy as np

from dcsim import kernel_rules as kr
from dcsim.learning import pace_power_w
from dcsim.policy import (
    Admission,
    AgentObservation,
    BatteryCommand,
    Bids,
    CoolingCommand,
    CoolingObservation,
    Dispatch,
    FacilityObservation,
    IdleAction,
    JobObservation,
    Policy,
)

_FEW = 16  # up to this many agents (a job starting, a completion), the rules decide as Python numbers
_INF = math.inf
_SLEEP, _STAY = int(IdleAction.SLEEP), int(IdleAction.STAY_IDLE)
_RUN, _DEFER = int(Admission.RUN), int(Admission.DEFER)


def _int8s(n: int, value: int) -> np.ndarray:
    """``np.full(n, value, dtype=np.int8)``, for a few agents without ``np.full``'s fixed cost."""
    return np.array([value] * n, dtype=np.int8) if n <= _FEW else np.full(n, value, dtype=np.int8)


def _floats(n: int, value: float) -> np.ndarray:
    """``np.full(n, value)`` (float64), for a few agents without ``np.full``'s fixed cost."""
    return np.array([value] * n, dtype=np.float64) if n <= _FEW else np.full(n, value, dtype=np.float64)


class AlwaysOn(Policy):
    """Never sleeps, runs every job at once at full power, pays any price."""

    name = "always_on"


class RaceToIdle(Policy):
    """Runs every job at full power, and puts a GPU to sleep as soon as it has nothing to do."""

    name = "race_to_idle"

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        return _int8s(len(obs), _SLEEP)

    def kernel_rule(self) -> kr.KernelRule:
        return kr.KernelRule(on_idle=kr.IDLE_SLEEP)


class RenewableFollower(Policy):
    """Follows renewable supply: caps power to the renewable fraction and holds deferrable jobs when it is low.

    Args:
        min_power_fraction: Lowest share of the dynamic power range requested, in [0, 1].
        defer_below_fraction: Deferrable jobs wait while the renewable fraction is below this.
        sleep_when_idle: Put idle GPUs to sleep.
    """

    name = "renewable_follower"

    def __init__(self, min_power_fraction: float = 0.5, defer_below_fraction: float = 0.5, sleep_when_idle: bool = True):
        super().__init__()
        if not 0 <= min_power_fraction <= 1 or not 0 <= defer_below_fraction <= 1:
            raise ValueError("min_power_fraction and defer_below_fraction must lie in [0, 1]")
        self.min_power_fraction = min_power_fraction
        self.defer_below_fraction = defer_below_fraction
        self.sleep_when_idle = sleep_when_idle

    def bid(self, obs: AgentObservation) -> Bids:
        share = max(self.min_power_fraction, obs.market.renewable_fraction)
        g = obs.gpu
        request = g.idle_w + share * (g.full_power_w - g.idle_w)
        n = len(obs)
        return Bids(_floats(n, request), _floats(n, _INF))

    def admit(self, obs: JobObservation) -> np.ndarray:
        low = obs.market.renewable_fraction < self.defer_below_fraction
        return _int8s(len(obs), _DEFER if low else _RUN)

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        return _int8s(len(obs), _SLEEP if self.sleep_when_idle else _STAY)

    def state_dict(self) -> dict:
        return {"min_power_fraction": self.min_power_fraction, "defer_below_fraction": self.defer_below_fraction,
                "sleep_when_idle": self.sleep_when_idle}

    def kernel_rule(self) -> kr.KernelRule:
        return kr.KernelRule(bid=kr.BID_RENEWABLE_SHARE, bid_params=(self.min_power_fraction,),
                             admit=kr.ADMIT_RENEWABLE_BELOW, admit_params=(self.defer_below_fraction,),
                             on_idle=kr.IDLE_SLEEP if self.sleep_when_idle else kr.IDLE_STAY)


class PriceThreshold(Policy):
    """Holds deferrable jobs and throttles running ones while the token price is above a threshold.

    Args:
        threshold_tokens_per_kwh: Price above which the policy defers and throttles.
        throttle_to_min_cap: When above the threshold, request the GPU's minimum cap (else pay the price).
    """

    name = "price_threshold"

    def __init__(self, threshold_tokens_per_kwh: float = 2.0, throttle_to_min_cap: bool = True):
        super().__init__()
        if threshold_tokens_per_kwh <= 0:
            raise ValueError("threshold_tokens_per_kwh must be > 0")
        self.threshold = threshold_tokens_per_kwh
        self.throttle = throttle_to_min_cap

    def bid(self, obs: AgentObservation) -> Bids:
        """Two blocks: up to the minimum cap at any price (keeps the job running), the rest of the range
        only at or below the threshold (or at any price when ``throttle_to_min_cap`` is off)."""
        g, n = obs.gpu, len(obs)
        floor_w = g.min_cap_w - g.idle_w
        w_row, price_row = [floor_w, g.full_power_w - g.min_cap_w], [_INF, self.threshold if self.throttle else _INF]
        if n <= _FEW:  # np.tile's rows, without its fixed cost
            steps_w, steps_price = np.array([w_row] * n, dtype=np.float64), np.array([price_row] * n, dtype=np.float64)
            if n == 0:
                steps_w, steps_price = steps_w.reshape(0, 2), steps_price.reshape(0, 2)
        else:
            steps_w, steps_price = np.tile(w_row, (n, 1)), np.tile(price_row, (n, 1))
        return Bids(_floats(n, g.full_power_w), _floats(n, _INF), steps_w, steps_price)

    def admit(self, obs: JobObservation) -> np.ndarray:
        high = obs.market.price_tokens_per_kwh > self.threshold
        return _int8s(len(obs), _DEFER if high else _RUN)

    def state_dict(self) -> dict:
        return {"threshold_tokens_per_kwh": self.threshold, "throttle_to_min_cap": self.throttle}

    def kernel_rule(self) -> kr.KernelRule:
        return kr.KernelRule(bid=kr.BID_TWO_BLOCKS, bid_params=(self.threshold if self.throttle else _INF,),
                             admit=kr.ADMIT_PRICE_ABOVE, admit_params=(self.threshold,))


class DeadlineSlack(Policy):
    """Uses deadline slack: runs each job at the lowest power that still meets its deadline, and holds
    deferrable jobs while scarcity pricing is on and their slack allows waiting.

    Args:
        safety: Plan to finish by ``now + (deadline - now) / safety`` (>= 1).
        defer_price_ratio: Hold deferrable jobs while price > base price × this ratio.
    """

    name = "deadline_slack"

    def __init__(self, safety: float = 1.25, defer_price_ratio: float = 1.5):
        super().__init__()
        if safety < 1 or defer_price_ratio < 1:
            raise ValueError("safety and defer_price_ratio must be >= 1")
        self.safety = safety
        self.defer_price_ratio = defer_price_ratio

    def bid(self, obs: AgentObservation) -> Bids:
        # the learners' PACE action bids the same power (dcsim.learning.pace_power_w)
        return Bids(pace_power_w(obs, self.safety), _floats(len(obs), _INF))

    def admit(self, obs: JobObservation) -> np.ndarray:
        scarce = obs.market.price_tokens_per_kwh > obs.market.base_price_tokens_per_kwh * self.defer_price_ratio
        # Waiting until the next round must still leave a safety margin before the deadline.
        wait_s = max(obs.market.next_round_s - obs.market.time_s, 0.0)
        can_wait = obs.slack_s - wait_s > (self.safety - 1) * obs.duration_s
        return np.where(scarce & can_wait, Admission.DEFER, Admission.RUN).astype(np.int8)

    def state_dict(self) -> dict:
        return {"safety": self.safety, "defer_price_ratio": self.defer_price_ratio}

    def kernel_rule(self) -> kr.KernelRule:
        return kr.KernelRule(bid=kr.BID_PACE, bid_params=(self.safety,), admit=kr.ADMIT_SLACK,
                             admit_params=(self.safety, self.defer_price_ratio))


class Truthful(Policy):
    """Bids its job's true value: full power at a price equal to the value per kWh of the energy above idle
    the job still needs at full clock, on all its GPUs (each agent's share of the value over its own
    energy). Price-blind nowhere: an idle agent, or one whose job has no value, bids a price of 0.

    Args:
        sleep_when_idle: Put idle GPUs to sleep.
    """

    name = "truthful"

    def __init__(self, sleep_when_idle: bool = False):
        super().__init__()
        self.sleep_when_idle = sleep_when_idle

    def bid(self, obs: AgentObservation) -> Bids:
        g = obs.gpu
        n = len(obs)
        if n <= _FEW:  # a job starting: the same arithmetic on Python numbers (numpy's fixed cost dominates)
            span_w, price = g.full_power_w - g.idle_w, []
            for rem, v, k, has in obs.rows("job_remaining_s", "job_value_tokens", "job_gpus", "has_job"):
                e = rem * span_w / 3.6e6
                price.append(v / max(k, 1) / e if has and e > 0 else 0.0)
            return Bids(_floats(n, g.full_power_w), np.array(price, dtype=np.float64))
        energy_kwh = obs.job_remaining_s * (g.full_power_w - g.idle_w) / 3.6e6  # this GPU's share
        share = obs.job_value_tokens / np.maximum(obs.job_gpus, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(obs.has_job & (energy_kwh > 0), share / energy_kwh, 0.0)
        return Bids(np.full(len(obs), g.full_power_w), value)

    def on_idle(self, obs: AgentObservation) -> np.ndarray:
        return _int8s(len(obs), _SLEEP if self.sleep_when_idle else _STAY)

    def state_dict(self) -> dict:
        return {"sleep_when_idle": self.sleep_when_idle}

    def kernel_rule(self) -> kr.KernelRule:
        return kr.KernelRule(bid=kr.BID_TRUTHFUL, on_idle=kr.IDLE_SLEEP if self.sleep_when_idle else kr.IDLE_STAY)


class BatteryThreshold(Policy):
    """The facility agent's rule: shave peaks, store surplus renewable power, buy cheap grid power, sell dear.

    At each market round, in this order (the first that applies decides; the engine clips rates to the battery):

    1. **Peak shaving** (with ``shave_above_w``): the net load (facility load − renewable power) is above it →
       DISCHARGE the excess.
    2. **Surplus**: renewable power exceeds the load → CHARGE at the surplus.
    3. **Cheap grid**: the grid price is at or below ``charge_below_usd_per_mwh`` and ``facility.battery.grid_charging``
       is on → CHARGE at full rate (with ``shave_above_w``, only up to what keeps the grid import at or below it).
    4. **Dear grid**: the grid price is at or above ``discharge_above_usd_per_mwh`` → DISCHARGE at the deficit, or
       at full rate (exporting the rest) when the export price is at or above that threshold too.
    5. Otherwise HOLD.

    The GPUs run as :class:`AlwaysOn` (the rule decides only the battery); a policy that should do both subclasses
    another policy and adds a ``dispatch`` method.

    Args:
        charge_below_usd_per_mwh: Grid price at or below which the battery charges from the grid, USD/MWh.
        discharge_above_usd_per_mwh: Grid price at or above which it discharges, USD/MWh (above the charge price).
        shave_above_w: Net load the grid should not have to serve above, W (None = no peak shaving).
    """

    name = "battery_threshold"

    def __init__(self, charge_below_usd_per_mwh: float = 30.0, discharge_above_usd_per_mwh: float = 80.0,
                 shave_above_w: float | None = None):
        super().__init__()
        for label, value in (("charge_below_usd_per_mwh", charge_below_usd_per_mwh),
                             ("discharge_above_usd_per_mwh", discharge_above_usd_per_mwh)):
            if not math.isfinite(value):
                raise ValueError(f"{label} must be a finite number of USD/MWh, got {value!r}")
        if not charge_below_usd_per_mwh < discharge_above_usd_per_mwh:
            raise ValueError(f"charge_below_usd_per_mwh ({charge_below_usd_per_mwh:g}) must be below "
                             f"discharge_above_usd_per_mwh ({discharge_above_usd_per_mwh:g})")
        if shave_above_w is not None and not (shave_above_w >= 0 and math.isfinite(shave_above_w)):
            raise ValueError(f"shave_above_w must be a finite number of W >= 0 or null, got {shave_above_w!r}")
        self.charge_below = float(charge_below_usd_per_mwh)
        self.discharge_above = float(discharge_above_usd_per_mwh)
        self.shave_above_w = None if shave_above_w is None else float(shave_above_w)

    def dispatch(self, obs: FacilityObservation) -> BatteryCommand:
        net = obs.net_load_w
        price = obs.market.grid_price_usd_per_mwh
        shave = self.shave_above_w
        if shave is not None and net > shave:
            return BatteryCommand(Dispatch.DISCHARGE, net - shave)
        if net < 0:
            return BatteryCommand(Dispatch.CHARGE, -net)
        if price <= self.charge_below and obs.grid_charging:
            rate = obs.max_charge_w if shave is None else min(obs.max_charge_w, shave - net)
            return BatteryCommand(Dispatch.CHARGE, rate) if rate > 0 else BatteryCommand(Dispatch.HOLD)
        if price >= self.discharge_above:
            exporting = obs.export_price_usd_per_mwh >= self.discharge_above  # NaN (no export) is not
            return BatteryCommand(Dispatch.DISCHARGE, obs.max_discharge_w if exporting else net)
        return BatteryCommand(Dispatch.HOLD)

    def state_dict(self) -> dict:
        return {"charge_below_usd_per_mwh": self.charge_below, "discharge_above_usd_per_mwh": self.discharge_above,
                "shave_above_w": self.shave_above_w}


class CoolingFollowOutdoor(Policy):
    """The facility agent's cooling rule: the coolest setpoint level that costs no more cooling than the cheapest.

    At each market round it reads ``k`` (cooling-plant electric W per W of heat) of every setpoint level at the
    outdoor temperature now (``CoolingObservation.electric_per_heat_by_level``), keeps the levels at or below
    ``highest_c`` (default: the inlet limit, so the rule never causes an inlet violation), and picks the lowest of
    those whose ``k`` is within ``tolerance`` (relative) of the smallest. So it follows the outdoor temperature:

    - where the outdoor air gives full free cooling (an economiser at its share 1, ``k`` the economiser's auxiliary
      power alone) it takes the lowest setpoint that still has it, keeping the IT cooler at no cost;
    - when the chiller works (``k`` falls as the setpoint, and with it the chilled water, rises) it raises the
      setpoint to ``highest_c``.

    The GPUs run as :class:`AlwaysOn` (the rule decides only the cooling).

    Args:
        highest_c: Highest setpoint level the rule chooses, °C; None: ``inlet_limit_c``.
        tolerance: Relative extra ``k`` accepted for a cooler setpoint (0: only levels exactly as cheap).
    """

    name = "cooling_follow_outdoor"

    def __init__(self, highest_c: float | None = None, tolerance: float = 0.0):
        super().__init__()
        if highest_c is not None and not math.isfinite(highest_c):
            raise ValueError(f"highest_c must be a finite number of °C or null, got {highest_c!r}")
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
        self.highest_c = None if highest_c is None else float(highest_c)
        self.tolerance = float(tolerance)

    def cooling_setpoint(self, obs: CoolingObservation) -> CoolingCommand:
        cap = obs.inlet_limit_c if self.highest_c is None else self.highest_c
        allowed = [(c, k) for c, k in zip(obs.levels_c, obs.electric_per_heat_by_level) if c <= cap]
        if not allowed:  # every level lies above the cap: the lowest one
            return CoolingCommand(obs.levels_c[0])
        cheapest = min(k for _, k in allowed)
        return CoolingCommand(next(c for c, k in allowed if k <= cheapest * (1.0 + self.tolerance)))

    def state_dict(self) -> dict:
        return {"highest_c": self.highest_c, "tolerance": self.tolerance}
