"""Do Q-learning bidders learn to shade their bids? A repeated auction under four mechanisms (lesson 4).

Six GPU agents each want 1 kW above idle; the Token Manager sells 3 kW every round (2 kW of solar at
0.01 tokens/kWh, 1 kW of grid at 0.6). Rounds come at irregular times: the gap to the next round is
exponential with a mean of 5 minutes, and an allocation lasts until the next round, so a round's
energy is ``allocation × gap``. Before each round every agent draws a fresh value for power,
uniform on [1, 12] tokens/kWh, independently of everything else.

Every agent is an independent tabular Q-learner (``policies.qtable.QTable``, one table per agent):

- state: the bin its value falls in (4 bins), so the learned greedy policy is a bid function;
- action: a shade factor ``s`` from ``SHADES``; it bids ``s × value`` tokens/kWh (under ``kelly`` it
  offers ``s × value × request × round`` tokens, ``s`` times what its request is worth);
- reward: the value of the energy it got minus what it paid, tokens; the energy arrives at a constant
  rate over the round, so the reward is discounted to the decision instant over the round;
- update: semi-Markov Q-learning, ``Q ← Q + α (r + γ^(Δt/τ) max Q(s′) − Q)`` with ``Δt`` the gap to
  the agent's next decision, applied in batches of ``UPDATE_EVERY`` rounds (a batch bootstraps from the
  table as it stood before the batch; one ``QTable.update`` call costs more than a round's clearing);
  epsilon-greedy acting with an exponentially decaying epsilon.

The same value draws, round times and exploration coin flips are used under every mechanism (common
random numbers). After training, each agent's greedy shade per value bin is read off its table, and the
greedy policies are replayed on held-out rounds (no exploration, no learning) to measure the price paid,
the efficiency (welfare / best welfare) and the bidders' surplus, next to truthful bidding (shade 1).
Two checks say whether shading pays: what each agent's table believes (its best action's Q minus the Q
of shade 1) and what happens (agent 0 alone switches to truthful bids on the held-out rounds while the
others keep their learned policies).
Everything is repeated over ``--seeds`` independent seeds (one ``numpy.random.SeedSequence`` root).

Reference points printed with the table: under pay-as-bid, the shade of the symmetric Bayes-Nash
equilibrium with continuous bids, ``b(v)/v`` with ``b(v) = E[Y | Y < v]`` and ``Y`` the 3rd-highest of the
other five values (averaged over each bin); under truthful uniform pricing the expected price is the
expected 4th-highest value, ``1 + 11 · 3/7 ≈ 5.71`` tokens/kWh, which by revenue equivalence is also the
expected mean price paid at that pay-as-bid equilibrium. Run it from the repository root:

    python docs/tutorials/examples/learn_shading.py
    python docs/tutorials/examples/learn_shading.py --plot shading.png    # also draw learned shade vs value
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from dcsim.config import MarketConfig
from dcsim.market import J_PER_KWH, BidBook, SupplyCurve, build_mechanism, welfare_ratio
from policies.qtable import EpsilonSchedule, QTable

N_AGENTS = 6
REQUEST_W = 1000.0
SUPPLY_W = np.array([2000.0, 1000.0])          # solar, grid
SUPPLY_COST = np.array([0.01, 0.6])            # tokens/kWh
VALUE_LOW, VALUE_HIGH = 1.0, 12.0              # tokens/kWh, uniform
VALUE_EDGES = np.array([3.75, 6.5, 9.25])      # 4 value bins of equal width
SHADES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2])
MEAN_GAP_S = 300.0                             # mean time between rounds (exponential gaps)
GAMMA, TAU_S = 0.5, 300.0                      # discount 0.5 per 5 minutes
UPDATE_EVERY = 10                              # rounds per batch of Q updates
WALLET = 1e6                                   # tokens: budgets never bind, so only the rules matter
MECHANISMS = ("pay_as_bid", "uniform_price", "vcg", "kelly")
TRUTHFUL = int(np.flatnonzero(SHADES == 1.0)[0])
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # Student t, 97.5 %


def world(rng: np.random.Generator, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Values ``(rounds, N_AGENTS)`` in tokens/kWh and the gap after each round ``(rounds,)`` in seconds."""
    values = rng.uniform(VALUE_LOW, VALUE_HIGH, size=(rounds, N_AGENTS))
    gaps_s = rng.exponential(MEAN_GAP_S, size=rounds)
    return values, gaps_s


