"""Train steps per second of baseline cells on tasks at a preset, contenders alternated by round.

    python benchmarks/train_throughput.py                 # lstm, gru on ptb, arith at quick
    python benchmarks/train_throughput.py --cells lstm gru mut1 --tasks arith --rounds 7

Each round trains every (cell, task) once, in turn, for `--steps` steps through the real
`train_trial` path (data generation included); a warm-up trial per contender compiles its program
first, so the figures exclude compilation. Reports min/median/max steps/s over the rounds, and each
cell's median ratio to the first cell on the same task.
"""

from __future__ import annotations

import argparse
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, summary, write  # noqa: E402

from tasks import HParams, TrialSpec, train_trial  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--tasks", nargs="+", default=["ptb", "arith"])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--steps", type=int, default=200, help="steps per timed trial")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/train_throughput")
    args = parser.parse_args(argv)

    def spec(cell, task):
        overrides = {"steps": args.steps, "eval_sequences": 1}
        return TrialSpec.from_preset(cell, task, args.preset, HParams(lr=0.5, clip=5.0), 0, overrides)

    contenders = [(c, t) for t in args.tasks for c in args.cells]
    for cell, task in contenders:  # warm-up: compile every program before timing
        train_trial(spec(cell, task))
    rates = {f"{c}/{t}": [] for c, t in contenders}
    for round_ in range(args.rounds):
        order = contenders if round_ % 2 == 0 else contenders[::-1]
        for cell, task in order:
            result = train_trial(spec(cell, task))
            assert result.status == "ok", result.error
            rates[f"{cell}/{task}"].append(result.steps_done / result.train_seconds)
    results = {"machine": machine(), "preset": args.preset, "steps": args.steps,
               "rounds": args.rounds, "steps_per_second": {k: summary(v) for k, v in rates.items()}}
    lines = ["| cell | task | steps/s min | median | max | ratio to " + args.cells[0] + " (median) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for cell, task in contenders:
        s = results["steps_per_second"][f"{cell}/{task}"]
        ratio = s["median"] / results["steps_per_second"][f"{args.cells[0]}/{task}"]["median"]
        lines.append(f"| {cell} | {task} | {s['min']:.1f} | {s['median']:.1f} | {s['max']:.1f} "
                     f"| {ratio:.2f} |")  # fmt: skip
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
