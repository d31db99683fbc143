"""The facility agent's cooling setpoint in the RL envs (``facility.cooling.setpoint_control``): conformance checks,
setpoint actions reaching the plant as a plain policy's commands do, the spaces, and SB3's action-set check."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from dcsim.errors import DcsimError
from dcsim.learning import BidAction, episode_reward, episode_totals
from dcsim.policy import Admission, CoolingCommand, IdleAction
from dcsim.runner import run_scenario

gym = pytest.importorskip("gymnasium")
pytest.importorskip("pettingzoo")

from dcsim.envs import DcsimEnv, DcsimParallelEnv  # noqa: E402
from dcsim.envs.facility import COOLING_FEATURES, FACILITY_FEATURES, DispatchAction  # noqa: E402
from test_envs import _Constant, tiny  # noqa: E402
from test_envs_facility import BATTERY, SOLAR  # noqa: E402

LEVELS = [18.0, 21.0, 24.0, 27.0, 30.0]
COOLING = {"weather": {"dry_bulb_c": 26.0}, "economiser": "air", "time_constant_s": 300.0,
           "setpoint_control": {"levels_c": LEVELS, "max_c": 32}}
N_SHARED = len(BidAction) * len(IdleAction) * len(Admission)
REST = 6 * int(BidAction.FULL) + 2 * int(IdleAction.SLEEP) + int(Admission.RUN)


def with_cooling(battery: bool = False, **changes):
    """:func:`tiny` with a cooling plant whose setpoint the facility agent sets (and a dispatched battery)."""
    if battery:
        changes["supply"] = {"solar": SOLAR, "battery": BATTERY,
                             "grid": {"carbon_g_per_kwh": {"constant": 400}, "price_usd_per_mwh": {"constant": 60}}}
    return tiny(facility={"cooling": COOLING} | ({"battery": {"min_soc": 0.1, "grid_charging": True}} if battery
                                                 else {}), **changes)


class _Setpoint(_Constant):
    """:class:`_Constant` that also sets the cooling setpoint, from a list of levels, one per round in order."""

    name = "setpoint"

    def __init__(self, setpoints):
        super().__init__()
        self.setpoints = list(setpoints)
        self.asked = 0

    def cooling_setpoint(self, obs):
        value = self.setpoints[self.asked]
        self.asked += 1
        return CoolingCommand(value)


def run_env(env, seed, action_of_step):
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    infos = [info]
    observations = [obs]
    while True:
        obs, reward, terminated, truncated, info = env.step(action_of_step(info, rng))
        infos.append(info)
        observations.append(obs)
        if terminated:
            return infos, observations


def _assert_same_run(got, plain):
    assert got.jobs.equals(plain.jobs)
    assert got.energy == plain.energy
    assert got.tokens == plain.tokens
    assert got.facility == plain.facility
    assert got.timeseries.equals(plain.timeseries)


# ------------------------------------------------------------------------------------------------ Gymnasium
@pytest.mark.parametrize("battery", [False, True])
@pytest.mark.parametrize("layout", ["per_agent", "shared"])
def test_check_env_passes_with_setpoint_control(layout, battery):
    from gymnasium.utils.env_checker import check_env

    env = DcsimEnv(with_cooling(battery), action_layout=layout)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render.*")
        check_env(env, skip_render_check=True)
    env.close()


def test_spaces_gain_a_setpoint_level_only_with_setpoint_control():
    plain, cooled = DcsimEnv(tiny()), DcsimEnv(with_cooling())
    both = DcsimEnv(with_cooling(battery=True))
    off = DcsimEnv(with_cooling(), facility_agent=False)
    assert list(cooled.action_space.nvec) == list(plain.action_space.nvec) + [len(LEVELS)]
    assert list(both.action_space.nvec) == list(plain.action_space.nvec) + [len(DispatchAction), len(LEVELS)]
    assert cooled.observation_names == plain.observation_names + [f"cooling.{f}" for f in COOLING_FEATURES]
    assert both.observation_names == (plain.observation_names + [f"facility.{f}" for f in FACILITY_FEATURES]
                                      + [f"cooling.{f}" for f in COOLING_FEATURES])
    assert off.observation_names == plain.observation_names and off.action_space == plain.action_space
    assert DcsimEnv(with_cooling(), action_layout="shared").action_space.n == N_SHARED * len(LEVELS)
    assert DcsimEnv(with_cooling(True), action_layout="shared").action_space.n == N_SHARED * 7 * len(LEVELS)
    for env in (plain, cooled, both, off):
        env.close()


def test_setpoint_steps_open_every_round_and_come_before_the_dispatch():
    sc = with_cooling(battery=True)
    env = DcsimEnv(sc, action_layout="shared")
    infos, _ = run_env(env, 5, lambda info, rng: REST)
    kinds = [i["decision"] for i in infos]
    at = [k for k, kind in enumerate(kinds) if kind == "cooling_setpoint"]
    assert at and infos[at[0]]["time_s"] == 0
    for k in at:  # same instant: the setpoint, then the battery, then the bids
        assert kinds[k + 1] == "dispatch" and infos[k + 1]["time_s"] == infos[k]["time_s"]
        assert infos[k + 1]["dt_s"] == 0.0
    assert len(at) == kinds.count("dispatch") == env.last_result.facility["setpoint"]["decisions"]
    assert {k * sc.market.interval_s for k in range(int(np.ceil(sc.horizon_s / sc.market.interval_s)))} <= {
        infos[k]["time_s"] for k in at}
    env.close()


@pytest.mark.parametrize("layout", ["per_agent", "shared"])
def test_random_setpoints_through_the_env_are_the_plain_run_replaying_them(layout):
    sc = with_cooling(battery=True)
    env = DcsimEnv(sc, action_layout=layout)
    n = sc.cluster.gpus
    chosen = []

    def act(info, rng):
        level = int(rng.integers(len(LEVELS)))
        if info["decision"] == "cooling_setpoint":
            chosen.append(LEVELS[level])
        if layout == "shared":
            return N_SHARED * 7 * level + N_SHARED * int(DispatchAction.HOLD) + REST
        return np.array([int(BidAction.FULL)] * n + [int(IdleAction.SLEEP)] * n + [int(Admission.RUN)] * 8
                        + [int(DispatchAction.HOLD), level])

    run_env(env, 9, act)
    assert len(set(chosen)) >= 3
    got = env.last_result
    assert got.facility["setpoint"]["decisions"] == len(chosen)

    class Replay(_Setpoint):
        def dispatch(self, obs):
            from dcsim.policy import BatteryCommand, Dispatch
            return BatteryCommand(Dispatch.HOLD)

    plain = run_scenario(sc.model_copy(update={"seed": 9}), policy=Replay(chosen)).result
    _assert_same_run(got, plain)
    env.close()


def test_cooling_observation_reads_the_plant():
    sc = with_cooling()
    env = DcsimEnv(sc, action_layout="shared")
    names = env.observation_names
    col = {f: names.index(f"cooling.{f}") for f in COOLING_FEATURES}
    high = LEVELS.index(30.0)
    infos, observations = run_env(env, 2, lambda info, rng: N_SHARED * high + REST)
    first, info0 = observations[0], infos[0]
    assert info0["decision"] == "cooling_setpoint" and first[col["decision_setpoint"]] == 1.0
    assert first[col["outdoor_dry_bulb_10c"]] == pytest.approx(2.6)
    assert first[col["supply_air_10c"]] == pytest.approx(2.4)  # the configured setpoint until the first decision
    assert first[col["setpoint_in_range"]] == pytest.approx((24 - 18) / (32 - 18), rel=1e-6)
    later = [o for o, i in zip(observations[1:], infos[1:]) if i["decision"] == "cooling_setpoint"]
    assert later and all(o[col["supply_air_10c"]] == pytest.approx(3.0) for o in later)
    assert all(o[col["inlet_margin_10k"]] == pytest.approx(-0.3) for o in later)  # 3 K above the 27 °C limit
    others = [o for o, i in zip(observations, infos) if i["decision"] not in ("cooling_setpoint", None)]
    assert all(o[col["decision_setpoint"]] == 0.0 for o in others)
    sp = env.last_result.facility["setpoint"]
    assert sp["inlet_violation_fraction"] == pytest.approx(1.0)
    env.close()


def test_a_setpoint_action_out_of_range_is_a_clear_error():
    env = DcsimEnv(with_cooling())
    env.reset(seed=0)  # t = 0: the first round's setpoint comes first
    with pytest.raises(DcsimError, match=r"setpoint level values in \['0=18 °C'"):
        env.episodes.act(np.array([len(LEVELS)]))  # one past the last level
    env.close()


def test_without_the_facility_agent_the_setpoint_stays():
    sc = with_cooling()
    env = DcsimEnv(sc, action_layout="shared", facility_agent=False)
    infos, _ = run_env(env, sc.seed, lambda info, rng: REST)
    assert "cooling_setpoint" not in {i["decision"] for i in infos}
    plain = run_scenario(sc, policy=_Constant()).result
    _assert_same_run(env.last_result, plain)
    assert env.last_result.facility["setpoint"]["control"] == "fixed"
    env.close()


def test_rewards_with_setpoint_control_sum_to_the_runs_reward():
    env = DcsimEnv(with_cooling(battery=True))
    env.action_space.seed(0)
    env.reset(seed=4)
    total, done = 0.0, False
    while not done:
        _, r, done, _, _ = env.step(env.action_space.sample())
        total += r
    assert total == pytest.approx(episode_reward(episode_totals(env.last_result), env.scenario.reward),
                                  rel=1e-9, abs=1e-9)
    env.close()


# ------------------------------------------------------------------------------------------------ PettingZoo
@pytest.mark.parametrize("battery", [False, True])
def test_parallel_api_test_passes_with_setpoint_control(battery):
    from pettingzoo.test import parallel_api_test

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(DcsimParallelEnv(with_cooling(battery)), num_cycles=2000)
    assert not [w for w in caught if "agent" in str(w.message).lower()]


def test_parallel_seed_test_passes_with_setpoint_control():
    from pettingzoo.test import parallel_seed_test

    parallel_seed_test(lambda: DcsimParallelEnv(with_cooling(battery=True)), num_cycles=300)


def test_parallel_facility_agent_sets_the_setpoint():
    cooled, both = DcsimParallelEnv(with_cooling()), DcsimParallelEnv(with_cooling(battery=True))
    assert list(cooled.action_space("facility").nvec) == [len(LEVELS)]
    assert list(both.action_space("facility").nvec) == [len(DispatchAction), len(LEVELS)]
    g = len(cooled.global_names)
    assert cooled.observation_space("facility").shape == (g + len(COOLING_FEATURES),)
    assert both.observation_space("facility").shape == (g + len(FACILITY_FEATURES) + len(COOLING_FEATURES),)
    env = both
    obs, infos = env.reset(seed=3)
    chosen, rng = [], np.random.default_rng(1)
    while env.agents:
        deciding = [a for a in env.agents if infos[a]["deciding"]]
        actions = {a: env.action_space(a).sample() for a in deciding}
        if "facility" in actions:
            assert deciding == ["facility"]
            level = int(rng.integers(len(LEVELS)))
            actions["facility"] = np.array([int(DispatchAction.HOLD), level])
            if infos["facility"]["decision"] == "cooling_setpoint":
                chosen.append(LEVELS[level])
        obs, rewards, term, trunc, infos = env.step(actions)
        assert rewards["facility"] == pytest.approx(np.mean([rewards[a] for a in env.gpu_agents]) if env.agents
                                                    else rewards["facility"])
    ts = env.last_result.timeseries
    rounds = ts[ts["event"].str.startswith("round")]
    assert rounds["supply_air_c"].tolist() == chosen[:len(rounds)]
    cooled.close()
    env.close()


# ------------------------------------------------------------------------------------------------ SB3 metadata
def test_sb3_action_set_records_the_facility_actions():
    from dcsim.envs.sb3 import action_set

    assert action_set()["DispatchAction"] == [m.name for m in DispatchAction]


def test_sb3_expected_space_and_check_with_setpoint_levels(tmp_path):
    from dcsim.config import scenario_to_dict
    from dcsim.envs.sb3 import ALGOS, action_set, check_action_set, expected_action_space

    for algo, layout in ALGOS.items():
        for battery in (False, True):
            env = DcsimEnv(with_cooling(battery), action_layout=layout)
            got = [int(v) for v in np.atleast_1d(getattr(env.action_space, "nvec", getattr(env.action_space, "n", -1)))]
            assert got == expected_action_space(layout, 4, 8, facility=battery, setpoint_levels=len(LEVELS))
            meta = {"algo": algo, "action_layout": layout, "scenario": scenario_to_dict(with_cooling(battery)),
                    "action_set": action_set()}
            check_action_set(meta, env.action_space, tmp_path / "m.yaml")
            plain = DcsimEnv(tiny(), action_layout=layout)
            with pytest.raises(DcsimError, match="setpoint levels: 5"):
                check_action_set(meta, plain.action_space, tmp_path / "m.yaml")
            env.close()
            plain.close()


def test_sb3_checkpoint_of_another_dispatch_action_set_is_refused(tmp_path):
    from dcsim.config import scenario_to_dict
    from dcsim.envs.sb3 import action_set, check_action_set

    env = DcsimEnv(with_cooling(battery=True))
    scenario = scenario_to_dict(with_cooling(battery=True))
    other = action_set() | {"DispatchAction": ["HOLD", "CHARGE", "DISCHARGE"]}
    meta = {"algo": "sb3:PPO", "action_layout": "per_agent", "scenario": scenario, "action_set": other}
    with pytest.raises(DcsimError, match="field 'action_set'.*DispatchAction"):
        check_action_set(meta, env.action_space, tmp_path / "m.yaml")
    older = {k: v for k, v in action_set().items() if k != "DispatchAction"}  # recorded before the facility agent
    check_action_set(meta | {"action_set": older}, env.action_space, tmp_path / "m.yaml")
    env.close()


def test_action_set_differs_only_on_a_recorded_enum():
    from dcsim.envs.sb3 import action_set, action_set_differs

    now = action_set()
    assert not action_set_differs(now)
    assert not action_set_differs({k: v for k, v in now.items() if k != "DispatchAction"})
    assert action_set_differs(now | {"DispatchAction": now["DispatchAction"][:3]})
    assert action_set_differs(now | {"SomethingElse": ["A"]}) and action_set_differs(["BidAction"])


@pytest.mark.parametrize("battery", [False, True])
def test_observation_built_in_one_buffer_is_the_block_functions_with_setpoint_control(battery):
    env = DcsimEnv(with_cooling(battery))
    env.action_space.seed(3)
    env.reset(seed=5)
    done, cooling_steps = False, 0
    while not done:
        step = env.episodes.step
        cooling_steps += step.decision.kind.value == "cooling_setpoint"
        assert env._observe(step).tobytes() == env._observe_by_blocks(step).tobytes()
        _, _, done, _, _ = env.step(env.action_space.sample())
    env.close()
    assert cooling_steps > 0
