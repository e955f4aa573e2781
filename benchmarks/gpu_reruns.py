"""Whether a trial run again in a fresh process gives the same numbers, with and without
`deterministic = true` (`search.executor.DETERMINISTIC_XLA_FLAGS`); meant for a GPU.

    python benchmarks/gpu_reruns.py                 # 4 lstm trials (ptb, arith; lr 1-5), paper preset

Each mode runs the same trials in two fresh processes through the search's own worker
(`search.executor.TrialWorker`, without Ray: the worker sets `XLA_FLAGS` before jax starts its
backend, as on a cluster) and compares the validation NLLs. On a CPU both modes are exact.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, write  # noqa: E402

TRIALS = (("ptb", 1.0), ("ptb", 5.0), ("arith", 2.0), ("arith", 5.0))


def child(mode: str, steps: int) -> None:
    """In this process: the trials through a TrialWorker; prints one JSON list of rows."""
    import tempfile

    from search.executor import DETERMINISTIC_XLA_FLAGS, TrialWorker

    worker = TrialWorker(None, tempfile.mkdtemp(), DETERMINISTIC_XLA_FLAGS if mode == "deterministic" else "")
    from tasks import HParams, TrialSpec

    rows = []
    for task, lr in TRIALS:
        spec = TrialSpec.from_preset("lstm", task, "paper", HParams(lr=lr, clip=20.0), 0, {"steps": steps})
        row = worker.run(spec)
        rows.append({"task": task, "lr": lr, "status": row["status"], "valid_nll": row.get("valid_nll"),
                     "xla_flags": row["xla_flags"], "device": row["device"]})  # fmt: skip
    print(json.dumps(rows))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="train steps per trial")
    parser.add_argument("--out", default="benchmarks/results/gpu_reruns")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run the trials here
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.steps)
    runs = {}
    for mode in ("deterministic", "default"):
        runs[mode] = [json.loads(subprocess.run(
            [sys.executable, __file__, "--child", mode, "--steps", str(args.steps)],
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]) for _ in range(2)]  # fmt: skip
    lines = [f"lstm, paper preset, {args.steps} steps; each mode's trials in two fresh processes.", "",
             "| task | lr | deterministic: NLL 1st / 2nd run | default: NLL 1st / 2nd run | default: relative difference |",
             "|---|---|---|---|---|"]  # fmt: skip
    for i, (task, lr) in enumerate(TRIALS):
        d1, d2 = (r[i]["valid_nll"] for r in runs["deterministic"])
        p1, p2 = (r[i]["valid_nll"] for r in runs["default"])
        diff = abs(p1 - p2) / abs(p2) if p1 is not None and p2 else float("nan")
        lines.append(f"| {task} | {lr} | {d1:.6f} / {d2:.6f} | {p1:.6f} / {p2:.6f} | {diff:.1e} |")
    exact = {mode: all(a["valid_nll"] == b["valid_nll"] for a, b in zip(*r)) for mode, r in runs.items()}
    lines += ["", f"Bit-identical reruns: deterministic {exact['deterministic']}, default {exact['default']}."]
    m = machine()
    write({"machine": m, "steps": args.steps, "runs": runs, "identical": exact}, args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
