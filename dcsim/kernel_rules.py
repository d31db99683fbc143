"""Compiled forms of the built-in rules: what a rule decides at events, as codes and numbers the kernel can read.

A rule policy whose per-event decisions are a fixed formula of the state (the baselines of :mod:`policies.rules`)
describes them with :meth:`KernelRule` from its ``kernel_rule()`` method. A run of such a policy can then take the
compiled per-job path (:mod:`dcsim.compiled`): the kernel makes the bid of a starting job's agents, the admission
of an arriving deferrable job and the choice of GPUs that just ran out of work with the same floating-point
operations, in the same order, as the rule's Python methods, and logs each decision as the Python path does.
Market rounds stay in Python and call the policy's own methods.

A subclass that overrides one of ``bid``, ``admit`` or ``on_idle`` without overriding ``kernel_rule`` as well is
not taken for the compiled form (:func:`kernel_rule_of`): its decisions are its own. (A class that defines
``kernel_rule`` describes its own methods and those it inherits.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# bid of a starting job's agents
BID_NONE, BID_TRUTHFUL, BID_TWO_BLOCKS, BID_RENEWABLE_SHARE, BID_PACE, BID_ACTIONS, BID_QTABLE, BID_DQN = range(8)
#: The bids of a learner the kernel decides (and learns) for: its state is handed over by dcsim.compiled.
LEARNER_BIDS = (BID_QTABLE, BID_DQN)
# BID_ACTIONS: dcsim.learning.BidAction values
(ACTION_FULL, ACTION_FULL_IF_CHEAP, ACTION_HALF, ACTION_MIN_CAP, ACTION_PAUSE, ACTION_FLOOR_THEN_VALUE,
 ACTION_FLOOR_THEN_LIMIT, ACTION_PACE) = range(8)
# admission of an arriving deferrable job
ADMIT_NONE, ADMIT_PRICE_ABOVE, ADMIT_RENEWABLE_BELOW, ADMIT_SLACK = 0, 1, 2, 3
# what GPUs that ran out of work do
IDLE_NONE, IDLE_STAY, IDLE_SLEEP = 0, 1, 2

_METHODS = ("bid", "admit", "on_idle")


@dataclass(frozen=True)
class KernelRule:
    """A rule's per-event decisions in compiled form.

    Attributes:
        bid: ``BID_*``: ``BID_TRUTHFUL`` (:class:`~policies.rules.Truthful`), ``BID_TWO_BLOCKS`` (a block up to the
            minimum cap at any price and the rest at ``bid_params[0]``: :class:`~policies.rules.PriceThreshold`),
            ``BID_RENEWABLE_SHARE`` (the share ``max(bid_params[0], renewable fraction)`` of the dynamic range:
            :class:`~policies.rules.RenewableFollower`), ``BID_PACE`` (the deadline's pace with safety
            ``bid_params[0]``: :func:`dcsim.learning.pace_power_w`), ``BID_ACTIONS`` (a
            :class:`~dcsim.learning.BidAction` by a price test, as :class:`~policies.reference.ReferenceRule`:
            ``bid_params`` = (price multiple, cheap action, dear action, cheap multiple, block-limit multiple,
            pace safety)), ``BID_QTABLE`` (each agent's ε-greedy :class:`~dcsim.learning.BidAction` from a
            Q-table, learning or frozen, :class:`~policies.qlearning.QLearning`; ``bid_params[3:6]`` as
            ``BID_ACTIONS``; the tables, bins, transition buffers and the reward meter's buffers are handed over by
            :mod:`dcsim.compiled`), ``BID_DQN`` (the same with a :class:`~policies.dqn.DQN`'s acting network, its
            replay ring and its learning rounds).
        admit: ``ADMIT_*``: defer while the price is above ``admit_params[0]`` (``ADMIT_PRICE_ABOVE``), while the
            renewable fraction is below it (``ADMIT_RENEWABLE_BELOW``), or while the price is above
            ``admit_params[1]`` × p0 and the slack allows waiting with safety ``admit_params[0]`` (``ADMIT_SLACK``).
        on_idle: ``IDLE_STAY`` or ``IDLE_SLEEP`` for every GPU that ran out of work; ``IDLE_NONE``: not decided.
    """

    bid: int = BID_NONE
    bid_params: tuple[float, ...] = ()
    admit: int = ADMIT_NONE
    admit_params: tuple[float, ...] = ()
    on_idle: int = IDLE_NONE

    def decides(self, method: str) -> bool:
        return {"bid": self.bid != BID_NONE, "admit": self.admit != ADMIT_NONE,
                "on_idle": self.on_idle != IDLE_NONE}[method]

    def params(self) -> list[float]:
        """The eight numbers the kernel reads: six of the bid's, two of the admission's (unused ones NaN)."""
        if len(self.bid_params) > 6 or len(self.admit_params) > 2:
            raise ValueError("a KernelRule takes at most six bid and two admission numbers")
        bid = [float(v) for v in self.bid_params] + [math.nan] * (6 - len(self.bid_params))
        admit = [float(v) for v in self.admit_params] + [math.nan] * (2 - len(self.admit_params))
        return bid + admit


def _defined_in(cls: type, name: str) -> type | None:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def kernel_rule_of(policy) -> tuple[KernelRule | None, str | None]:
    """The policy's compiled form and None, or None and why it has none (its decisions then stay in Python)."""
    decides = [m for m in _METHODS if policy.overrides(m)]
    if not decides:
        return KernelRule(), None
    maker = getattr(policy, "kernel_rule", None)
    rule = maker() if maker is not None else None
    why = f"the policy decides at events ({', '.join(decides)}) in Python"
    if rule is None:
        return None, why + " and has no compiled form"
    home = _defined_in(type(policy), "kernel_rule")
    for m in decides:
        if not issubclass(home, _defined_in(type(policy), m)) or not rule.decides(m):
            return None, why + f"; its {m} is not the one its compiled form describes"
    for m in _METHODS:
        if rule.decides(m) and m not in decides:
            return None, why + f"; its compiled form decides {m}, which the policy does not"
    return rule, None
