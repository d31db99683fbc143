"""Named, reproducible random streams derived from one root seed."""
from __future__ import annotations

import zlib

import numpy as np

#: The streams components use. Workload and supply streams are shared by every policy run with the
#: same seed (common random numbers), so differences between policies come from the policies.
STREAM_NAMES = ("arrivals", "service", "supply", "failures", "market", "policy")


class Streams:
    """Hands out one independent ``numpy.random.Generator`` per name, derived with ``SeedSequence``.

    A stream's draws depend only on the root seed and the stream's name, never on which other
    streams were used or in what order.

    Args:
        root_seed: The run's one integer seed (>= 0).
    """

    def __init__(self, root_seed: int):
        if root_seed < 0:
            raise ValueError(f"seed must be >= 0, got {root_seed}")
        self.root_seed = int(root_seed)

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        """The SeedSequence behind stream ``name`` (stable across Python versions and runs)."""
        return np.random.SeedSequence(entropy=self.root_seed, spawn_key=(zlib.crc32(name.encode("utf-8")),))

    def generator(self, name: str) -> np.random.Generator:
        """A fresh generator for stream ``name``; calling twice gives two identical generators."""
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))
