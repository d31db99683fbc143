"""The RL envs (dcsim.envs): library conformance checks, seeding, semi-Markov rewards, and that pausing the
simulation at its decisions leaves the run exactly as a plain one."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import scenario
from dcsim.config import parse_scenario
from dcsim.errors import DcsimError
from dcsim.learning import BidAction, episode_reward, episode_totals
from dcsim.policy import Admission, IdleAction, Policy
from dcsim.runner import run_scenario

gym = pytest.importorskip("gymnasium")
pytest.importorskip("pettingzoo")

from dcsim.envs import GYM_ID, DcsimEnv, DcsimParallelEnv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny(**changes):
    """Four H100s for two hours of a June afternoon: solar, deadlines, half the jobs deferrable."""
    base = {
        "start": "2023-06-21T15:00:00Z", "horizon_s": 7200, "seed": 3,
        "cluster": {"gpus": 4, "gpu_model": "H100"},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 0.003},
                     "gpus_per_job": {"values": [1, 2], "weights": [0.7, 0.3]},
                     "duration_s": {"distribution": "lognormal", "mean": 900, "sigma": 0.5},
                     "deadline_slack": 3.0, "deferrable_fraction": 0.5, "value_tokens_per_gpu_s": 0.001},
        "supply": {"solar": {"capacity_w": 3000, "latitude": 37.36, "longitude": -121.93}},
        "market": {"interval_s": 600, "initial_tokens": 5.0, "scarcity_kappa": 2.0},
        "reward": {"slo_per_miss": 1.0, "drop_per_job": 2.0, "team_fraction": 0.25},
    }
    for key, value in changes.items():
        base[key] = value
    return parse_scenario(scenario(**base).model_dump(mode="json"))


def play(env, seed, action_seed=0, fixed=None):
    """One episode with random actions from a seeded action space (or the ``fixed`` action every step)."""
    env.action_space.seed(action_seed)
    obs, info = env.reset(seed=seed)
    trail = [(obs.copy(), 0.0, info["dt_s"], info["decision"])]
    while True:
        action = env.action_space.sample() if fixed is None else fixed
        obs, reward, terminated, truncated, info = env.step(action)
        assert not truncated
        trail.append((obs.copy(), reward, info["dt_s"], info["decision"]))
        if terminated:
            return trail


# ------------------------------------------------------------------------------------------------ Gymnasium
@pytest.mark.parametrize("layout", ["per_agent", "shared"])
def test_check_env_passes(layout):
    from gymnasium.utils.env_checker import check_env

    env = DcsimEnv(tiny(), action_layout=layout)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*render.*")
        check_env(env, skip_render_check=True)
    env.close()


def test_registered_with_gymnasium():
    env = gym.make(GYM_ID, scenario=tiny())
    obs, info = env.reset(seed=5)
    assert env.observation_space.contains(obs) and info["decision"] == "bid"
    env.close()


def test_reset_seed_gives_identical_episodes():
    a, b = DcsimEnv(tiny()), DcsimEnv(tiny())
    first, again = play(a, seed=11), play(b, seed=11)
    assert len(first) == len(again)
    for (o1, r1, dt1, k1), (o2, r2, dt2, k2) in zip(first, again):
        assert np.array_equal(o1, o2) and r1 == r2 and dt1 == dt2 and k1 == k2
    other = play(a, seed=12)
    assert len(other) != len(first) or any(not np.array_equal(x[0], y[0]) for x, y in zip(first, other))
    # reset() without a seed continues with the next seed: the episode after seed 11 is seed 12's
    a.reset(seed=11)
    a.action_space.seed(0)
    obs, _ = a.reset()
    assert np.array_equal(obs, other[0][0])


def test_rewards_sum_to_the_runs_reward_and_dt_to_the_horizon():
    env = DcsimEnv(tiny())
    trail = play(env, seed=2)
    sc = env.scenario
    total = sum(r for _, r, _, _ in trail)
    expected = episode_reward(episode_totals(env.last_result), sc.reward)  # from the run's tables
    assert total == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert sum(dt for _, _, dt, _ in trail) == pytest.approx(sc.horizon_s, rel=1e-12)
    assert all(dt >= 0 for _, _, dt, _ in trail)
    kinds = {k for _, _, _, k in trail}
    assert {"bid", "admit", "on_idle"} <= kinds  # the scenario exercises every decision


class _Constant(Policy):
    """Full power at any price, admit every job, sleep every idle GPU: the env's constant action as a policy."""

    name = "constant"

    def bid(self, obs):
        from dcsim.learning import bids_from_actions
        return bids_from_actions(np.full(len(obs), int(BidAction.FULL)), obs)

    def admit(self, obs):
        return np.full(len(obs), Admission.RUN, dtype=np.int8)

    def on_idle(self, obs):
        return np.full(len(obs), IdleAction.SLEEP, dtype=np.int8)


