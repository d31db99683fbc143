"""The facility agent of the RL envs (scenarios with ``facility.battery``): conformance checks, the dispatch
actions reaching the battery exactly as a plain policy's commands do, and envs without a battery unchanged."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from dcsim.errors import DcsimError
from dcsim.learning import BidAction, episode_reward, episode_totals
from dcsim.policy import Admission, BatteryCommand, Dispatch, IdleAction
from dcsim.runner import run_scenario

gym = pytest.importorskip("gymnasium")
pytest.importorskip("pettingzoo")

from dcsim.envs import DcsimEnv, DcsimParallelEnv  # noqa: E402
from dcsim.envs.facility import DISPATCH_LEVELS, FACILITY_FEATURES, DispatchAction, command_of  # noqa: E402
from test_envs import _Constant, tiny  # noqa: E402

SOLAR = {"capacity_w": 3000, "latitude": 37.36, "longitude": -121.93}
BATTERY = {"capacity_wh": 2000, "max_charge_w": 1000, "max_discharge_w": 800, "round_trip_efficiency": 0.9,
           "initial_soc": 0.5}


def with_battery(**changes):
    """:func:`tiny` with a 2 kWh battery the facility agent dispatches (grid charging, export, a demand charge)."""
    return tiny(supply={"solar": SOLAR, "battery": BATTERY,
                        "grid": {"carbon_g_per_kwh": {"constant": 400}, "price_usd_per_mwh": {"constant": 60}}},
                facility={"battery": {"min_soc": 0.1, "grid_charging": True,
                                      "export_price_usd_per_mwh": {"constant": 35}, "export_cap_w": 500,
                                      "demand_charge_usd_per_kw": 0.5, "demand_interval_s": 900,
                                      "billing_window_s": 3600}},
                **changes)


N_SHARED = len(BidAction) * len(IdleAction) * len(Admission)


def shared_action(dispatch, bid=BidAction.FULL, idle=IdleAction.SLEEP, admit=Admission.RUN):
    return N_SHARED * int(dispatch) + 6 * int(bid) + 2 * int(idle) + int(admit)


class _Replay(_Constant):
    """:class:`_Constant` that also dispatches the battery with given commands, one per round in order."""

    name = "replay"

    def __init__(self, commands):
        super().__init__()
        self.commands = list(commands)
        self.asked = 0

    def dispatch(self, obs):
        command = self.commands[self.asked]
        self.asked += 1
        return command


def run_env(env, seed, action_of_step):
    """One episode; ``action_of_step(info, rng)`` gives each step's action. Returns the infos of every step."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    infos = [info]
    while True:
        obs, reward, terminated, truncated, info = env.step(action_of_step(info, rng))
        infos.append(info)
        if terminated:
            return infos


# ------------------------------------------------------------------------------------------------ actions
def test_dispatch_actions_are_the_commands_at_their_levels():
    from dcsim.policy import FacilityObservation

    obs = FacilityObservation.__new__(FacilityObservation)
    object.__setattr__(obs, "max_charge_w", 1000.0)
    object.__setattr__(obs, "max_discharge_w", 800.0)
    assert command_of(DispatchAction.HOLD, obs) == BatteryCommand(Dispatch.HOLD)
    charges = [command_of(a, obs) for a in (DispatchAction.CHARGE_25, DispatchAction.CHARGE_50,
                                            DispatchAction.CHARGE_100)]
    discharges = [command_of(a, obs) for a in (DispatchAction.DISCHARGE_25, DispatchAction.DISCHARGE_50,
                                               DispatchAction.DISCHARGE_100)]
    assert [c.command for c in charges] == [Dispatch.CHARGE] * 3
    assert [c.command for c in discharges] == [Dispatch.DISCHARGE] * 3
    assert [c.rate_w for c in charges] == [f * 1000.0 for f in DISPATCH_LEVELS]
    assert [c.rate_w for c in discharges] == [f * 800.0 for f in DISPATCH_LEVELS]
    assert len(DispatchAction) == 1 + 2 * len(DISPATCH_LEVELS)


# ------------------------------------------------------------------------------------------------ Gymnasium
@pytest.mark.parametrize("layout", ["per_agent", "shared"])
def test_check_env_passes_with_a_battery(layout):
    from gymnasium.utils.env_checker import check_env

    env = DcsimEnv(with_battery(), action_layout=layout)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render.*")
        check_env(env, skip_render_check=True)
    env.close()


