"""`compare` over the serving baselines: every policy sees the same requests on a seed (common random numbers,
checked by the request hash), and the paired differences follow from the per-seed runs."""
import numpy as np
import pytest

from dcsim.compare import compare, request_hash
from dcsim.config import parse_scenario
from dcsim.runner import run_scenario

from test_serving_model import CONFIGS


@pytest.fixture
def scenario(tmp_path):
    configs = tmp_path / "configs.csv"
    configs.write_text(CONFIGS)
    return parse_scenario({
        "name": "svcmp", "horizon_s": 600, "seed": 4, "cluster": {"gpus": 1},
        "workload": {"llm_serving": {
            "arrivals": {"source": "poisson", "rate_per_s": 3.0, "prompt_tokens": 300, "mean_output_tokens": 30},
            "max_batch": 4, "configurations": str(configs)}},
        "policy": {"name": "policies.serving:FullKV"}})


def test_request_hash_is_the_workload(scenario):
    from policies.serving import DenyOverSlo, FullKV

    a = run_scenario(scenario, FullKV()).result.requests
    b = run_scenario(scenario, DenyOverSlo()).result.requests
    assert request_hash(a) == request_hash(b)
    other = run_scenario(scenario.model_copy(update={"seed": 5}), FullKV()).result.requests
    assert request_hash(other) != request_hash(a)


def test_compare_pairs_the_baselines_on_common_requests(scenario):
    policies = ["policies.serving:FullKV", "policies.serving:QualityFloor", "policies.serving:DenyOverSlo"]
    cmp = compare(scenario, policies, seeds=[0, 1, 2], jobs=1, backend="local")
    per_seed = cmp.workloads.groupby("seed")["jobs_sha256"].nunique()
    assert (per_seed == 1).all()  # every policy saw the same requests on each seed
    assert {"profit_usd", "success_rate", "denial_rate", "mean_quality"} <= set(cmp.headline)
    d = cmp.differences.set_index(["arm", "metric"])
    runs = cmp.runs.pivot_table(index=["arm", "seed"], columns="metric", values="value")
    for arm in policies[1:]:
        for metric in ("profit_usd", "denial_rate"):
            diff = runs.loc[arm][metric].to_numpy() - runs.loc[policies[0]][metric].to_numpy()
            assert d.loc[(arm, metric), "mean_diff"] == pytest.approx(np.mean(diff), abs=1e-12)
    # the floor (0.9) excludes 'half' (quality 0.8), so QualityFloor serves exactly as FullKV does
    assert d.loc[("policies.serving:QualityFloor", "profit_usd"), "mean_diff"] == 0.0
    assert d.loc[("policies.serving:DenyOverSlo", "denial_rate"), "mean_diff"] > 0
