"""The facility agent of the RL envs: its battery-dispatch and cooling-setpoint actions and observation blocks.

At every market round of a scenario with ``facility.battery`` the engine asks its policy for a battery command
(:meth:`dcsim.policy.Policy.dispatch`); in the envs that is a ``dispatch`` step, answered with one
:class:`DispatchAction`: HOLD, or CHARGE / DISCHARGE at a fraction of the battery's bus-side power limit
(:data:`DISPATCH_LEVELS`). The observation block :data:`FACILITY_FEATURES` adds what the global block
(:mod:`dcsim.envs.features`: time of day, renewable power now and its forecast, prices, the state of charge)
lacks: the facility's load, the export price, the demand-charge peak so far and the battery's limits.

With ``facility.cooling.setpoint_control`` the engine also asks, at every round, for the supply-air setpoint
(:meth:`dcsim.policy.Policy.cooling_setpoint`); in the envs that is a ``cooling_setpoint`` step (before the round's
``dispatch`` step, at the same instant), answered with the index of one of the scenario's ``levels_c``
(:func:`setpoint_of`). Its block :data:`COOLING_FEATURES` holds the outdoor temperature, the setpoint in force,
the room temperature and the cooling plant's cost now.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

from dcsim.envs.features import FEATURE_BOUND
from dcsim.policy import BatteryCommand, CoolingCommand, CoolingObservation, Dispatch, FacilityObservation

#: Fractions of the power limit (``max_charge_w`` / ``max_discharge_w``) the CHARGE and DISCHARGE actions take.
DISPATCH_LEVELS = (0.25, 0.5, 1.0)


class DispatchAction(IntEnum):
    """The facility agent's choice at a ``dispatch`` step: a battery command until the next market round."""

    HOLD = 0
    CHARGE_25 = 1  # CHARGE at 25 % of max_charge_w
    CHARGE_50 = 2
    CHARGE_100 = 3
    DISCHARGE_25 = 4  # DISCHARGE at 25 % of max_discharge_w
    DISCHARGE_50 = 5
    DISCHARGE_100 = 6


def command_of(action: int, obs: FacilityObservation) -> BatteryCommand:
    """The :class:`~dcsim.policy.BatteryCommand` a :class:`DispatchAction` stands for, given the battery's limits."""
    a = DispatchAction(int(action))
    if a is DispatchAction.HOLD:
        return BatteryCommand(Dispatch.HOLD)
    level = DISPATCH_LEVELS[(a - 1) % len(DISPATCH_LEVELS)]
    if a <= DispatchAction.CHARGE_100:
        return BatteryCommand(Dispatch.CHARGE, level * obs.max_charge_w)
    return BatteryCommand(Dispatch.DISCHARGE, level * obs.max_discharge_w)


#: Columns of the facility block (power as a fraction of the cluster's full power, prices per 100 USD/MWh).
FACILITY_FEATURES = ("decision_dispatch", "soc_in_bounds", "load_frac", "net_load_frac",
                     "export_price_per_100usd_mwh", "window_peak_frac", "max_charge_frac", "max_discharge_frac")


def facility_features(obs: FacilityObservation, deciding: bool, full_power_w: float) -> np.ndarray:
    """The facility block (:data:`FACILITY_FEATURES`) of facility observation ``obs``, float32.

    ``soc_in_bounds`` is the state of charge between its bounds (0 at ``min_soc``, 1 at ``max_soc``);
    ``net_load_frac`` is positive on a deficit (load above renewable power); an export price that is not set
    (no export) reads 0.
    """
    span_j = obs.max_soc_j - obs.min_soc_j
    export = obs.export_price_usd_per_mwh
    row = np.array([float(deciding), (obs.soc_j - obs.min_soc_j) / span_j, obs.load_w / full_power_w,
                    obs.net_load_w / full_power_w, 0.0 if not np.isfinite(export) else export / 100.0,
                    obs.window_peak_w / full_power_w, obs.max_charge_w / full_power_w,
                    obs.max_discharge_w / full_power_w])
    return np.clip(np.nan_to_num(row.astype(np.float32), nan=0.0), -FEATURE_BOUND, FEATURE_BOUND)


def setpoint_of(action: int, levels_c: tuple[float, ...]) -> CoolingCommand:
    """The :class:`~dcsim.policy.CoolingCommand` setpoint level ``action`` (an index into ``levels_c``) stands for."""
    return CoolingCommand(float(levels_c[int(action)]))


#: Columns of the cooling block (temperatures ÷ 10 °C, power as a fraction of the cluster's full power).
COOLING_FEATURES = ("decision_setpoint", "outdoor_dry_bulb_10c", "supply_air_10c", "setpoint_in_range",
                    "room_temp_10c", "inlet_margin_10k", "cooling_frac", "electric_per_heat")


def cooling_features(obs: CoolingObservation, deciding: bool, full_power_w: float) -> np.ndarray:
    """The cooling block (:data:`COOLING_FEATURES`) of cooling observation ``obs``, float32.

    ``setpoint_in_range`` is the setpoint in force between the allowed range's ends (0 at ``min_c``, 1 at
    ``max_c``); ``inlet_margin_10k`` is ``(inlet_limit_c − supply_air_c)/10``, negative while the inlet is above
    its limit; ``electric_per_heat`` is ``k`` now (cooling-plant W per W of heat removed).
    """
    row = np.array([float(deciding), obs.outdoor_dry_bulb_c / 10.0, obs.supply_air_c / 10.0,
                    (obs.supply_air_c - obs.min_c) / (obs.max_c - obs.min_c), obs.room_temp_c / 10.0,
                    (obs.inlet_limit_c - obs.supply_air_c) / 10.0, obs.cooling_power_w / full_power_w,
                    obs.electric_per_heat])
    return np.clip(np.nan_to_num(row.astype(np.float32), nan=0.0), -FEATURE_BOUND, FEATURE_BOUND)