def clear(mechanism, values: np.ndarray, shade: np.ndarray, gap_s: float):
    """One round: bids ``shade × value``; returns (allocations W, debits tokens, the supply curve)."""
    supply = SupplyCurve(SUPPLY_W, SUPPLY_COST, ("solar", "grid"), base_load_w=0.0, round_s=gap_s)
    request_w = np.full(N_AGENTS, REQUEST_W)
    kwh_per_w = gap_s / J_PER_KWH
    bid = shade * values
    book = BidBook.single_step(request_w, bid, bid * request_w * kwh_per_w)
    c = mechanism.clear(book, supply, np.full(N_AGENTS, WALLET))
    return c.allocations_w, c.debits_tokens, supply


def surplus(values: np.ndarray, alloc_w: np.ndarray, debits: np.ndarray, gap_s: float) -> np.ndarray:
    """Each agent's value of the energy it got minus what it paid, tokens."""
    return values * alloc_w * gap_s / J_PER_KWH - debits


def spread(gaps_s: np.ndarray) -> np.ndarray:
    """Mean discount over a round of ``gaps_s`` seconds: ``(1 − γ^x) / (x ln(1/γ))`` with ``x = gap / τ``.

    Energy flows at a constant rate over the round, so this discounts its value to the decision instant."""
    x = np.maximum(np.asarray(gaps_s, dtype=float) / TAU_S, 1e-12)
    return (1 - GAMMA ** x) / (x * -math.log(GAMMA))


def train(mechanism, values: np.ndarray, gaps_s: np.ndarray, rng: np.random.Generator) -> QTable:
    """Independent semi-Markov Q-learning over the training rounds; returns the agents' tables."""
    rounds = len(gaps_s)
    q = QTable(len(VALUE_EDGES) + 1, SHADES.size, n_tables=N_AGENTS, gamma=GAMMA, tau_s=TAU_S,
               alpha_schedule="visits", alpha_decay_exponent=0.7)
    epsilon = EpsilonSchedule(start=1.0, end=0.02, decay_decisions=rounds / 5)
    agents = np.arange(N_AGENTS)
    states = np.digitize(values, VALUE_EDGES)
    actions = np.zeros((rounds, N_AGENTS), dtype=np.int64)
    rewards = np.zeros((rounds, N_AGENTS))
    next_states = np.vstack([states[1:], states[-1:]])       # the last round's successor: any state will do
    first = 0                                                  # first round not yet learned from
    for t in range(rounds):
        actions[t] = q.act(agents, states[t], epsilon.value(t), rng)
        alloc, debits, _ = clear(mechanism, values[t], SHADES[actions[t]], gaps_s[t])
        rewards[t] = surplus(values[t], alloc, debits, gaps_s[t]) * spread(gaps_s[t])
        if t + 1 - first == UPDATE_EVERY or t + 1 == rounds:
            done, n, first = slice(first, t + 1), t + 1 - first, t + 1
            q.update(np.tile(agents, n), states[done].ravel(), actions[done].ravel(), rewards[done].ravel(),
                     next_states[done].ravel(), np.repeat(gaps_s[done], N_AGENTS))
    return q


def evaluate(mechanism, values: np.ndarray, gaps_s: np.ndarray, policy: np.ndarray) -> dict[str, object]:
    """Replay held-out rounds with fixed shades (no exploration, no learning).

    Args:
        policy: ``(N_AGENTS, bins)`` action index each agent takes in each value bin.

    Returns:
        ``price`` and ``surplus``: tokens paid and bidders' surplus per kWh sold; ``efficiency``: mean
        welfare ratio (true values); ``agent_surplus``: ``(N_AGENTS,)`` tokens each agent gained in all.
    """
    states = np.digitize(values, VALUE_EDGES)
    paid = energy = 0.0
    gained = np.zeros(N_AGENTS)
    ratios = []
    for t in range(len(gaps_s)):
        alloc, debits, supply = clear(mechanism, values[t], SHADES[policy[np.arange(N_AGENTS), states[t]]], gaps_s[t])
        ratios.append(welfare_ratio(BidBook.single_step(np.full(N_AGENTS, REQUEST_W), values[t]), supply, alloc))
        paid += debits.sum()
        energy += alloc.sum() * gaps_s[t] / J_PER_KWH
        gained += surplus(values[t], alloc, debits, gaps_s[t])
    return {"price": paid / energy, "efficiency": float(np.nanmean(ratios)), "surplus": gained.sum() / energy,
            "agent_surplus": gained}