def test_spaces_gain_the_facility_agent_only_with_a_battery():
    plain, battery, off = DcsimEnv(tiny()), DcsimEnv(with_battery()), DcsimEnv(with_battery(), facility_agent=False)
    n, slots = 4, 8
    assert list(plain.action_space.nvec) == [len(BidAction)] * n + [len(IdleAction)] * n + [len(Admission)] * slots
    assert list(battery.action_space.nvec) == list(plain.action_space.nvec) + [len(DispatchAction)]
    assert battery.observation_names == plain.observation_names + [f"facility.{f}" for f in FACILITY_FEATURES]
    assert not any(name.startswith("facility.") for name in plain.observation_names)
    assert off.observation_names == plain.observation_names and off.action_space == plain.action_space
    shared = DcsimEnv(with_battery(), action_layout="shared")
    assert shared.action_space.n == N_SHARED * len(DispatchAction)
    assert DcsimEnv(tiny(), action_layout="shared").action_space.n == N_SHARED
    for env in (plain, battery, off, shared):
        env.close()


def test_dispatch_steps_come_at_every_market_round():
    sc = with_battery()
    env = DcsimEnv(sc, action_layout="shared")
    infos = run_env(env, 5, lambda info, rng: shared_action(DispatchAction.HOLD))
    _assert_dispatch_before_each_round(infos, sc)
    assert len(env.last_result.dispatch) == sum(i["decision"] == "dispatch" for i in infos)
    env.close()


@pytest.mark.parametrize("dispatch", [DispatchAction.DISCHARGE_50, DispatchAction.CHARGE_100])
def test_fixed_dispatch_through_the_env_is_the_plain_run(dispatch):
    """The same constant decisions through the env and as a plain policy (dispatching too): the same run."""
    sc = with_battery()
    env = DcsimEnv(sc, action_layout="shared")
    run_env(env, sc.seed, lambda info, rng: shared_action(dispatch))
    got = env.last_result
    rounds = len(got.dispatch)
    command = command_of(dispatch, _limits(sc))
    plain = run_scenario(sc, policy=_Replay([command] * rounds)).result
    _assert_same_run(got, plain)
    env.close()


def test_random_dispatch_through_the_env_is_the_plain_run_replaying_it():
    """Random dispatch actions through the env, then a plain policy replaying the commands they stand for."""
    sc = with_battery()
    env = DcsimEnv(sc)
    n = sc.cluster.gpus
    fixed = np.array([int(BidAction.FULL)] * n + [int(IdleAction.SLEEP)] * n + [int(Admission.RUN)] * 8 + [0])
    chosen = []

    def act(info, rng):
        a = fixed.copy()
        if info["decision"] == "dispatch":
            a[-1] = int(rng.integers(len(DispatchAction)))
            chosen.append(DispatchAction(int(a[-1])))
        return a

    run_env(env, 9, act)
    got = env.last_result
    assert len(set(chosen)) > 3  # the episode exercises several commands
    limits = _limits(sc)
    requested = [command_of(a, limits) for a in chosen]
    assert got.dispatch["command"].tolist() == [c.command.name for c in requested]
    assert got.dispatch["requested_w"].tolist() == [c.rate_w for c in requested]
    plain = run_scenario(sc.model_copy(update={"seed": 9}), policy=_Replay(requested)).result
    _assert_same_run(got, plain)
    env.close()


