"""Tabular semi-Markov Q-learning (policies.qtable) against theory and against its documented semantics.

The theory test builds a two-state semi-Markov decision problem whose actions take different,
random holding times, solves its Bellman optimality equation exactly (discount
``gamma ** (dt / tau)``), and checks that Q-learning converges there — and that a learner that
discounts by ``gamma`` per decision converges somewhere measurably different, with the opposite
optimal policy.
"""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from dcsim.errors import PolicyError
from policies.qtable import Discretizer, EpsilonSchedule, QTable

TAU_S = 3600.0
GAMMA = 0.9  # per hour

# Semi-Markov decision problem: (state, action) -> outcomes (probability, next state, holding time
# in hours, reward rate per hour accrued over the holding time). Action 0 is fast with a high rate,
# action 1 slow with a lower rate: per decision the slow action earns more, per unit of discounted
# time less, so the optimal choice flips with the kind of discount.
SMDP = {
    (0, 0): [(0.5, 0, 0.5, 2.0), (0.5, 1, 1.5, 2.0)],
    (0, 1): [(0.5, 0, 6.0, 1.0), (0.5, 1, 10.0, 1.0)],
    (1, 0): [(0.6, 0, 1.0, 0.5), (0.4, 1, 1.0, 0.5)],
    (1, 1): [(0.7, 0, 4.0, 0.7), (0.3, 1, 8.0, 0.7)],
}
N_S, N_A = 2, 2


def accrued_reward(rate_per_h, dt_h):
    """Reward rate integrated over the holding time, discounted to the decision: c ∫_0^dt γ^u du."""
    return rate_per_h * (1.0 - GAMMA**dt_h) / -np.log(GAMMA)


def smdp_model(semi_markov: bool):
    """Expected reward R[s, a] and discounted transition matrix D[s, a, s'] = E[discount; s']."""
    reward = np.zeros((N_S, N_A))
    disc = np.zeros((N_S, N_A, N_S))
    for (s, a), outcomes in SMDP.items():
        for p, s2, dt_h, rate in outcomes:
            reward[s, a] += p * accrued_reward(rate, dt_h)
            disc[s, a, s2] += p * (GAMMA**dt_h if semi_markov else GAMMA)
    return reward, disc


def optimal_q(semi_markov: bool):
    """Optimal Q by policy enumeration: solve (I - D_pi) V = R_pi per policy, keep the one that
    satisfies the Bellman optimality equation V(s) = max_a [R + D V](s, a)."""
    reward, disc = smdp_model(semi_markov)
    rows = np.arange(N_S)
    optimal = []
    for policy in itertools.product(range(N_A), repeat=N_S):
        v = np.linalg.solve(np.eye(N_S) - disc[rows, policy], reward[rows, policy])
        q = reward + disc @ v
        if np.allclose(q.max(axis=1), v, rtol=0, atol=1e-12):
            optimal.append((policy, q))
    assert len(optimal) == 1, "the problem should have a unique optimal policy"
    return optimal[0]


def sample_transitions(rng, state, action):
    """Sampled next states, holding times (s) and accrued rewards for rows (state, action)."""
    n = state.size
    next_state, dt_h, rate = np.empty(n, dtype=np.int64), np.empty(n), np.empty(n)
    u = rng.random(n)
    for (s, a), outcomes in SMDP.items():
        rows = (state == s) & (action == a)
        table = np.array([o[1:] for o in outcomes])
        k = np.minimum(np.searchsorted(np.cumsum([o[0] for o in outcomes]), u[rows], side="right"), len(outcomes) - 1)
        next_state[rows], dt_h[rows], rate[rows] = table[k, 0], table[k, 1], table[k, 2]
    return next_state, dt_h * TAU_S, accrued_reward(rate, dt_h)


