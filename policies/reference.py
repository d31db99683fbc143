"""Fixed reference rules built from the learners' own action set: what a learner could at least achieve.

A :class:`ReferenceRule` picks one :class:`~dcsim.learning.BidAction` per deciding agent from a price test and
bids it exactly as a learning policy would (:func:`dcsim.learning.bids_from_actions`): no deferral, no sleep,
every job admitted at once. So the best reference rule on a scenario is a score that the learners' action set
can express and their learning should find (issue 14). ``dcsim train --reference NAME[:key=value,...]`` adds
such rules as arms of the held-out evaluation.

The rule: ``cheap`` when the round's price is at most ``price_multiple`` × p0, else ``dear``. A constant rule
sets both to the same action. :data:`REFERENCE_RULES` names the presets.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from dcsim import learning
from dcsim.errors import PolicyError
from dcsim.kernel_rules import BID_ACTIONS, KernelRule
from dcsim.learning import BidAction, bids_from_actions
from dcsim.policy import AgentObservation, Bids, GpuState, Policy

#: Named presets: name → ``(cheap, dear, price_multiple)``.
REFERENCE_RULES: dict[str, tuple[str, str, float]] = {
    # issue 14's rule: full power while p <= e·p0 (the Q-table's own middle price bin edge), else the minimum cap
    "full_cheap_else_min": ("FULL", "MIN_CAP", math.e),
    # the same price test, pacing to the deadline instead of the minimum cap when power is dear
    "full_cheap_else_pace": ("FULL", "PACE", math.e),
    # price_threshold's bid without its deferral: the minimum cap at any price, the rest at <= 2 p0
    "floor_limit": ("FLOOR_THEN_LIMIT", "FLOOR_THEN_LIMIT", math.e),
    # the minimum cap at any price, the rest at <= the job's value per kWh
    "floor_value": ("FLOOR_THEN_VALUE", "FLOOR_THEN_VALUE", math.e),
    # deadline_slack's pacing without its deferral
    "pace": ("PACE", "PACE", math.e),
}


def _action(field: str, value: Any) -> BidAction:
    if isinstance(value, str) and value in BidAction.__members__:
        return BidAction[value]
    raise PolicyError(f"policy 'reference': {field}={value!r}; allowed: {', '.join(BidAction.__members__)}")


class ReferenceRule(Policy):
    """A fixed price rule over :class:`~dcsim.learning.BidAction`: ``cheap`` at p <= ``price_multiple``·p0, else ``dear``.

    Args:
        rule: A preset of :data:`REFERENCE_RULES` (its values are the defaults of the next three), or None.
        cheap: Action name when the price is at most ``price_multiple`` × p0.
        dear: Action name otherwise.
        price_multiple: The price test's limit, × p0 (> 0).
        cheap_multiple: ``FULL_IF_CHEAP``'s limit, × p0 (as the learners' parameter).
        block_limit_multiple: ``FLOOR_THEN_LIMIT``'s limit on the block above the minimum cap, × p0.
        pace_safety: ``PACE`` plans to finish by now + (deadline − now) / pace_safety (>= 1).
    """

    name = "reference"

    def __init__(self, rule: str | None = None, cheap: str | None = None, dear: str | None = None,
                 price_multiple: float | None = None, cheap_multiple: float = 1.1, block_limit_multiple: float = 2.0,
                 pace_safety: float = 1.25):
        super().__init__()
        if rule is not None and rule not in REFERENCE_RULES:
            raise PolicyError(f"policy 'reference': rule={rule!r}; allowed: {', '.join(REFERENCE_RULES)}")
        preset = REFERENCE_RULES.get(rule, ("FULL", "FULL", math.e))
        self.rule = rule
        self.cheap = _action("cheap", cheap if cheap is not None else preset[0])
        self.dear = _action("dear", dear if dear is not None else preset[1])
        self.price_multiple = float(price_multiple if price_multiple is not None else preset[2])
        for field, value, low in (("price_multiple", self.price_multiple, 0.0), ("cheap_multiple", cheap_multiple, 0.0),
                                  ("block_limit_multiple", block_limit_multiple, 0.0)):
            if not (value > low and math.isfinite(value)):
                raise PolicyError(f"policy 'reference': {field}={value!r}; allowed: a finite number > 0")
        if not pace_safety >= 1:
            raise PolicyError(f"policy 'reference': pace_safety={pace_safety!r}; allowed: a number >= 1")
        self.cheap_multiple, self.block_limit_multiple = float(cheap_multiple), float(block_limit_multiple)
        self.pace_safety = float(pace_safety)

    def actions(self, obs: AgentObservation) -> np.ndarray:
        """The rule's :class:`BidAction` per row (``FULL`` where there is no running job: that bid is ignored)."""
        m = obs.market
        cheap = m.price_tokens_per_kwh <= self.price_multiple * m.base_price_tokens_per_kwh
        chosen = int(self.cheap if cheap else self.dear)
        if len(obs) <= learning.SMALL_BATCH:  # a job starting: the same choice row by row, as Python values
            full, active = int(BidAction.FULL), int(GpuState.ACTIVE)
            return np.array([chosen if has and state == active else full
                             for state, has in obs.rows("state", "has_job")], dtype=np.int64)
        deciding = obs.has_job & (obs.state == GpuState.ACTIVE)
        return np.where(deciding, chosen, int(BidAction.FULL)).astype(np.int64)

    def bid(self, obs: AgentObservation) -> Bids:
        return bids_from_actions(self.actions(obs), obs, self.cheap_multiple, self.block_limit_multiple,
                                 self.pace_safety)

    def kernel_rule(self) -> KernelRule:
        """The compiled form (dcsim.kernel_rules.BID_ACTIONS): the same price test and bids, in the kernel."""
        return KernelRule(bid=BID_ACTIONS, bid_params=(self.price_multiple, int(self.cheap), int(self.dear),
                                                       self.cheap_multiple, self.block_limit_multiple,
                                                       self.pace_safety))

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "cheap": self.cheap.name, "dear": self.dear.name,
                "price_multiple": self.price_multiple, "cheap_multiple": self.cheap_multiple,
                "block_limit_multiple": self.block_limit_multiple, "pace_safety": self.pace_safety}


def parse_reference(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:key=value,...]`` (a preset, or ``rule`` for a custom one) → ``(label, params)`` for ReferenceRule.

    Raises:
        PolicyError: An unknown preset, a malformed ``key=value`` or a bad parameter, naming the spec.
    """
    import yaml

    name, _, rest = spec.partition(":")
    name = name.strip()
    params: dict[str, Any] = {}
    if name != "rule":
        if name not in REFERENCE_RULES:
            raise PolicyError(f"--reference {spec!r}: unknown rule {name!r}; allowed: {', '.join(REFERENCE_RULES)}, "
                              "or rule:cheap=ACTION,dear=ACTION,price_multiple=X")
        params["rule"] = name
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PolicyError(f"--reference {spec!r}: {item!r} is not key=value, e.g. "
                              "full_cheap_else_min:price_multiple=2")
        try:
            params[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise PolicyError(f"--reference {spec!r}: the value of {key.strip()!r} is not YAML: {raw!r}") from None
    try:
        ReferenceRule(**params)
    except TypeError as exc:
        raise PolicyError(f"--reference {spec!r}: {exc}; allowed keys: cheap, dear, price_multiple, "
                          "cheap_multiple, block_limit_multiple, pace_safety") from None
    except PolicyError as exc:
        raise PolicyError(f"--reference {spec!r}: {exc}") from None
    return f"ref:{spec}", params
