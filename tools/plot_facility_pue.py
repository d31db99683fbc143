"""Plot steady-state PUE against outdoor temperature for the cooling model's default plants (docs/facility.md).

    python tools/plot_facility_pue.py [--epw PATH] [--out docs/img/facility/pue_vs_outdoor.png]

Curves: air-cooled chiller without and with an air-side economiser (against dry-bulb). With an EPW
file (default: the shared San Jose file, if present), also each hourly record of a water-cooled
chiller with a water-side economiser (it follows the wet-bulb, so it is a cloud against dry-bulb).
IT load: 80 % of the design power.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dcsim.facility.cooling import CoolingModel, CoolingParams, read_epw_temperatures

ROOT = Path(__file__).resolve().parents[1]
SHARED_EPW = ROOT.parent / "shared" / "traces" / "weather" / "USA_CA_San.Jose-Mineta.epw"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epw", type=Path, default=SHARED_EPW)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "facility" / "pue_vs_outdoor.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    design_w = 1e6
    it_w = 0.8 * design_w
    dry = np.linspace(-10, 45, 221)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for economiser, label in (("none", "air-cooled chiller"), ("air", "air-cooled + air-side economiser")):
        model = CoolingModel(CoolingParams(design_it_power_w=design_w, economiser=economiser))
        ax.plot(dry, model.steady_pue(it_w, dry), label=label)
    if args.epw.is_file():
        weather = read_epw_temperatures(args.epw)
        water = CoolingModel(CoolingParams(design_it_power_w=design_w, condenser="water", economiser="water"))
        pue = water.steady_pue(it_w, weather["dry_bulb_c"].to_numpy(), weather["wet_bulb_c"].to_numpy())
        ax.scatter(weather["dry_bulb_c"], pue, s=2, alpha=0.3, color="tab:green",
                   label=f"water-cooled + water-side economiser ({args.epw.stem}, hourly)")
    ax.set_xlabel("outdoor dry-bulb temperature (°C)")
    ax.set_ylabel("steady-state PUE")
    ax.set_title("Cooling model defaults, IT at 80 % of design")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
