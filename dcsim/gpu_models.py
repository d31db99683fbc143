"""GPU power figures: datasheet TDP and minimum cap, observed idle, and the power-clock exponent."""
from __future__ import annotations

from dataclasses import dataclass



@dataclass(frozen=True)
class GpuPowerSpec:
    """Power figures of one GPU model.

    Attributes:
        name: Model name.
        tdp_w: Board power limit at full clock and full utilisation, W.
        idle_w: Power when powered on with no work, W.
        min_cap_w: Lowest power cap the board accepts, W; a job given less cannot run and pauses.
        sleep_w: Power in the low-power SLEEP state, W (a model assumption: node suspended).
        off_w: Power when off, W.
        gamma: Exponent of power in clock fraction, ``P = idle + (tdp - idle) * u * f**gamma``.
        utilisation: ``u`` of a running job (fraction of the dynamic range it draws at full clock).
        source: Where the figures come from.
    """

    name: str
    tdp_w: float
    idle_w: float
    min_cap_w: float
    sleep_w: float
    off_w: float
    gamma: float
    utilisation: float
    source: str

    @property
    def full_power_w(self) -> float:
        """Power of a running job at full clock, W."""
        return self.idle_w + (self.tdp_w - self.idle_w) * self.utilisation


#: Figures from public datasheets and nvidia-smi logs (see docs/model.md for sources and assumptions).
GPU_MODELS: dict[str, GpuPowerSpec] = {
    "V100": GpuPowerSpec(
        "V100", tdp_w=300.0, idle_w=56.6, min_cap_w=150.0, sleep_w=10.0, off_w=0.0, gamma=2.5, utilisation=1.0,
        source="V100 SXM2-32GB: TDP 300 W, min power limit 150 W, idle 56.6 W (nvidia-smi -q, NVIDIA/nvidia-docker#1076)",
    ),
    "A100": GpuPowerSpec(
        "A100", tdp_w=400.0, idle_w=60.0, min_cap_w=100.0, sleep_w=10.0, off_w=0.0, gamma=2.5, utilisation=1.0,
        source="A100 SXM4: TDP 400 W, min power limit 100 W (nvidia-smi -q, NVIDIA/nvidia-docker#1648, NVIDIA/DCGM#152); "
        "idle 60 W is an assumption (15% of TDP, the V100's observed ratio is 19%), not a measurement",
    ),
    "H100": GpuPowerSpec(
        "H100", tdp_w=700.0, idle_w=78.8, min_cap_w=200.0, sleep_w=10.0, off_w=0.0, gamma=2.5, utilisation=1.0,
        source="H100 SXM5-80GB: TDP 700 W (NVIDIA), min power limit 200 W and idle 78.8 W "
        "(nvidia-smi -q -d power, stackhpc/ansible-slurm-appliance#975)",
    ),
}