def learn(seed: int, semi_markov: bool, batches: int = 3000, copies: int = 8) -> np.ndarray:
    """Q-learning on SMDP from batches holding every (s, a) pair `copies` times (duplicates included)."""
    rng = np.random.default_rng(seed)
    qt = QTable(N_S, N_A, gamma=GAMMA, tau_s=TAU_S, alpha_schedule="visits", alpha_decay_exponent=0.7)
    state = np.repeat(np.arange(N_S), N_A * copies)
    action = np.tile(np.repeat(np.arange(N_A), copies), N_S)
    for _ in range(batches):
        next_state, dt_s, reward = sample_transitions(rng, state, action)
        # The per-decision learner sees every transition as lasting one discount unit.
        qt.update(0, state, action, reward, next_state, dt_s if semi_markov else np.full(state.size, TAU_S))
    return qt.q[0]


# ------------------------------------------------------------------------------ theory: SMDP
def test_analytic_smdp_solution_and_the_discount_flips_the_policy():
    policy, q_star = optimal_q(semi_markov=True)
    policy_step, q_step = optimal_q(semi_markov=False)
    # Value iteration from zero reaches the same fixed point (a second, independent solution).
    reward, disc = smdp_model(True)
    q = np.zeros((N_S, N_A))
    for _ in range(2000):
        q = reward + disc @ q.max(axis=1)
    np.testing.assert_allclose(q, q_star, rtol=0, atol=1e-9)
    # Fast action optimal with time-based discount, slow action with per-decision discount.
    assert policy == (0, 0)
    assert policy_step == (1, 1)
    # Action gaps large enough for a learner to resolve.
    assert np.all(np.abs(q_star[:, 0] - q_star[:, 1]) > 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semi_markov_q_learning_converges_to_the_analytic_q(seed):
    _, q_star = optimal_q(semi_markov=True)
    _, q_step = optimal_q(semi_markov=False)
    tol = 0.15  # observed errors are ~0.03-0.05 after 24,000 updates per entry at rates n^-0.7
    learned = learn(seed, semi_markov=True)
    np.testing.assert_allclose(learned, q_star, rtol=0, atol=tol)
    assert tuple(np.argmax(learned, axis=1)) == (0, 0)
    # A per-decision discount is far outside that tolerance: this test fails for it.
    assert np.abs(q_step - q_star).max() > 50 * tol


def test_per_decision_discount_learner_converges_elsewhere():
    """The same learner fed dt = tau for every transition finds the per-step fixed point instead,
    so the convergence test above can tell the two discounts apart."""
    _, q_star = optimal_q(semi_markov=True)
    policy_step, q_step = optimal_q(semi_markov=False)
    learned = learn(0, semi_markov=False)
    np.testing.assert_allclose(learned, q_step, rtol=0, atol=0.5)
    assert np.abs(learned - q_star).max() > 20.0
    assert tuple(np.argmax(learned, axis=1)) == policy_step != (0, 0)


def test_one_update_discounts_by_gamma_to_the_holding_time_over_tau():
    qt = QTable(2, 2, alpha=1.0, gamma=0.81, tau_s=3600.0)
    qt.q[0, 1] = [10.0, 4.0]
    td = qt.update(0, np.array([0]), np.array([1]), np.array([2.0]), np.array([1]), np.array([1800.0]))
    # gamma ** (1800 / 3600) = 0.9
    assert qt.q[0, 0, 1] == pytest.approx(2.0 + 0.9 * 10.0)
    assert td == pytest.approx([11.0])
    qt.update(0, np.array([0]), np.array([0]), np.array([3.0]), np.array([1]), np.array([0.0]), terminal=np.array([True]))
    assert qt.q[0, 0, 0] == 3.0  # terminal: nothing bootstrapped


def test_visits_schedule_with_exponent_one_is_the_sample_mean():
    rng = np.random.default_rng(5)
    rewards = rng.normal(3.0, 2.0, size=500)
    qt = QTable(1, 1, initial_q=123.0, alpha_schedule="visits")
    for chunk in np.array_split(rewards, 7):
        n = chunk.size
        qt.update(0, np.zeros(n, int), np.zeros(n, int), chunk, np.zeros(n, int), np.zeros(n), terminal=True)
    assert qt.q[0, 0, 0] == pytest.approx(rewards.mean(), rel=1e-12)
    assert qt.visits[0, 0, 0] == 500


# ------------------------------------------------------------------------- batch semantics
def _random_batch(rng, n, n_tables, n_states_updated, n_actions, duplicates):
    """A batch whose rows update states [0, n_states_updated) and bootstrap only from the others."""
    if duplicates:
        table = rng.integers(0, n_tables, n)
        state = rng.integers(0, 2, n)  # few entries: many repeats
        action = rng.integers(0, 2, n)
    else:
        entries = rng.choice(n_tables * n_states_updated * n_actions, size=n, replace=False)
        table, state, action = np.unravel_index(entries, (n_tables, n_states_updated, n_actions))
    next_state = rng.integers(n_states_updated, 2 * n_states_updated, n)
    reward = rng.normal(size=n)
    dt_s = rng.exponential(1800.0, n)
    terminal = rng.random(n) < 0.2
    return table, state, action, reward, next_state, dt_s, terminal


def _fresh(schedule, exponent=1.0, n_tables=3):
    qt = QTable(20, 4, n_tables=n_tables, alpha=0.3, gamma=0.95, tau_s=600.0, alpha_schedule=schedule,
                alpha_decay_exponent=exponent)
    qt.q[...] = np.random.default_rng(9).normal(size=qt.q.shape)
    qt.visits[...] = np.random.default_rng(10).integers(0, 5, size=qt.q.shape)
    return qt


@pytest.mark.parametrize("schedule,exponent", [("constant", 1.0), ("visits", 1.0), ("visits", 0.7)])
@pytest.mark.parametrize("duplicates", [False, True])
def test_batch_update_equals_rows_one_by_one(schedule, exponent, duplicates):
    rng = np.random.default_rng(3)
    batch = _random_batch(rng, 30, 3, 10, 4, duplicates)
    table, state, action = batch[:3]
    if duplicates:
        flat = (table * 20 + state) * 4 + action
        _, counts = np.unique(flat, return_counts=True)
        assert counts.size < flat.size / 2 and counts.max() >= 4  # the batch really repeats entries
    whole, rows = _fresh(schedule, exponent), _fresh(schedule, exponent)
    q_before = whole.q.copy()
    td = whole.update(*batch)
    td_rows = [rows.update(*(np.atleast_1d(x[i]) for x in batch))[0] for i in range(30)]
    np.testing.assert_allclose(whole.q, rows.q, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(whole.visits, rows.visits)
    if not duplicates:
        np.testing.assert_array_equal(whole.q, rows.q)  # exactly, not just closely
        np.testing.assert_array_equal(td, td_rows)
    # TD errors are measured against the table as it stood before the batch.
    reward, next_state, dt_s, terminal = batch[3:]
    target = reward + 0.95 ** (dt_s / 600.0) * np.where(terminal, 0.0, q_before[table, next_state].max(axis=1))
    np.testing.assert_allclose(td, target - q_before[table, state, action], rtol=0, atol=1e-12)


def test_duplicates_compose_as_sequential_updates_toward_fixed_targets():
    qt = QTable(1, 1, alpha=0.5)
    one = np.zeros(3, int)
    qt.update(0, one, one, np.array([4.0, 8.0, 0.0]), one, np.zeros(3), terminal=True)
    # 0 -> 2 -> 5 -> 2.5
    assert qt.q[0, 0, 0] == pytest.approx(2.5)
    assert qt.visits[0, 0, 0] == 3
    # Sample-average schedule: order does not matter.
    a, b = QTable(1, 1, alpha_schedule="visits"), QTable(1, 1, alpha_schedule="visits")
    a.update(0, one, one, np.array([4.0, 8.0, 0.0]), one, 0.0, True)
    b.update(0, one, one, np.array([0.0, 4.0, 8.0]), one, 0.0, True)
    assert a.q[0, 0, 0] == pytest.approx(4.0) == b.q[0, 0, 0]


def test_bootstraps_read_the_table_from_before_the_batch():
    qt = QTable(2, 1, alpha=1.0, gamma=0.5, tau_s=1.0)
    # Row 0 sets Q[1] = 10; row 1 bootstraps from state 1 in the same batch and sees the old 0.
    qt.update(0, np.array([1, 0]), np.array([0, 0]), np.array([10.0, 1.0]), np.array([0, 1]), np.array([1.0, 1.0]),
              terminal=np.array([True, False]))
    assert qt.q[0, :, 0].tolist() == [1.0, 10.0]


# --------------------------------------------------------------------- per-agent vs shared
def test_per_agent_tables_are_independent_and_a_shared_table_pools():
    rng = np.random.default_rng(4)
    n = 60
    agent = rng.integers(0, 3, n)
    agent[agent == 2] = 1  # agent 2 never acts
    state, action = rng.integers(0, 5, n), rng.integers(0, 2, n)
    reward, next_state, dt_s = rng.normal(size=n), rng.integers(0, 5, n), rng.exponential(100.0, n)

    per_agent = QTable(5, 2, n_tables=3, alpha_schedule="visits")
    per_agent.update(agent, state, action, reward, next_state, dt_s)
    for k in range(3):
        alone = QTable(5, 2, alpha_schedule="visits")
        rows = agent == k
        if rows.any():
            alone.update(0, state[rows], action[rows], reward[rows], next_state[rows], dt_s[rows])
        np.testing.assert_array_equal(per_agent.q[k], alone.q[0])
        np.testing.assert_array_equal(per_agent.visits[k], alone.visits[0])
    assert not per_agent.q[2].any() and not per_agent.visits[2].any()

    shared = QTable(5, 2, alpha_schedule="visits")
    shared.update(0, state, action, reward, next_state, dt_s)
    np.testing.assert_array_equal(shared.visits[0], per_agent.visits.sum(axis=0))
    # An entry only agent 1 visited: in the shared table agent 0 reads what agent 1 learned.
    only_1 = (per_agent.visits[0] == 0) & (per_agent.visits[1] > 0)
    assert only_1.any()
    assert np.all(shared.q[0][only_1] != 0.0) and np.all(per_agent.q[0][only_1] == 0.0)


# --------------------------------------------------------------------------- acting
def test_greedy_breaks_ties_by_lowest_index_and_respects_allowed():
    qt = QTable(3, 4)
    qt.q[0] = [[1, 5, 5, 0], [2, 2, 2, 2], [0, 1, 9, 9]]
    assert qt.greedy(0, np.array([0, 1, 2])).tolist() == [1, 0, 2]
    allowed = np.array([[True, False, False, True], [False, False, True, True], [True, True, False, False]])
    assert qt.greedy(0, np.array([0, 1, 2]), allowed).tolist() == [0, 2, 1]


def test_epsilon_zero_is_greedy_and_epsilon_one_is_uniform():
    qt = QTable(5, 4)
    qt.q[0] = np.random.default_rng(1).normal(size=(5, 4))
    state = np.random.default_rng(2).integers(0, 5, 40_000)
    rng = np.random.default_rng(7)
    np.testing.assert_array_equal(qt.act(0, state, 0.0, rng), qt.greedy(0, state))

    counts = np.bincount(qt.act(0, state, 1.0, rng), minlength=4)
    expected = state.size / 4
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 0.001

    # epsilon = 0.3: non-greedy share 0.3 * 3/4, within 4 standard errors.
    share = np.mean(qt.act(0, state, 0.3, rng) != qt.greedy(0, state))
    p = 0.3 * 3 / 4
    assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / state.size)

    # Per-row epsilon.
    eps = np.where(state == 0, 0.0, 1.0)
    acts = qt.act(0, state, eps, rng)
    np.testing.assert_array_equal(acts[state == 0], qt.greedy(0, state[state == 0]))


def test_allowed_mask_is_respected_and_exploration_is_uniform_over_it():
    qt = QTable(1, 4)
    qt.q[0, 0] = [0.0, 10.0, 0.0, 5.0]
    n = 30_000
    allowed = np.zeros((n, 4), dtype=bool)
    allowed[:, [0, 2, 3]] = True
    allowed[: n // 2, 0] = False  # half the rows may only use actions 2 and 3
    rng = np.random.default_rng(11)
    state = np.zeros(n, int)
    greedy = qt.act(0, state, 0.0, rng, allowed)
    assert (greedy == 3).all()
    explored = qt.act(0, state, 1.0, rng, allowed)
    assert allowed[np.arange(n), explored].all()
    top = np.bincount(explored[: n // 2], minlength=4)
    bottom = np.bincount(explored[n // 2:], minlength=4)
    assert top[[0, 1]].sum() == 0 and bottom[1] == 0
    for counts, k in ((top[[2, 3]], 2), (bottom[[0, 2, 3]], 3)):
        expected = counts.sum() / k
        assert ((counts - expected) ** 2 / expected).sum() < {2: 10.83, 3: 13.82}[k]  # p = 0.001
    with pytest.raises(ValueError, match="no allowed action"):
        qt.act(0, np.zeros(2, int), 0.5, rng, np.zeros((2, 4), dtype=bool))


def test_act_draws_the_same_random_numbers_whatever_the_table():
    a, b = QTable(3, 3), QTable(3, 3)
    b.q[...] = np.random.default_rng(0).normal(size=b.q.shape)
    ra, rb = np.random.default_rng(42), np.random.default_rng(42)
    state = np.arange(3).repeat(10)
    a.act(0, state, 0.5, ra)
    b.act(0, state, 0.5, rb)
    assert ra.random() == rb.random()


def test_epsilon_schedule_endpoints():
    exp = EpsilonSchedule(start=1.0, end=0.05, decay_decisions=1000.0)
    assert exp.value(0) == 1.0
    assert exp.value(1000) == pytest.approx(0.05 + 0.95 / np.e)
    assert exp.value(10**7) == pytest.approx(0.05)
    lin = EpsilonSchedule(start=0.8, end=0.1, decay_decisions=100.0, kind="linear")
    assert lin.value(0) == 0.8
    assert lin.value(50) == pytest.approx(0.45)
    assert lin.value(100) == pytest.approx(0.1) and lin.value(10_000) == pytest.approx(0.1)
    np.testing.assert_allclose(lin.value(np.array([0, 50, 200])), [0.8, 0.45, 0.1])
    assert isinstance(lin.value(3), float)
    with pytest.raises(ValueError, match="kind"):
        EpsilonSchedule(kind="cosine")
    with pytest.raises(ValueError, match="start"):
        EpsilonSchedule(start=1.5)


# ------------------------------------------------------------------------ discretizer
def test_discretizer_indices_at_bin_edges():
    d = Discretizer({"price": np.array([0.0, 1.0]), "queue": np.array([10, 20, 30])})
    assert d.n_states == 3 * 4 and d.names == ("price", "queue") and d.radices == (3, 4)
    price = np.array([-1.0, 0.0, 0.999, 1.0, 7.0, 1.0])
    queue = np.array([9.9, 10.0, 20.0, 29.9, 30.0, 1e9])
    # price bins: <0 | [0,1) | >=1; queue bins: <10 | [10,20) | [20,30) | >=30; index = 4 * price + queue
    assert d.index({"price": price, "queue": queue}).tolist() == [0, 5, 6, 10, 11, 11]
    assert d.index({"price": 0.5, "queue": np.array([0, 35])}).tolist() == [4, 7]  # broadcasting
    assert d.describe() == [
        "12 states = 3 (price) x 4 (queue)",
        "price (stride 4): [0] price < 0; [1] 0 <= price < 1; [2] price >= 1",
        "queue (stride 1): [0] queue < 10; [1] 10 <= queue < 20; [2] 20 <= queue < 30; [3] queue >= 30",
    ]
    with pytest.raises(ValueError, match="missing features"):
        d.index({"price": price})
    with pytest.raises(ValueError, match="NaN"):
        d.index({"price": np.nan, "queue": 1.0})
    with pytest.raises(ValueError, match="strictly increasing"):
        Discretizer({"x": [1.0, 1.0]})


# ---------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path):
    qt = QTable(4, 3, n_tables=2, alpha=0.2, gamma=0.97, tau_s=900.0, initial_q=1.5, alpha_schedule="visits",
                alpha_decay_exponent=0.8)
    rng = np.random.default_rng(0)
    batch = (rng.integers(0, 2, 20), rng.integers(0, 4, 20), rng.integers(0, 3, 20), rng.normal(size=20),
             rng.integers(0, 4, 20), rng.exponential(600.0, 20))
    qt.update(*batch)
    path = qt.save(tmp_path / "q.npz")
    assert path == tmp_path / "q.npz" and path.is_file()
    back = QTable.load(path, n_states=4, n_actions=3, n_tables=2)
    for key, value in qt.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)
    # The loaded table learns exactly as the original would.
    qt.update(*batch)
    back.update(*batch)
    np.testing.assert_array_equal(back.q, qt.q)


def test_load_errors_name_the_file_the_field_and_what_was_expected(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(PolicyError, match=r"nope\.npz: file not found"):
        QTable.load(missing)

    path = QTable(4, 3).save(tmp_path / "q.npz")
    with pytest.raises(PolicyError, match=r"q\.npz: field 'q': got shape \(1, 4, 3\) \(n_states=4\); expected n_states=5"):
        QTable.load(path, n_states=5)

    d = QTable(4, 3).state_dict()
    d["visits"] = np.zeros((1, 4, 2), dtype=np.int64)
    np.savez(tmp_path / "bad_visits.npz", **d)
    with pytest.raises(PolicyError, match=r"bad_visits\.npz: field 'visits': got int64 array of shape \(1, 4, 2\); "
                                          r"expected an integer array of shape \(1, 4, 3\)"):
        QTable.load(tmp_path / "bad_visits.npz")

    d = QTable(4, 3).state_dict()
    del d["gamma"]
    np.savez(tmp_path / "no_gamma.npz", **d)
    with pytest.raises(PolicyError, match=r"no_gamma\.npz: field 'gamma': missing"):
        QTable.load(tmp_path / "no_gamma.npz")

    d = QTable(4, 3).state_dict()
    d["gamma"] = np.array(1.7)
    np.savez(tmp_path / "bad_gamma.npz", **d)
    with pytest.raises(PolicyError, match=r"bad_gamma\.npz: QTable\.gamma: got 1\.7"):
        QTable.load(tmp_path / "bad_gamma.npz")

    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(PolicyError, match=r"text\.npz: cannot be read"):
        QTable.load(tmp_path / "text.npz")


def test_bad_indices_are_rejected():
    qt = QTable(3, 2)
    with pytest.raises(ValueError, match=r"state must lie in \[0, 3\)"):
        qt.greedy(0, np.array([0, 3]))
    with pytest.raises(ValueError, match="action must have shape"):
        qt.update(0, np.array([0]), np.array([0, 1]), 1.0, np.array([0]), 1.0)
    with pytest.raises(ValueError, match="dt_s"):
        qt.update(0, np.array([0]), np.array([0]), 1.0, np.array([0]), -1.0)


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import policies.qtable; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_consistent_operator_on_a_waiting_self_loop():
    """One state, two actions: WAIT (reward 0, stays in the state, 300 s) and GO (reward 1, ends the episode).

    Optimal values: Q*(GO) = 1, Q*(WAIT) = γ^(300/τ)·1 under the standard operator — a gap of only
    1 − γ^(1/12) ≈ 0.0008 for γ = 0.99 per hour — and Q(WAIT) = 0 under the consistent operator (waiting forever
    earns nothing), a gap of 1. GO stays optimal under both.
    """
    gamma, tau, dt = 0.99, 3600.0, 300.0
    for consistent, expected_wait in ((False, gamma ** (dt / tau)), (True, 0.0)):
        q = QTable(1, 2, gamma=gamma, tau_s=tau, alpha=0.5)
        for _ in range(200):
            q.update(0, np.array([0, 0]), np.array([0, 1]), np.array([0.0, 1.0]), np.array([0, 0]),
                     np.array([dt, dt]), np.array([False, True]), consistent=consistent)
        np.testing.assert_allclose(q.q[0, 0], [expected_wait, 1.0], atol=1e-9)
        assert q.greedy(0, np.array([0]))[0] == 1
