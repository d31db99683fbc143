"""Runs one DQN learner in a process of its own and writes what it did, for tests/cerebras.

cerebras.pytorch allows one backend per process, so each backend gets its own run of this
script. Usage (from the repository root, with the Cerebras venv's python):

    python tests/cerebras/_run_backend.py train --learner cerebras-cpu --out run.npz
    python tests/cerebras/_run_backend.py validate --artifacts DIR [--aten-loss]
    python tests/cerebras/_run_backend.py bench --learner torch --steps 500

``train`` writes the per-step losses and the final online and target weights to an .npz;
``validate`` traces and lowers one CSX step offline (``validate_only``) and prints a JSON line;
``bench`` prints a JSON line with steps/s for a 16-64-64-5 network, batch 256, Adam.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from policies.dqn_core import make_learner  # noqa: E402

N_FEATURES, N_ACTIONS = 16, 5


def make_batches(n: int, size: int, seed: int = 7) -> list[dict[str, np.ndarray]]:
    """Fixed random batches; every learner in a comparison gets the same ones."""
    rng = np.random.default_rng(seed)
    return [{"obs": rng.normal(size=(size, N_FEATURES)).astype(np.float32),
             "action": rng.integers(0, N_ACTIONS, size).astype(np.int64),
             "reward": rng.normal(size=size).astype(np.float32),
             "next_obs": rng.normal(size=(size, N_FEATURES)).astype(np.float32),
             # gamma**(dt/tau) with dt/tau in [0, 3), and one transition in ten terminal.
             "discount": (0.99 ** rng.uniform(0, 3, size) * (rng.random(size) > 0.1)).astype(np.float32)}
            for _ in range(n)]


def train(args) -> int:
    kw = dict(n_features=N_FEATURES, n_actions=N_ACTIONS, hidden=(64, 64), optimizer=args.optimizer, lr=args.lr,
              polyak_tau=0.1, grad_clip=args.grad_clip, seed=3)
    learner = make_learner(args.learner, **kw) if args.learner != "torch" else make_learner("torch", device="cpu", **kw)
    initial = learner.online_state_dict()
    batches = make_batches(sum(args.rounds), args.batch)
    losses, start = [], 0
    for n in args.rounds:  # several rounds: several executors on the Cerebras backend
        losses += learner.steps(batches[start:start + n])
        start += n
    sd = learner.state_dict()
    out = {"losses": np.array(losses, dtype=np.float64)}
    out.update({f"initial/{k}": v.numpy() for k, v in initial.items()})
    out.update({f"online/{k}": v.numpy() for k, v in learner.online_state_dict().items()})
    out.update({f"target/{k}": v.numpy() for k, v in sd["target"].items()})
    # Loading weights after training (after compilation, on the Cerebras backend) must reach the
    # network that trains: from the initial weights again, batch 0 gives the first loss again.
    learner.load_online_weights(initial)
    out["reload_online_equal"] = np.array(all(bool((v == initial[k]).all())
                                              for k, v in learner.online_state_dict().items()))
    out["reload_loss"] = np.array(learner.step(batches[0]))
    # A checkpoint round trip through a fresh learner gives the same next step.
    resumed = make_learner(args.learner, **({"device": "cpu"} if args.learner == "torch" else {}), **kw)
    resumed.load_state_dict(learner.state_dict())
    out["resume_losses"] = np.array([learner.step(batches[-1]), resumed.step(batches[-1])])
    if args.learner != "torch":
        # Only one backend per process: asking for another must fail plainly.
        try:
            make_learner("csx", **kw)
        except RuntimeError as exc:
            out["second_backend_error"] = np.array(str(exc))
    np.savez(args.out, **out)
    print(json.dumps({"learner": args.learner, "steps": len(losses), "kind": learner.kind,
                      "steps_done": sd["steps_done"]}))
    return 0


def validate(args) -> int:
    if args.aten_loss:
        # The aten smooth_l1_loss op has no Cerebras lowering: validate_only must reject it.
        import torch

        import policies.dqn_core as core

        init = core.DQNLoss.__init__

        def with_aten_loss(self, *a, loss_fn=None, **k):
            init(self, *a, loss_fn=torch.nn.SmoothL1Loss(), **k)

        core.DQNLoss.__init__ = with_aten_loss
    learner = make_learner("csx", n_features=N_FEATURES, n_actions=N_ACTIONS, optimizer=args.optimizer,
                           validate_only=True, artifact_dir=args.artifacts)
    before = learner.online_state_dict()
    try:
        losses = learner.steps(make_batches(2, 32))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        return 3
    after = learner.online_state_dict()
    unchanged = all(bool((before[k] == after[k]).all()) for k in before)
    mlir = sorted(str(p.relative_to(args.artifacts)) for p in Path(args.artifacts).rglob("*.mlir"))
    print(json.dumps({"ok": True, "losses_nan": bool(np.isnan(losses).all()), "n_losses": len(losses),
                      "weights_unchanged": unchanged, "mlir": mlir}))
    return 0


def bench(args) -> int:
    import torch

    torch.set_num_threads(args.threads)  # the caller's choice, as dcsim's CLI makes it
    kw = dict(n_features=N_FEATURES, n_actions=N_ACTIONS, hidden=(64, 64), optimizer="adam", lr=1e-3, seed=0)
    learner = make_learner(args.learner, **kw) if args.learner != "torch" else make_learner("torch", device="cpu", **kw)
    batches = make_batches(args.steps + 1, 256)
    t0 = time.perf_counter()
    learner.steps(batches[:1])  # first step: compilation on the Cerebras backend
    t1 = time.perf_counter()
    learner.steps(batches[1:])  # one round of args.steps steps
    t2 = time.perf_counter()
    singles = min(args.steps, 20)
    for b in batches[1:singles + 1]:  # one-step rounds, as step() does
        learner.step(b)
    t3 = time.perf_counter()
    print(json.dumps({"learner": args.learner, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "first_step_s": t1 - t0, "round_steps": args.steps,
                      "round_steps_per_s": args.steps / (t2 - t1), "single_step_calls_per_s": singles / (t3 - t2)}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("--learner", choices=["torch", "cerebras-cpu"], required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--optimizer", default="sgd")
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--grad-clip", type=float, default=1.0)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--rounds", type=lambda s: [int(x) for x in s.split(",")], default=[20, 20, 10])
    v = sub.add_parser("validate")
    v.add_argument("--artifacts", required=True)
    v.add_argument("--optimizer", default="adam")
    v.add_argument("--aten-loss", action="store_true")
    b = sub.add_parser("bench")
    b.add_argument("--learner", choices=["torch", "cerebras-cpu"], required=True)
    b.add_argument("--steps", type=int, default=500)
    b.add_argument("--threads", type=int, default=1, help="torch threads (a second one hurts on 2 cores)")
    args = p.parse_args(argv)
    return {"train": train, "validate": validate, "bench": bench}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
