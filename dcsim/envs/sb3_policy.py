"""SB3's ``MlpPolicy`` with a faster, bit-identical distribution for ``MultiDiscrete`` actions (needs torch and SB3).

SB3's :class:`~stable_baselines3.common.distributions.MultiCategoricalDistribution` builds one
``torch.distributions.Categorical`` per action dimension, with argument validation, at every forward pass: for
the env's ``per_agent`` layout (``2·gpus + slots`` dimensions, 72 on the learn_* scenarios) that is 72 small
distributions per call, and it was most of a PPO training's time (``docs/performance.md``). The env's dimensions
come in a few runs of equal size (a ``BidAction`` per GPU, an ``IdleAction`` per GPU, an ``Admission`` per slot),
so :class:`GroupedMultiCategoricalDistribution` computes each run as one ``(batch, k, n)`` tensor, with the very
operations ``Categorical`` uses in the same order: the same samples (the random draws are taken dimension by
dimension, as SB3 takes them), bit-identical log-probabilities, entropies and gradients, so a training with
:class:`GroupedMlpPolicy` is the training SB3's ``MlpPolicy`` gives (``tests/test_sb3_training.py``).
"""
from __future__ import annotations

import torch as th
from stable_baselines3.common.distributions import MultiCategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy


def equal_runs(dims: list[int]) -> list[tuple[int, int]]:
    """``(size, count)`` of each run of equal consecutive sizes in ``dims``: ``[8, 8, 3] → [(8, 2), (3, 1)]``."""
    runs: list[tuple[int, int]] = []
    for n in dims:
        if runs and runs[-1][0] == n:
            runs[-1] = (n, runs[-1][1] + 1)
        else:
            runs.append((int(n), 1))
    return runs


class GroupedMultiCategoricalDistribution(MultiCategoricalDistribution):
    """:class:`MultiCategoricalDistribution` computed per run of equal-size dimensions (same results, fewer ops).

    ``self.distribution`` is not a list of ``Categorical`` here; the normalised logits of each run
    (``(batch, count, size)``) are in ``self.logits``.
    """

    def __init__(self, action_dims: list[int]):
        super().__init__(action_dims)
        self.runs = equal_runs(list(action_dims))
        self._split = [n * k for n, k in self.runs]

    def proba_distribution(self, action_logits: th.Tensor) -> "GroupedMultiCategoricalDistribution":
        b = action_logits.shape[0]
        self.logits = [lg - lg.logsumexp(-1, keepdim=True)  # Categorical(logits=...)'s normalisation
                       for lg in (part.reshape(b, k, n) for part, (n, k)
                                  in zip(th.split(action_logits, self._split, dim=1), self.runs))]
        self._probs = None
        return self

    @property
    def probs(self) -> list[th.Tensor]:
        if self._probs is None:  # as Categorical.probs: computed on first use
            self._probs = [th.softmax(lg, dim=-1) for lg in self.logits]
        return self._probs

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        parts = th.split(actions.long(), [k for _, k in self.runs], dim=1)
        return th.cat([lg.gather(-1, a.unsqueeze(-1)).squeeze(-1) for lg, a in zip(self.logits, parts)],
                      dim=1).sum(dim=1)

    def entropy(self) -> th.Tensor:
        return th.cat([-(th.clamp(lg, min=th.finfo(lg.dtype).min) * p).sum(-1) for lg, p in zip(self.logits, self.probs)],
                      dim=1).sum(dim=1)

    def sample(self) -> th.Tensor:
        out = []
        for p, (n, k) in zip(self.probs, self.runs):  # dimension-major rows: SB3 draws dimension by dimension
            b = p.shape[0]
            out.append(th.multinomial(p.transpose(0, 1).reshape(k * b, n), 1, True).reshape(k, b).T)
        return th.cat(out, dim=1)

    def mode(self) -> th.Tensor:
        return th.cat([th.argmax(p, dim=-1) for p in self.probs], dim=1)


class GroupedMlpPolicy(ActorCriticPolicy):
    """SB3's ``MlpPolicy`` (the same network, initialised the same way) whose ``MultiDiscrete`` distribution is
    :class:`GroupedMultiCategoricalDistribution`; for other action spaces it is ``MlpPolicy`` itself."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if type(self.action_dist) is MultiCategoricalDistribution:  # the action net is already built, unchanged
            self.action_dist = GroupedMultiCategoricalDistribution(self.action_dist.action_dims)
