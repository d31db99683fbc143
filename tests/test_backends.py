"""Backends: which one is chosen, and identical results from the local pool and Ray for the same seeds.

The Ray tests start one small local Ray for the module (2 CPUs, no dashboard) and skip when Ray is not installed
(the ``ray`` extra; CI installs it).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import scenario
from dcsim import backends
from dcsim.backends import LocalBackend, RayBackend, make_backend
from dcsim.compare import compare
from dcsim.errors import DcsimError, PolicyError
from dcsim.policy import Policy
from dcsim.sweep import sweep
from dcsim.train import evaluate

REPO = Path(__file__).resolve().parents[1]
SEEDS = [11, 12, 13]
# Under `pytest -n N --dist loadgroup` the tests that start Ray (in this process or in a CLI subprocess) run on one
# worker in this file's order: the module's Ray starts once, two Rays never share the machine's cores, and the
# no-cluster test runs before the module's Ray is up (it skips if a session is running in its process).
RAY = pytest.mark.xdist_group("ray")


class FailsOnIdle(Policy):
    """Raises a user error the first time a GPU goes idle: a run that fails inside a worker."""

    name = "fails_on_idle"

    def on_idle(self, obs):
        raise PolicyError("fails_on_idle: this policy refuses to decide")


def small():
    return scenario(cluster={"gpus": 2},
                    workload={"arrivals": {"process": "poisson", "rate_per_s": 0.004},
                              "duration_s": {"distribution": "constant", "value": 400},
                              "deadline_slack": 3.0, "deferrable_fraction": 0.5})


# --------------------------------------------------------------------------------------------- choice
def test_the_default_is_ray_when_installed_unless_one_worker_or_dcsim_backend_says_otherwise(monkeypatch):
    monkeypatch.delenv("DCSIM_BACKEND", raising=False)
    monkeypatch.setattr(backends, "have_ray", lambda: True)
    assert isinstance(make_backend(None, None), RayBackend)
    assert isinstance(make_backend(None, 4), RayBackend)
    assert isinstance(make_backend(None, 1), LocalBackend)
    assert isinstance(make_backend(None, 1, "auto"), RayBackend)  # an address means a cluster
    monkeypatch.setenv("DCSIM_BACKEND", "local")
    assert isinstance(make_backend(None, 4), LocalBackend)
    assert isinstance(make_backend("ray", 4), RayBackend)  # a name given wins over the environment
    monkeypatch.setenv("DCSIM_BACKEND", "dask")
    with pytest.raises(DcsimError, match="DCSIM_BACKEND='dask': allowed: local, ray"):
        make_backend(None, 4)
    monkeypatch.delenv("DCSIM_BACKEND")
    monkeypatch.setattr(backends, "have_ray", lambda: False)
    assert isinstance(make_backend(None, 4), LocalBackend)
    with pytest.raises(DcsimError, match=r"Ray is not installed; pip install 'dcsim\[ray\]'"):
        make_backend("ray", 2)


@pytest.mark.parametrize("args, message", [
    (("dask", 2), "--backend 'dask': allowed: local, ray"),
    (("local", 2, "auto"), "--address auto: joins a Ray cluster"),
    (("local", 0), "--jobs 0: expected at least 1"),
])
def test_bad_backend_settings_are_user_errors(args, message):
    with pytest.raises(DcsimError, match=message):
        make_backend(*args)


@RAY
def test_an_address_where_no_cluster_listens_fails_fast_with_a_user_error():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    with pytest.raises(DcsimError, match="--address 127.0.0.1:1: nothing accepts connections there"):
        with make_backend("ray", 2, "127.0.0.1:1"):
            pass
    assert not ray.is_initialized()


def test_local_pool_returns_every_result_at_its_index_and_stops_at_the_first_error():
    got = {}
    with LocalBackend(2) as pool:
        pool.run(abs, [-3, 1, -2, 5], got.__setitem__)
    assert got == {0: 3, 1: 1, 2: 2, 3: 5}
    with pytest.raises(TypeError):
        LocalBackend(2).run(abs, [1, "x", 2], lambda i, r: None)


def test_a_failed_run_in_a_pool_worker_is_a_user_error_naming_policy_and_seed():
    # two workers run two of its seeds at once, so which seed fails first depends on the machine's load
    with pytest.raises(DcsimError, match=r"policy 'test_backends:FailsOnIdle', seed 1[123]: fails_on_idle: this policy"):
        compare(small(), ["always_on", "test_backends:FailsOnIdle"], SEEDS, jobs=2, backend="local")


# --------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_session():
    """A small local Ray whose workers import this checkout (and these tests' policies), shut down afterwards."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join([str(REPO), str(REPO / "tests")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@RAY
def test_compare_on_ray_is_identical_to_the_local_pool(ray_session):
    args = (small(), ["always_on", "race_to_idle", "renewable_follower"], SEEDS)
    local = compare(*args, jobs=2, backend="local")
    on_ray = compare(*args, jobs=2, backend="ray")
    assert on_ray.meta["backend"]["backend"] == "ray" and local.meta["backend"]["backend"] == "local"
    for name in ("runs", "workloads", "summary", "differences"):
        pd.testing.assert_frame_equal(getattr(on_ray, name), getattr(local, name), check_exact=True, obj=name)
    assert ray_session.is_initialized()  # a session the caller started is left running


@RAY
def test_sweep_on_ray_is_identical_to_the_local_pool(ray_session, tmp_path):
    grid = {"market.scarcity_kappa": ["0.5", "3"]}
    local = sweep(small(), grid, ["always_on", "race_to_idle"], SEEDS, tmp_path / "local", jobs=2, backend="local")
    on_ray = sweep(small(), grid, ["always_on", "race_to_idle"], SEEDS, tmp_path / "ray", jobs=2, backend="ray")
    assert len(on_ray.ran) == 12
    pd.testing.assert_frame_equal(on_ray.table, local.table, check_exact=True)
    pd.testing.assert_frame_equal(on_ray.cells, local.cells, check_exact=True)


@RAY
def test_evaluation_on_ray_is_identical_in_this_process(ray_session):
    arms = {"always_on": ("always_on", {}), "follower": ("renewable_follower", {"min_power_fraction": 0.3})}
    serial = evaluate(small(), arms, SEEDS)
    on_ray = evaluate(small(), arms, SEEDS, backend="ray", jobs=2)
    pd.testing.assert_frame_equal(on_ray, serial, check_exact=True)
    assert list(on_ray["seed"]) == SEEDS * 2 and np.isfinite(on_ray["return_per_gpu"]).all()


@RAY
def test_a_failed_run_on_ray_is_a_user_error_with_its_own_message(ray_session):
    with pytest.raises(DcsimError, match=r"^policy 'test_backends:FailsOnIdle', seed 1\d: fails_on_idle") as info:
        compare(small(), ["test_backends:FailsOnIdle"], SEEDS, jobs=2, backend="ray")
    assert "Traceback" not in str(info.value)


@RAY
def test_compare_command_starts_its_own_ray_and_matches_the_local_pool(tmp_path):
    """The CLI path: no Ray running, `--backend ray` starts an embedded one (2 CPUs) and shuts it down."""
    pytest.importorskip("ray")
    import yaml

    from test_cli import TINY, dcsim_cli, ok

    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    common = ["compare", "tiny.yaml", "--policies", "always_on", "race_to_idle", "--seed-list", "1", "2", "--jobs", "2",
              "-q"]
    ok(dcsim_cli(*common, "--backend", "local", "--out", "local", cwd=tmp_path))
    ok(dcsim_cli(*common, "--backend", "ray", "--out", "ray", cwd=tmp_path, timeout=300))
    meta = yaml.safe_load((tmp_path / "ray" / "comparison.yaml").read_text())
    assert meta["backend"] == {"backend": "ray", "address": "embedded local Ray", "workers": 2}
    for name in ("runs.csv", "summary.csv", "differences.csv", "workloads.csv"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
