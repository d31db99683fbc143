"""The serving learner (policies/serving_learner.py): a hand-worked bandit update and reward, learning the clearly
best configuration on a tiny Poisson scenario (held-out paired seeds), checkpoint round trip and its errors."""
import json

import numpy as np
import pytest

from dcsim.config import parse_scenario
from dcsim.errors import PolicyError
from dcsim.policy import ServingAdmission
from dcsim.runner import run_scenario
from dcsim.serving.training import evaluate_serving, train_serving
from policies.qtable import QTable
from policies.serving_learner import TABLE_FILE, ServingQ, request_rewards
from test_serving_model import Scripted

# config 2 (snap_b) gives the most revenue − energy cost at the test's price (worked out in
# test_config_2_is_clearly_best_by_hand); full KV has the best quality, so FullKV always picks row 0
CONFIGS = "name,times,energies,scores\nfull,1,1,1\nsnap_a,0.8,0.9,0.6\nsnap_b,0.5,0.3,0.9\nsnap_c,0.3,0.2,0.3\n"
PRICE = 10_000.0  # USD/MWh: dear energy, so that a request's energy cost is of the order of its revenue
PROMPT, MEAN_OUTPUT = 200, 40
USD_PROMPT, USD_OUTPUT = 1e-6, 1e-4
PREFILL, DECODE, IDLE_W, BATCH1_W = 1000.0, 20.0, 100.0, 400.0


def _tiny(tmp_path, configs=CONFIGS, horizon_s=1800):
    (tmp_path / "cfg.csv").write_text(configs)
    (tmp_path / "price.csv").write_text(f"time,price_usd_per_mwh\n2023-01-01T00:00:00Z,{PRICE}\n"
                                        f"2023-01-02T00:00:00Z,{PRICE}\n")
    return parse_scenario({
        "name": "tiny", "start": "2023-01-01T00:00:00Z", "horizon_s": horizon_s, "seed": 3,
        "cluster": {"gpus": 2, "power": {"idle_w": IDLE_W}},
        "workload": {"llm_serving": {
            "arrivals": {"source": "poisson", "rate_per_s": 1.0, "prompt_tokens": PROMPT,
                         "mean_output_tokens": MEAN_OUTPUT},
            "max_batch": 4,
            "batching": {"prefill_tokens_per_s": PREFILL, "decode_tokens_per_s": DECODE, "batch_sizes": [1, 4],
                         "relative_throughput": [1.0, 3.0], "power_w": [BATCH1_W, 600.0]},
            "configurations": str(tmp_path / "cfg.csv"),
            "revenue": {"usd_per_prompt_token": USD_PROMPT, "usd_per_output_token": USD_OUTPUT,
                        "scale_by_quality": True},
            "slo": {"ttft_s": 5, "e2e_s": 30},
            "price_usd_per_mwh": {"path": str(tmp_path / "price.csv")}}},
    })


def test_hand_worked_bandit_update_and_prior():
    p = ServingQ()
    p.table = QTable(p.disc.n_states, 3, gamma=0.0, alpha_schedule="visits")
    p.update(np.array([5, 5, 5, 7]), np.array([1, 1, 2, 1]), np.array([1.0, 3.0, -2.0, 0.5]))
    q, n = p.table.q[0], p.table.visits[0]
    # each entry is the running mean of its rewards: (1 + 3) / 2, −2, 0.5
    assert q[5].tolist() == [0.0, 2.0, -2.0] and n[5].tolist() == [0, 2, 1]
    assert q[7].tolist() == [0.0, 0.5, 0.0] and n[7].tolist() == [0, 1, 0]
    assert np.count_nonzero(n) == 3
    g = p.greedy_values()
    # an unseen state reads each action's visit-weighted mean over the seen ones: (2·2 + 0.5·1) / 3, −2, 0
    assert g[9].tolist() == pytest.approx([0.0, 1.5, -2.0])
    # a seen state reads its own Q where the action was tried, the prior where not
    assert g[7].tolist() == pytest.approx([0.0, 0.5, -2.0])
    assert int(np.argmax(g[9])) == 1


