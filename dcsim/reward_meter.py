"""The reward meter: each learning agent's reward components between its decisions, read off linear meters."""
from __future__ import annotations

import array

import numpy as np
import simpy

from dcsim.buffers import buffer
from dcsim.cluster import Cluster
from dcsim.config import Scenario
from dcsim.dispatch import RUNNING, Dispatcher
from dcsim import learning as _learning
from dcsim.learning import REWARD_COMPONENTS, Feedback, reward_weights
from dcsim.market import J_PER_KWH
from dcsim.market_round import MarketRound
from dcsim.meter import EnergyMeter


class RewardMeter:
    """Meters each agent's reward components between its decisions (only built for learning policies).

    Value credited, deadline misses and settled tokens are counted as they happen; energy, unsettled token
    liabilities and the latency of running jobs (each GPU of a k-GPU job accrues 1/k s per s) are read off
    linear meters at decision time. What no agent owns — time jobs spend waiting before they start, deadlines
    missed while waiting, dropped jobs — is shared equally by all agents. At the horizon, jobs still pending
    are charged their time so far and, past their deadline, a miss. Carbon is attributed to an agent by its
    share of the cluster's energy over its own interval. Totals equal :func:`dcsim.learning.episode_totals`.
    """

    def __init__(self, scenario: Scenario, env: simpy.Environment, cluster: Cluster, jobs: Dispatcher,
                 market: MarketRound, meter: EnergyMeter):
        n = cluster.n_gpus
        cfg = scenario.reward
        self.env, self.cluster, self.jobs, self.market, self.meter = env, cluster, jobs, market, meter
        self.n = n
        self.weights = reward_weights(cfg)
        self.team_fraction = cfg.team_fraction
        # each per-agent array is a numpy view of an array.array (dcsim.buffers): the few-agent paths index the
        # array.array (Python numbers, no numpy scalars), whole-array numpy the views
        self._value, self.value = buffer(n, "d", 0.0)
        self._misses, self.misses = buffer(n, "d", 0.0)
        self._settled, self.settled = buffer(n, "d", 0.0)
        self._lat_off, self.lat_off = buffer(n, "d", 0.0)  # own latency(t) = lat_off + lat_rate·t
        self._lat_rate, self.lat_rate = buffer(n, "d", 0.0)
        self.shared = np.zeros(3)  # latency_s, deadline misses, drops that no agent owns
        self._last_s, self.last_s = buffer(n, "d", 0.0)
        self._first = array.array("b", [1]) * n
        self.first = np.frombuffer(self._first, dtype=np.bool_)
        # own value, spent, energy_j, latency_s, misses; agent g's row at [5g, 5g + 5) of the flat buffer
        self._snap, snap = buffer(5 * n, "d", 0.0)
        self.snap = snap.reshape(n, 5)
        self._snap_shared, snap_shared = buffer(3 * n, "d", 0.0)
        self.snap_shared = snap_shared.reshape(n, 3)
        self._snap_cluster, snap_cluster = buffer(2 * n, "d", 0.0)  # cluster consumed_j and carbon_g
        self.snap_cluster = snap_cluster.reshape(n, 2)
        self.snap_team = np.zeros((n, len(REWARD_COMPONENTS)))
        self._returns, self.returns = buffer(n, "d", 0.0)  # undiscounted sum of all feedback rewards per agent

    def start(self, j: int, gpus: list[int], now: float) -> None:
        """Job ``j`` starts running: its wait is shared; from now its GPUs accrue its latency."""
        self.shared[0] += now - self.jobs.arrival_s[j]
        k = len(gpus)
        lat_off, lat_rate = self._lat_off, self._lat_rate
        for g in gpus:
            lat_off[g] -= now / k
            lat_rate[g] += 1.0 / k

    def complete(self, gpus: list[int], value_share: float, now: float, late: bool) -> None:
        """A job on ``gpus`` completes: each GPU gets its value share, stops accruing latency, and shares a miss."""
        k = len(gpus)
        value, lat_off, lat_rate, misses = self._value, self._lat_off, self._lat_rate, self._misses
        for g in gpus:
            value[g] += value_share
            lat_off[g] += now / k
            lat_rate[g] -= 1.0 / k
            if late:
                misses[g] += 1.0 / k

    def drop(self, j: int, now: float, expired: bool) -> None:
        """Job ``j`` is dropped: its wait, a miss if it expired, and the drop are shared."""
        self.shared += (now - self.jobs.arrival_s[j], 1.0 if expired else 0.0, 1.0)

    def close(self, now: float) -> None:
        """At the horizon: pending jobs past their deadline count as misses (running ones to their GPUs), and
        jobs that never started are charged the time they waited."""
        jobs = self.jobs
        for j, gpus in jobs.job_gpus.items():
            if jobs._stat[j] == RUNNING:
                if jobs._deadline[j] < now:
                    for g in gpus:
                        self.misses[g] += 1.0 / len(gpus)
            else:  # claimed GPUs still waking: not started
                self.shared += (now - jobs.arrival_s[j], 1.0 if jobs._deadline[j] < now else 0.0, 0.0)
        for j in list(jobs.queue) + list(jobs.deferred):
            self.shared += (now - jobs.arrival_s[j], 1.0 if jobs._deadline[j] < now else 0.0, 0.0)

    def _spent(self, idx: np.ndarray) -> np.ndarray:
        """Tokens paid plus owed (not yet settled) by agents ``idx`` up to now."""
        cl, market = self.cluster, self.market
        used = cl.billable_off[idx] + cl.billable_w[idx] * self.env.now
        liability = market.owed_tokens[idx] + np.multiply(market.agent_price[idx], used, out=np.zeros(idx.size),
                                                          where=used > 0) / J_PER_KWH
        return self.settled[idx] + liability

    def _own(self, idx: np.ndarray) -> np.ndarray:
        cl = self.cluster
        now = self.env.now
        return np.stack([self.value[idx], self._spent(idx), cl.energy_off[idx] + cl.power_w[idx] * now,
                         self.lat_off[idx] + self.lat_rate[idx] * now, self.misses[idx]], axis=1)

    def _team_now(self) -> np.ndarray:
        books = self.meter.books.totals
        own = self._own(np.arange(self.n)).sum(axis=0)
        return np.array([own[0], own[1], books.consumed_j / J_PER_KWH, books.carbon_g / 1000.0,
                         own[3] + self.shared[0], own[4] + self.shared[1], self.shared[2]])

    def feedback(self, idx: np.ndarray) -> Feedback:
        """Rewards of agents ``idx`` since their previous decision; starts their next interval now."""
        now = self.env.now
        self.meter.advance()
        if idx.size <= _learning.SMALL_BATCH:
            ids = idx.tolist()
            if len(set(ids)) == len(ids):
                return self._feedback_small(idx, ids, now)
        own = self._own(idx)
        d_own = own - self.snap[idx]
        d_shared = (self.shared[None, :] - self.snap_shared[idx]) / self.n
        books = self.meter.books.totals
        cluster = np.array([books.consumed_j, books.carbon_g])
        d_cluster = cluster - self.snap_cluster[idx]
        carbon_kg = np.divide(d_own[:, 2] * d_cluster[:, 1], d_cluster[:, 0], out=np.zeros(idx.size),
                              where=d_cluster[:, 0] > 0) / 1000.0
        comps = np.stack([d_own[:, 0], d_own[:, 1], d_own[:, 2] / J_PER_KWH, carbon_kg, d_own[:, 3] + d_shared[:, 0],
                          d_own[:, 4] + d_shared[:, 1], d_shared[:, 2]], axis=1)
        reward = comps @ self.weights
        if self.team_fraction > 0:
            team = self._team_now()
            team_reward = ((team[None, :] - self.snap_team[idx]) @ self.weights) / self.n
            reward = (1.0 - self.team_fraction) * reward + self.team_fraction * team_reward
            self.snap_team[idx] = team
        fb = Feedback(reward, now - self.last_s[idx], self.first[idx].copy(), comps)
        self.snap[idx] = own
        self.snap_shared[idx] = self.shared
        self.snap_cluster[idx] = cluster
        self.last_s[idx] = now
        self.first[idx] = False
        self.returns[idx] += reward
        return fb

    def _feedback_small(self, idx: np.ndarray, ids: list[int], now: float) -> Feedback:
        """:meth:`feedback` for a few distinct agents, read one by one: each float64 operation of the numpy
        path in its order; the weighted sum is the numpy path's matrix product over the same ``(n, 7)`` block."""
        cl, market = self.cluster, self.market
        boff, bw, eoff, pw = cl._boff, cl._bw, cl._eoff, cl._pw
        owed, aprice = market._owed, market._aprice
        value, settled, lat_off, lat_rate, misses = self._value, self._settled, self._lat_off, self._lat_rate, \
            self._misses
        snap, snap_shared, snap_cluster = self._snap, self._snap_shared, self._snap_cluster
        last_s, first = self._last_s, self._first
        sh0, sh1, sh2 = self.shared.tolist()
        books = self.meter.books.totals
        consumed_j, carbon_g = float(books.consumed_j), float(books.carbon_g)  # np.array([...]).tolist()
        n_agents = self.n
        d_sh0, d_sh1, d_sh2 = sh0, sh1, sh2
        own_rows, comps_rows, dt_s, was_first = [], [], [], []
        for g in ids:
            used = boff[g] + bw[g] * now
            liability = owed[g] + (aprice[g] * used if used > 0 else 0.0) / J_PER_KWH
            own = (value[g], settled[g] + liability, eoff[g] + pw[g] * now, lat_off[g] + lat_rate[g] * now, misses[g])
            own_rows.append(own)
            b = 5 * g
            s0, s1, s2, s3, s4 = snap[b:b + 5]
            b = 3 * g
            h0, h1, h2 = snap_shared[b:b + 3]
            b = 2 * g
            c0, c1 = snap_cluster[b:b + 2]
            d_own = (own[0] - s0, own[1] - s1, own[2] - s2, own[3] - s3, own[4] - s4)
            d_shared = ((sh0 - h0) / n_agents, (sh1 - h1) / n_agents, (sh2 - h2) / n_agents)
            d_consumed, d_carbon = consumed_j - c0, carbon_g - c1
            carbon_kg = (d_own[2] * d_carbon / d_consumed if d_consumed > 0 else 0.0) / 1000.0
            comps_rows.append((d_own[0], d_own[1], d_own[2] / J_PER_KWH, carbon_kg, d_own[3] + d_shared[0],
                               d_own[4] + d_shared[1], d_shared[2]))
            dt_s.append(now - last_s[g])
            was_first.append(first[g])
        n = len(ids)
        comps = np.array(comps_rows, dtype=np.float64).reshape(n, len(REWARD_COMPONENTS))
        reward = comps @ self.weights
        if self.team_fraction > 0:
            team = self._team_now()
            team_reward = ((team[None, :] - self.snap_team[idx]) @ self.weights) / self.n
            reward = (1.0 - self.team_fraction) * reward + self.team_fraction * team_reward
            self.snap_team[idx] = team
        fb = Feedback(reward, np.array(dt_s, dtype=np.float64), np.array(was_first, dtype=bool), comps)
        returns = self._returns
        for i, (g, r) in enumerate(zip(ids, reward.tolist())):
            b = 5 * g
            snap[b], snap[b + 1], snap[b + 2], snap[b + 3], snap[b + 4] = own_rows[i]
            b = 3 * g
            snap_shared[b], snap_shared[b + 1], snap_shared[b + 2] = d_sh0, d_sh1, d_sh2
            b = 2 * g
            snap_cluster[b], snap_cluster[b + 1] = consumed_j, carbon_g
            last_s[g] = now
            first[g] = 0
            returns[g] += r
        return fb