@pytest.mark.parametrize("slots", [8, 1])
def test_pausing_leaves_the_run_as_a_plain_one(slots):
    """The same decisions through the env (any number of admission slots) and as a plain policy: the same run."""
    sc = tiny()
    env = DcsimEnv(sc, admission_slots=slots, action_layout="shared")
    a = 6 * int(BidAction.FULL) + 2 * int(IdleAction.SLEEP) + int(Admission.RUN)
    play(env, seed=sc.seed, fixed=a)
    plain = run_scenario(sc, policy=_Constant()).result
    got = env.last_result
    assert got.jobs.equals(plain.jobs)
    assert got.energy == plain.energy
    assert got.tokens == plain.tokens


def test_actions_change_the_run():
    """PAUSE everything and DEFER every job vs FULL and RUN: fewer jobs complete (the actions reach the engine)."""
    env = DcsimEnv(tiny(), action_layout="shared")
    play(env, seed=4, fixed=6 * int(BidAction.FULL) + int(Admission.RUN))
    busy = (env.last_result.jobs["status"].astype(str) == "completed").sum()
    play(env, seed=4, fixed=6 * int(BidAction.PAUSE) + int(Admission.DEFER))
    stalled = (env.last_result.jobs["status"].astype(str) == "completed").sum()
    assert busy > 0 and stalled < busy


@pytest.mark.parametrize("slots", [8, 1])
def test_observation_built_in_one_buffer_is_the_block_functions_bit_for_bit(slots):
    """The env's one-buffer observation equals the concatenated blocks of dcsim.envs.features at every step
    (byte for byte, so -0.0 and 0.0 are told apart too), admission split over several steps included."""
    env = DcsimEnv(tiny(), admission_slots=slots)
    env.action_space.seed(5)
    obs, _ = env.reset(seed=11)
    kinds, done = set(), False
    while not done:
        step = env.episodes.step
        kinds.add(step.decision.kind.value)
        assert env._observe(step).tobytes() == env._observe_by_blocks(step).tobytes()
        obs, _, done, _, _ = env.step(env.action_space.sample())
    env.close()
    assert kinds == {"bid", "admit", "on_idle"}  # every block was exercised


def test_clip_in_place_is_the_block_clip():
    from dcsim.envs.features import _clip, clip_in_place

    x = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, -0.0, 0.5, -11.0, 3e38], dtype=np.float64)
    assert clip_in_place(x.astype(np.float32)).tobytes() == _clip(x).tobytes()
    assert _clip(x).tolist() == [0.0, 10.0, -10.0, 10.0, -10.0, 0.0, 0.5, -10.0, 10.0]


def test_observation_names_cover_the_space_and_forecast_reads_the_supply():
    env = DcsimEnv(tiny(), forecast_hours=(1.0,))
    obs, _ = env.reset(seed=0)
    names = env.observation_names
    assert len(names) == env.observation_space.shape[0]
    supply = env.episodes.supply.renewable_w
    full_w = 4 * 700.0  # four H100s at full power
    assert obs[names.index("forecast_1h")] == pytest.approx(supply.value_at(3600.0) / full_w, rel=1e-6)
    assert obs[names.index("renewable_frac")] == pytest.approx(supply.value_at(0.0) / full_w, rel=1e-6)
    assert obs[names.index("decision_bid")] == 1.0 and obs[names.index("decision_admit")] == 0.0
    env.close()


def test_bad_input_is_a_clear_error():
    with pytest.raises(DcsimError, match="action_layout='grid'.*allowed: per_agent, shared"):
        DcsimEnv(tiny(), action_layout="grid")
    with pytest.raises(DcsimError, match="admission_slots=0"):
        DcsimEnv(tiny(), admission_slots=0)
    env = DcsimEnv(tiny())
    env.reset(seed=0)
    with pytest.raises(DcsimError, match=r"action of shape \(3,\)"):
        env.step(np.zeros(3, dtype=np.int64))
    bad = np.zeros(env.action_space.shape, dtype=np.int64)
    bad[0] = 9
    with pytest.raises(DcsimError, match="bid action .*BidAction"):
        env.step(bad)
    env.close()
    with pytest.raises(DcsimError, match="call reset"):
        DcsimEnv(tiny()).step(np.zeros(1))