def test_hand_worked_request_rewards(tmp_path):
    # the four-request run of tests/test_serving_model.py::test_hand_worked_profit, worked by hand there
    trace = tmp_path / "azure.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:00,1000,100\n"
                     "2023-01-01 00:00:05,2000,50\n2023-01-01 00:00:06,0,200\n2023-01-01 00:00:20,500,10\n")
    (tmp_path / "c.csv").write_text("name,times,energies,scores\nfull,1,1,1\nhalf,0.5,0.4,0.8\n")
    (tmp_path / "p.csv").write_text("time,price_usd_per_mwh\n2023-01-01T00:00:00Z,100\n2023-01-01T00:01:00Z,200\n")
    sc = parse_scenario({
        "name": "hand", "start": "2023-01-01T00:00:00Z", "horizon_s": 120,
        "cluster": {"gpus": 1, "power": {"idle_w": 100.0}},
        "workload": {"llm_serving": {
            "arrivals": {"source": "azure_trace", "path": str(trace)}, "max_batch": 1, "max_queue": 1,
            "batching": {"prefill_tokens_per_s": 1000, "decode_tokens_per_s": 10, "batch_sizes": [1],
                         "relative_throughput": [1.0], "power_w": [400.0]},
            "configurations": str(tmp_path / "c.csv"),
            "revenue": {"usd_per_prompt_token": 1e-6, "usd_per_output_token": 1e-4, "scale_by_quality": True},
            "slo": {"ttft_s": 5, "e2e_s": 12}, "price_usd_per_mwh": {"path": str(tmp_path / "p.csv")}}}})
    serve, deny = ServingAdmission.SERVE, ServingAdmission.DENY
    run = run_scenario(sc, Scripted([serve, serve, serve, deny], [0, 1, 0, 0]))
    r = request_rewards(run.result, slo_penalty=0.5)
    assert r.index.tolist() == [0, 1, 2, 3]
    v0, v1, v2 = 1000e-6 + 100e-4, 2000e-6 + 50e-4, 200e-4
    # r0: full, in both SLOs (ttft 1 s, e2e 11 s); 300 W × 11 s dynamic energy at 100 $/MWh (it starts at 0)
    assert r.loc[0, "reward_usd"] == pytest.approx(v0 - 300 * 11 / 3.6e9 * 100, rel=1e-12)
    # r1: half (quality 0.8) misses the TTFT (7 s > 5 s): half its full value is charged; 0.4 × 300 W × 7 s
    assert r.loc[1, "reward_usd"] == pytest.approx(0.8 * v1 - 0.4 * 300 * 7 / 3.6e9 * 100 - 0.5 * v1, rel=1e-12)
    # r2: dropped (queue full): no revenue, no energy, half its value charged; r3 denied: 0
    assert r.loc[2, "reward_usd"] == pytest.approx(-0.5 * v2, rel=1e-12)
    assert r.loc[3, "reward_usd"] == 0.0
    assert r["penalty_usd"].tolist() == pytest.approx([0.0, 0.5 * v1, 0.5 * v2, 0.0])


def test_config_2_is_clearly_best_by_hand():
    """The scenario's premise, worked at batch 1: per request, quality × value − e_k × reference energy cost."""
    value = USD_PROMPT * PROMPT + USD_OUTPUT * MEAN_OUTPUT
    ref_cost = (BATCH1_W - IDLE_W) * (PROMPT / PREFILL + MEAN_OUTPUT / DECODE) / 3.6e9 * PRICE
    rows = [line.split(",") for line in CONFIGS.strip().splitlines()[1:]]
    net = [float(q) * value - float(e) * ref_cost for _, _, e, q in rows]
    assert int(np.argmax(net)) == 2 and sorted(net)[-1] - sorted(net)[-2] > 0.1 * value
    assert min(net[2] - x for i, x in enumerate(net) if i != 2) > 0  # and above deny's 0 too
    assert net[2] > 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("servlearn")
    sc = _tiny(tmp)
    curve = train_serving(sc, 5, tmp / "train", params={"epsilon_decay_decisions": 3000})
    return sc, tmp / "train", curve