def test_facility_observation_reads_the_battery():
    sc = with_battery()
    env = DcsimEnv(sc, action_layout="shared")
    obs, info = env.reset(seed=2)
    names = env.observation_names
    col = {f: names.index(f"facility.{f}") for f in FACILITY_FEATURES}
    assert info["decision"] == "dispatch" and obs[col["decision_dispatch"]] == 1.0
    rows = []
    while True:
        if info["decision"] == "dispatch":
            rows.append(obs[col["soc_in_bounds"]])
        else:
            assert obs[col["decision_dispatch"]] == 0.0
        obs, _, done, _, info = env.step(shared_action(DispatchAction.CHARGE_100 if len(rows) < 4
                                                       else DispatchAction.DISCHARGE_100))
        if done:
            break
    table = env.last_result.dispatch
    capacity_j = BATTERY["capacity_wh"] * 3600.0
    lo, hi = 0.1 * capacity_j, capacity_j
    expected = (table["soc_j"].to_numpy() - lo) / (hi - lo)  # the books' state of charge at each decision
    assert np.allclose(rows, expected, rtol=1e-5, atol=1e-6)
    assert rows[0] == pytest.approx((0.5 - 0.1) / 0.9, rel=1e-6)  # initial_soc 0.5 between 0.1 and 1
    full_w = sc.cluster.gpus * 700.0
    env.reset(seed=2)
    first = env.episodes.step.decision.facility
    assert first.max_charge_w == BATTERY["max_charge_w"]
    o, _ = env.reset(seed=2)
    assert o[col["max_charge_frac"]] == pytest.approx(1000.0 / full_w, rel=1e-6)
    assert o[col["max_discharge_frac"]] == pytest.approx(800.0 / full_w, rel=1e-6)
    assert o[col["export_price_per_100usd_mwh"]] == pytest.approx(0.35, rel=1e-6)
    env.close()


def test_observation_built_in_one_buffer_is_the_block_functions_with_a_battery():
    env = DcsimEnv(with_battery())
    env.action_space.seed(2)
    env.reset(seed=4)
    done, dispatch_steps = False, 0
    while not done:
        step = env.episodes.step
        dispatch_steps += step.decision.kind.value == "dispatch"
        assert env._observe(step).tobytes() == env._observe_by_blocks(step).tobytes()
        _, _, done, _, _ = env.step(env.action_space.sample())
    env.close()
    assert dispatch_steps > 0


def test_without_the_facility_agent_the_battery_keeps_its_fixed_rule():
    sc = with_battery()
    env = DcsimEnv(sc, action_layout="shared", facility_agent=False)
    infos = run_env(env, sc.seed, lambda info, rng: 6 * int(BidAction.FULL) + 2 * int(IdleAction.SLEEP))
    assert "dispatch" not in {i["decision"] for i in infos}
    plain = run_scenario(sc, policy=_Constant()).result  # does not dispatch: the fixed rule
    _assert_same_run(env.last_result, plain)
    assert env.last_result.dispatch.empty
    env.close()


def test_rewards_with_a_battery_sum_to_the_runs_reward():
    env = DcsimEnv(with_battery())
    env.action_space.seed(0)
    env.reset(seed=4)
    total, done = 0.0, False
    while not done:
        _, r, done, _, _ = env.step(env.action_space.sample())
        total += r
    assert total == pytest.approx(episode_reward(episode_totals(env.last_result), env.scenario.reward),
                                  rel=1e-9, abs=1e-9)
    env.close()


def test_sb3_expected_space_matches_the_env_with_a_battery():
    from dcsim.envs.sb3 import expected_action_space

    for layout in ("per_agent", "shared"):
        env = DcsimEnv(with_battery(), action_layout=layout)
        got = [int(v) for v in np.atleast_1d(getattr(env.action_space, "nvec", getattr(env.action_space, "n", -1)))]
        assert got == expected_action_space(layout, 4, 8, facility=True)
        assert got != expected_action_space(layout, 4, 8)
        env.close()


def test_sb3_action_set_check_accepts_a_battery_model_and_refuses_it_without_one(tmp_path):
    from dcsim.config import scenario_to_dict
    from dcsim.envs.sb3 import ALGOS, check_action_set

    for algo, layout in ALGOS.items():
        battery_env, plain_env = DcsimEnv(with_battery(), action_layout=layout), DcsimEnv(tiny(), action_layout=layout)
        meta = {"algo": algo, "action_layout": layout, "scenario": scenario_to_dict(with_battery())}
        check_action_set(meta, battery_env.action_space, tmp_path / "m.yaml")  # a model trained with the battery
        with pytest.raises(DcsimError, match="action space has sizes"):
            check_action_set(meta, plain_env.action_space, tmp_path / "m.yaml")
        plain_meta = {"algo": algo, "action_layout": layout, "scenario": scenario_to_dict(tiny())}
        check_action_set(plain_meta, plain_env.action_space, tmp_path / "m.yaml")
        with pytest.raises(DcsimError, match="action space has sizes"):
            check_action_set(plain_meta, battery_env.action_space, tmp_path / "m.yaml")
        battery_env.close()
        plain_env.close()