def test_abandoned_episodes_end_their_threads():
    import threading

    def workers():  # other tests' libraries may start or end threads of their own meanwhile
        return sum(t.name == "dcsim-env-simulation" for t in threading.enumerate())

    env = DcsimEnv(tiny())
    before = workers()
    for seed in range(3):
        env.reset(seed=seed)
        env.step(env.action_space.sample())
        assert workers() == before + 1  # one paused run; the abandoned one has ended
    env.close()
    assert workers() == before


def test_abandoning_at_any_step_never_hangs():
    """Abandon an episode after k steps, for every k: several decisions at one instant (a round's bids, then
    admissions) must not leave the worker waiting for an answer that never comes."""
    import threading

    env = DcsimEnv(tiny(), action_layout="shared")
    n_steps = len(play(env, seed=1, fixed=1)) - 1  # 1: defer every job, so held jobs are re-offered
    failures = []

    def abandon_everywhere():
        try:
            for k in range(n_steps):
                env.reset(seed=1)
                for _ in range(k):
                    env.step(1)
            env.close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    worker = threading.Thread(target=abandon_everywhere, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "abandoning an episode hung"
    assert not failures


# ------------------------------------------------------------------------------------------------ PettingZoo
def test_parallel_api_test_passes():
    from pettingzoo.test import parallel_api_test

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parallel_api_test(DcsimParallelEnv(tiny()), num_cycles=5000)
    assert not [w for w in caught if "agent" in str(w.message).lower()]


def test_parallel_seed_test_passes():
    from pettingzoo.test import parallel_seed_test

    parallel_seed_test(lambda: DcsimParallelEnv(tiny()), num_cycles=300)


@pytest.mark.parametrize("team", [0.0, 0.25, 1.0])
def test_parallel_rewards_mix_by_team_fraction_and_sum_to_the_runs_reward(team):
    sc = tiny(reward={"slo_per_miss": 1.0, "drop_per_job": 2.0, "team_fraction": team})
    env = DcsimParallelEnv(sc)
    obs, infos = env.reset(seed=6)
    rng = np.random.default_rng(0)
    per_agent = np.zeros(4)
    admission = 0.0
    while env.agents:
        deciding = [a for a in env.agents if infos[a]["deciding"]]
        assert deciding  # every step is somebody's decision
        actions = {a: env.action_space(a).sample() for a in deciding}  # the others are left out
        obs, rewards, term, trunc, infos = env.step(actions)
        step_gpu = np.array([rewards[f"gpu_{g}"] for g in range(4)])
        per_agent += step_gpu
        admission += rewards["admission"]
        if team == 1.0:  # all team: every GPU agent gets the same reward
            assert np.allclose(step_gpu, step_gpu.mean(), rtol=1e-9, atol=1e-12)
    expected = episode_reward(episode_totals(env.last_result), sc.reward)
    assert per_agent.sum() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert admission == pytest.approx(expected / 4, rel=1e-9, abs=1e-9)
    if team == 0.0:
        assert np.ptp(per_agent) > 0  # own rewards differ between GPUs
    assert np.allclose(per_agent, env.last_result.agent_returns, rtol=1e-9, atol=1e-9)


def test_parallel_missing_decider_is_a_clear_error():
    env = DcsimParallelEnv(tiny())
    env.reset(seed=0)
    with pytest.raises(DcsimError, match="no entry for 'gpu_0', which decides"):
        env.step({})
    env.close()


# ------------------------------------------------------------------------------------------------ the extra
def test_core_imports_without_the_rl_extra_and_says_what_to_install():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('gymnasium', 'pettingzoo', 'stable_baselines3', 'torch'):\n"
        "            raise ImportError(f'blocked {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import dcsim, dcsim.cli, dcsim.runner, dcsim.envs\n"
        "from dcsim.errors import DcsimError\n"
        "try:\n"
        "    dcsim.envs.DcsimEnv\n"
        "except DcsimError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "install dcsim[rl]" in proc.stdout and "gymnasium" in proc.stdout


def test_readme_env_example_runs():
    """The README's five lines of Python, as written, from the repository root."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "dcsim/Cluster-v0" in b]
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) == 5
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    reward, dt_s, decision = proc.stdout.split()
    assert float(dt_s) >= 0 and decision in ("bid", "admit", "on_idle")