def equilibrium_shade_at(value: float) -> float:
    """``b(v)/v`` at the symmetric pay-as-bid equilibrium with continuous bids, ``b(v) = E[Y | Y < v]``.

    ``Y`` is the 3rd-highest of the other 5 values: ``Y = 1 + 11 Z`` with ``Z ~ Beta(3, 3)`` (the median
    of five uniforms); the expectation is taken by quadrature of the Beta density."""
    z = (np.arange(4000) + 0.5) / 4000
    y = VALUE_LOW + (VALUE_HIGH - VALUE_LOW) * z
    weight = 30 * z ** 2 * (1 - z) ** 2 * (y < value)                                # Beta(3, 3) below v
    return float((weight * y).sum() / weight.sum() / value) if weight.sum() > 0 else 1.0


def equilibrium_shade(bin_index: int, points: int = 200) -> float:
    """Mean of :func:`equilibrium_shade_at` over a value bin."""
    edges = np.concatenate([[VALUE_LOW], VALUE_EDGES, [VALUE_HIGH]])
    v = np.linspace(edges[bin_index], edges[bin_index + 1], points + 2)[1:-1]
    return float(np.mean([equilibrium_shade_at(x) for x in v]))


def plot(path: Path, shade: dict[str, np.ndarray]) -> None:
    """Learned shade against value: each mechanism's mean over agents and seeds per bin, with the seeds' 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.concatenate([[VALUE_LOW], VALUE_EDGES, [VALUE_HIGH]])
    mid = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=90)
    for k, (name, s) in enumerate(shade.items()):
        per_seed = s.mean(axis=1)                                                # (seeds, bins)
        half = (T95.get(len(per_seed) - 1, 1.96) * per_seed.std(axis=0, ddof=1) / math.sqrt(len(per_seed))
                if len(per_seed) > 1 else None)
        ax.errorbar(mid + (k - 1.5) * 0.12, per_seed.mean(axis=0), yerr=half, marker="o", capsize=3, label=name)
    v = np.linspace(VALUE_LOW + 1e-6, VALUE_HIGH, 200)
    ax.plot(v, [equilibrium_shade_at(x) for x in v], "k--", lw=1, label="pay-as-bid equilibrium")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    for e in VALUE_EDGES:
        ax.axvline(e, color="grey", lw=0.5, alpha=0.4)
    ax.set_xlabel("value, tokens/kWh (bins: the learners' states)")
    ax.set_ylabel("learned shade (bid / value)")
    ax.set_ylim(0, 1.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def two(x: float) -> str:
    """Two decimals, without a minus sign on a rounded zero."""
    text = f"{x:.2f}"
    return "0.00" if text == "-0.00" else text


def ci(per_seed: np.ndarray) -> str:
    """``mean ± half-width`` of a 95 % t interval over seeds."""
    m = float(np.mean(per_seed))
    if per_seed.size < 2:
        return two(m)
    half = T95.get(per_seed.size - 1, 1.96) * float(np.std(per_seed, ddof=1)) / math.sqrt(per_seed.size)
    return f"{two(m)} ± {half:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="independent repetitions (default 4)")
    parser.add_argument("--rounds", type=int, default=3000, help="training rounds per seed (default 3000)")
    parser.add_argument("--eval-rounds", type=int, default=400, help="held-out rounds for the outcome table")
    parser.add_argument("--seed", type=int, default=2024, help="root seed (default 2024)")
    parser.add_argument("--plot", type=Path, help="also write a PNG of learned shade against value here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    root = np.random.SeedSequence(args.seed)
    eval_values, eval_gaps = world(np.random.default_rng(root.spawn(1)[0]), args.eval_rounds)
    eval_wanted_kwh = float(np.sum(REQUEST_W * eval_gaps / J_PER_KWH))          # one agent's whole requests
    seeds = root.spawn(args.seeds)
    bins = len(VALUE_EDGES) + 1
    shade = {m: np.zeros((args.seeds, N_AGENTS, bins)) for m in MECHANISMS}   # learned greedy shade
    gap_truthful = {m: np.zeros((args.seeds, N_AGENTS, bins)) for m in MECHANISMS}
    outcome = {m: [] for m in MECHANISMS}
    for k, seq in enumerate(seeds):
        world_seq, explore_seq = seq.spawn(2)
        values, gaps_s = world(np.random.default_rng(world_seq), args.rounds)
        for name in MECHANISMS:
            mechanism = build_mechanism(MarketConfig(mechanism=name, vcg_quantum_w=50.0))
            q = train(mechanism, values, gaps_s, np.random.default_rng(explore_seq))
            greedy = q.q.argmax(axis=2)                                          # (agents, bins)
            shade[name][k] = SHADES[greedy]
            # in tokens per (discounted) kWh of a whole request, the energy an agent wants per round
            wanted_kwh = float(np.mean(REQUEST_W * gaps_s / J_PER_KWH * spread(gaps_s)))
            gap_truthful[name][k] = (q.q.max(axis=2) - q.q[:, :, TRUTHFUL]) / wanted_kwh
            result = evaluate(mechanism, eval_values, eval_gaps, greedy)
            # Does shading pay in fact? Agent 0 alone switches to truthful bids, the others keep their policies.
            deviant = greedy.copy()
            deviant[0] = TRUTHFUL
            lost = result["agent_surplus"][0] - evaluate(mechanism, eval_values, eval_gaps, deviant)["agent_surplus"][0]
            result["shading_gain"] = lost / eval_wanted_kwh
            outcome[name].append(result)

    edges = np.concatenate([[VALUE_LOW], VALUE_EDGES, [VALUE_HIGH]])
    labels = [f"v {edges[b]:g}–{edges[b + 1]:g}" for b in range(bins)]
    print(f"Learned greedy shade by value bin: mean over {N_AGENTS} agents, ± 95 % CI over {args.seeds} seeds "
          f"({args.rounds} training rounds each); [lowest–highest over agents and seeds]; what the tables "
          "say truthful bidding loses:\n")
    print("| mechanism | " + " | ".join(labels) + " | Q(best) − Q(shade 1), tokens/kWh wanted |")
    print("|:---|" + "---:|" * (bins + 1))
    for name in MECHANISMS:
        per_seed = shade[name].mean(axis=1)                                      # (seeds, bins)
        cells = [f"{ci(per_seed[:, b])} [{shade[name][:, :, b].min():g}–{shade[name][:, :, b].max():g}]"
                 for b in range(bins)]
        print(f"| {name} | " + " | ".join(cells) + f" | {ci(gap_truthful[name].mean(axis=(1, 2)))} |")
    print("| pay-as-bid equilibrium (continuous bids) | "
          + " | ".join(f"{equilibrium_shade(b):.2f}" for b in range(bins)) + " | |")

    print(f"\nOutcomes on {args.eval_rounds} held-out rounds (the same for every mechanism), learned greedy "
          "policies against everyone truthful; price and surplus per kWh sold, tokens/kWh; agent 0's gain per kWh "
          "it wanted, against the others' learned policies:\n")
    print("| mechanism | mean price paid (learned) | mean price paid (truthful) | efficiency (learned) | "
          "efficiency (truthful) | bidders' surplus (learned) | bidders' surplus (truthful) | "
          "agent 0's gain from its learned shades over truthful bids |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|")
    for name in MECHANISMS:
        mechanism = build_mechanism(MarketConfig(mechanism=name, vcg_quantum_w=50.0))
        truthful = evaluate(mechanism, eval_values, eval_gaps, np.full((N_AGENTS, bins), TRUTHFUL))
        learned = {key: np.array([o[key] for o in outcome[name]])
                   for key in ("price", "efficiency", "surplus", "shading_gain")}
        print(f"| {name} | {ci(learned['price'])} | {two(truthful['price'])} | {ci(100 * learned['efficiency'])} % | "
              f"{100 * truthful['efficiency']:.2f} % | {ci(learned['surplus'])} | {two(truthful['surplus'])} | "
              f"{ci(learned['shading_gain'])} |")
    print(f"\nExpected price under truthful uniform pricing (4th-highest value): {1 + 11 * 3 / 7:.2f} tokens/kWh")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(args.plot, shade)
        print(f"wrote {args.plot}")
    print(f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)  # stderr: the printed tables stay reproducible


if __name__ == "__main__":
    main()