# ------------------------------------------------------------------------------------------------ PettingZoo
def test_parallel_api_test_passes_with_a_battery():
    from pettingzoo.test import parallel_api_test

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(DcsimParallelEnv(with_battery()), num_cycles=5000)
    assert not [w for w in caught if "agent" in str(w.message).lower()]


def test_parallel_seed_test_passes_with_a_battery():
    from pettingzoo.test import parallel_seed_test

    parallel_seed_test(lambda: DcsimParallelEnv(with_battery()), num_cycles=300)


def test_parallel_facility_agent_decides_at_rounds_and_gets_the_team_reward():
    sc = with_battery()
    env = DcsimParallelEnv(sc)
    assert "facility" in env.possible_agents and "facility" not in DcsimParallelEnv(tiny()).possible_agents
    assert env.action_space("facility").n == len(DispatchAction)
    obs, infos = env.reset(seed=3)
    rng = np.random.default_rng(1)
    facility_total, gpu_total, dispatch_times, trail = 0.0, 0.0, [], [infos["facility"]]
    while env.agents:
        deciding = [a for a in env.agents if infos[a]["deciding"]]
        if infos["facility"]["deciding"]:
            assert deciding == ["facility"] and infos["facility"]["decision"] == "dispatch"
            dispatch_times.append(infos["facility"]["time_s"])
        actions = {a: env.action_space(a).sample() for a in deciding}
        if "facility" in actions:
            actions["facility"] = int(rng.integers(len(DispatchAction)))
        obs, rewards, term, trunc, infos = env.step(actions)
        step_gpu = np.array([rewards[f"gpu_{g}"] for g in range(4)])
        assert rewards["facility"] == pytest.approx(step_gpu.mean(), rel=1e-12, abs=1e-15)
        facility_total += rewards["facility"]
        gpu_total += step_gpu.sum()
        trail.append({**infos["facility"], "deciders": sum(infos[a]["deciding"] for a in env.gpu_agents)})
    trail[0]["deciders"] = 1
    _assert_dispatch_before_each_round(trail, sc)
    assert len(dispatch_times) == len(env.last_result.dispatch)
    expected = episode_reward(episode_totals(env.last_result), sc.reward)
    assert gpu_total == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert facility_total == pytest.approx(expected / 4, rel=1e-9, abs=1e-9)
    env.close()


def test_parallel_missing_facility_action_is_a_clear_error():
    env = DcsimParallelEnv(with_battery())
    obs, infos = env.reset(seed=0)
    assert infos["facility"]["deciding"]  # t = 0: the first round's dispatch comes first
    with pytest.raises(DcsimError, match="'facility'"):
        env.step({})
    env.close()


# ------------------------------------------------------------------------------------------------ helpers
def _assert_dispatch_before_each_round(infos, sc):
    """A dispatch step opens every market round: at t = 0 and on every round interval, each directly followed (same
    instant) by the bids of all GPUs; every all-GPU bid step of the episode is such a round."""
    n = sc.cluster.gpus
    kinds = [i["decision"] for i in infos]
    at = [k for k, kind in enumerate(kinds) if kind == "dispatch"]
    assert at and infos[at[0]]["time_s"] == 0
    for k in at:
        after = infos[k + 1]
        assert after["decision"] == "bid" and after["deciders"] == n and after["time_s"] == infos[k]["time_s"]
    rounds = [k for k, i in enumerate(infos) if i["decision"] == "bid" and i["deciders"] == n]
    assert rounds == [k + 1 for k in at]
    times = {infos[k]["time_s"] for k in at}
    interval = sc.market.interval_s
    assert {k * interval for k in range(int(np.ceil(sc.horizon_s / interval)))} <= times  # every scheduled round


def _limits(sc):
    from dcsim.policy import FacilityObservation

    obs = FacilityObservation.__new__(FacilityObservation)
    object.__setattr__(obs, "max_charge_w", float(sc.supply.battery.max_charge_w))
    object.__setattr__(obs, "max_discharge_w", float(sc.supply.battery.max_discharge_w))
    return obs


def _assert_same_run(got, plain):
    assert got.jobs.equals(plain.jobs)
    assert got.energy == plain.energy
    assert got.tokens == plain.tokens
    assert got.dispatch.equals(plain.dispatch)