def test_trained_policy_picks_the_best_configuration_and_beats_full_kv(trained):
    sc, out, curve = trained
    assert curve["seed"].tolist() == [3, 4, 5, 6, 7]
    seeds = [10_000 + i for i in range(4)]  # held out: the training used seeds 3..7
    runs = evaluate_serving(sc, out / "checkpoint", seeds, ["serving_full_kv"])
    learner = runs[runs.arm == "serving_q"].set_index("seed")
    full = runs[runs.arm == "serving_full_kv"].set_index("seed")
    for seed in seeds:
        mix = json.loads(learner.loc[seed, "served_by_config"])
        served = sum(mix.values())
        assert mix.get("snap_b", 0) / served > 0.8  # the clearly best row in most decisions
        assert learner.loc[seed, "denial_rate"] < 0.05  # and it serves, since snap_b is worth more than denying
        assert learner.loc[seed, "profit_usd"] > full.loc[seed, "profit_usd"]  # paired: same requests per seed
    # exploration decays, and the share of greedy choices of config 2 grows over training
    # exploration is full until something is learnt, then decays with the requests learnt from
    assert curve["epsilon"].iloc[0] == 1.0 and curve["epsilon"].is_monotonic_decreasing
    learnt = curve["updates"].cumsum().shift(fill_value=0).to_numpy(float)
    assert curve["epsilon"].to_numpy() == pytest.approx(0.02 + 0.98 * np.exp(-learnt / 3000))
    assert curve["share_config_2"].iloc[-1] > curve["share_config_2"].iloc[0]


def test_checkpoint_round_trip(trained, tmp_path):
    sc, out, _ = trained
    a = ServingQ(checkpoint=str(out / "checkpoint"), learn=False)
    b = ServingQ(checkpoint=str(out / "checkpoint" / TABLE_FILE), learn=False)  # the .npz names its folder too
    assert np.array_equal(a.table.q, b.table.q) and np.array_equal(a.table.visits, b.table.visits)
    a.save_checkpoint(tmp_path / "again")
    c = ServingQ(checkpoint=str(tmp_path / "again"), learn=False)
    assert np.array_equal(c.table.q, a.table.q) and np.array_equal(c.table.visits, a.table.visits)
    assert (c.decisions, c.price_lo, c.price_hi) == (a.decisions, a.price_lo, a.price_hi)
    assert a.price_lo == a.price_hi == PRICE
    # a frozen policy from either copy makes the same decisions on the same requests
    ra = run_scenario(sc.model_copy(update={"seed": 99}), policy=a).result.requests
    rc = run_scenario(sc.model_copy(update={"seed": 99}), policy=c).result.requests
    assert ra["config"].tolist() == rc["config"].tolist() and ra["status"].tolist() == rc["status"].tolist()


def test_checkpoint_of_another_table_size_is_refused(trained, tmp_path):
    sc, out, _ = trained
    other = tmp_path / "two"
    other.mkdir()
    two = _tiny(other, configs="name,times,energies,scores\nfull,1,1,1\nhalf,0.5,0.4,0.8\n", horizon_s=60)
    frozen = ServingQ(checkpoint=str(out / "checkpoint"), learn=False)
    with pytest.raises(PolicyError, match=r"serving_q\.npz: field 'q': 5 actions .* 2 rows, so expected 3 actions"):
        run_scenario(two, policy=frozen)
    # a table of another number of states (other feature bins) is refused at load, naming the file and field
    bad = tmp_path / "bad"
    ServingQ(checkpoint=str(out / "checkpoint")).save_checkpoint(bad)
    QTable(7, 5, gamma=0.0).save(bad / TABLE_FILE)
    with pytest.raises(PolicyError, match=r"serving_q\.npz: field 'q': got shape \(1, 7, 5\).*expected n_states="):
        ServingQ(checkpoint=str(bad))
    with pytest.raises(PolicyError, match="file not found"):
        ServingQ(checkpoint=str(tmp_path / "nowhere"))


def test_bad_parameters_are_named():
    with pytest.raises(PolicyError, match="params.slo_penalty: got -1"):
        ServingQ(slo_penalty=-1)
    with pytest.raises(PolicyError, match="params.epsilon_"):
        ServingQ(epsilon_start=2.0)


def test_the_one_request_state_path_matches_the_discretizer():
    p = ServingQ()
    rng = np.random.default_rng(5)
    edges = [np.array(v) for v in p.disc.edges.values()]
    for _ in range(300):
        # values drawn around the edges, some exactly on one (which goes to the bin above)
        f = {name: np.array([rng.choice(np.r_[e, e - 1e-9, e + 1e-9, e[0] - 1.0, e[-1] + 1.0, np.inf])])
             for name, e in zip(p.disc.names, edges)}
        assert p.states(f).tolist() == p.disc.index(f).tolist()
