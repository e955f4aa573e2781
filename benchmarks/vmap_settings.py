"""K hyperparameter settings of one cell as ONE vmapped program vs K trials one after another.

    python benchmarks/vmap_settings.py                          # lstm on arith, paper preset, K = 20
    python benchmarks/vmap_settings.py --k 4 --steps 40 --hidden 32 --rounds 2     # a CPU smoke run

Both contenders go through the real trainer: `tasks.train_settings(specs)` (one program, K lanes)
and `[tasks.train_trial(s) for s in specs]`, on the same K settings (learning rate, clip and init
scale drawn from the paper's grid, one layer, one seed each), training and evaluation included.
Both programs are compiled before timing. Rounds alternate the order; the table gives trials/s
(min/median/max over rounds) and the paired ratio. The run also checks that the two agree: the
relative difference of the validation NLL per setting (median and largest, over the settings that
did not diverge, each setting's in the JSON), beside the same figure for the sequential trials of
the first round against those of the last: how far one program differs from itself when run again
(on a GPU some reductions are not deterministic, and high learning rates amplify any rounding).
Meant for a GPU: on a CPU the vmapped backward scan is slower (../shared/docs/perf-notes.md).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, summary, write  # noqa: E402

from tasks import GRID, TrialSpec, make_task, sample_settings, train_settings, train_trial  # noqa: E402


def make_specs(args) -> list[TrialSpec]:
    grid = {name: GRID[name] for name in ("lr", "clip", "init_scale")}
    settings = sample_settings((args.cell, args.task, "vmap-benchmark"), args.k, grid=grid)
    overrides = {"steps": args.steps} | ({"hidden": args.hidden} if args.hidden else {})
    return [TrialSpec.from_preset(args.cell, args.task, args.preset, hp, seed, overrides)
            for seed, hp in enumerate(settings)]  # fmt: skip


def relative_differences(rows, reference) -> dict[int, float]:
    """Per setting, |a - b| / |b| of the validation NLL, where both trials finished ok."""
    return {i: abs(a.valid["nll"] - b.valid["nll"]) / abs(b.valid["nll"])
            for i, (a, b) in enumerate(zip(rows, reference))
            if a.status == b.status == "ok"}  # fmt: skip


def spread(differences: dict[int, float]) -> str:
    if not differences:
        return "n/a"
    values = list(differences.values())
    return f"{statistics.median(values):.1e} [{max(values):.1e}]"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--task", default="arith")
    parser.add_argument("--preset", default="paper", help="the budget's sizes (paper: H=128 on arith)")
    parser.add_argument("--hidden", type=int, default=0, help="override H (0: the preset's)")
    parser.add_argument("--steps", type=int, default=200, help="train steps per trial")
    parser.add_argument("--k", type=int, default=20, help="settings per group")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/vmap_settings")
    args = parser.parse_args(argv)
    specs = make_specs(args)
    start = time.perf_counter()
    train_settings(specs)  # compiles the K-lane programs
    train_trial(specs[0])  # compiles the one-trial programs
    warmup = time.perf_counter() - start

    def vmapped():
        return train_settings(specs)

    def sequential():
        return [train_trial(spec) for spec in specs]

    contenders = {"vmapped": vmapped, "sequential": sequential}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    runs: dict[str, list] = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name in contenders if round_ % 2 == 0 else list(contenders)[::-1]:
            start = time.perf_counter()
            runs[name].append(contenders[name]())
            rates[name].append(args.k / (time.perf_counter() - start))
    rows = {name: r[-1] for name, r in runs.items()}
    agree = relative_differences(rows["vmapped"], rows["sequential"])
    repeat = relative_differences(runs["sequential"][0], runs["sequential"][-1])
    # A trial whose NLL ends above the uniform guess's has blown up; from there rounding decides.
    outputs = make_task(args.task).n_outputs
    uniform = math.log(outputs)
    learned = {i: d for i, d in agree.items() if rows["sequential"][i].valid["nll"] < uniform}
    statuses = {name: [r.status for r in rows[name]] for name in rows}
    per_setting = [{"lr": s.hparams.lr, "clip": s.hparams.clip, "init_scale": s.hparams.init_scale,
                    "valid_nll": {name: rows[name][i].valid.get("nll") for name in rows},
                    "relative_difference": agree.get(i)} for i, s in enumerate(specs)]  # fmt: skip
    paired = [a / b for a, b in zip(rates["vmapped"], rates["sequential"])]
    budget = specs[0].budget
    results = {"machine": machine(), "cell": args.cell, "task": args.task, "preset": args.preset,
               "hidden": budget.hidden, "batch": budget.batch, "steps": budget.steps, "k": args.k,
               "rounds": args.rounds, "warmup_seconds": warmup,
               "trials_per_second": {name: summary(r) for name, r in rates.items()},
               "ratio": summary(paired),
               "relative_valid_nll_difference": summary(list(agree.values())) if agree else None,
               "relative_valid_nll_difference_learned": summary(list(learned.values())) if learned else None,
               "same_program_again": summary(list(repeat.values())) if args.rounds > 1 else None,
               "statuses": statuses, "settings": per_setting}  # fmt: skip
    lines = [f"{args.cell} on {args.task} ({args.preset} preset, H={budget.hidden}, batch "
             f"{budget.batch}, {budget.steps} steps), K = {args.k} settings, {args.rounds} rounds; "
             f"compile + first run {warmup:.1f} s before timing.", "",
             "| contender | trials/s min | median | max | vmapped / sequential (paired) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for name, r in rates.items():
        s = summary(r)
        ratio = f"{statistics.median(paired):.2f} [{min(paired):.2f}, {max(paired):.2f}]"
        lines.append(f"| {name} | {s['min']:.2f} | {s['median']:.2f} | {s['max']:.2f} | "
                     f"{ratio if name == 'vmapped' else '-'} |")  # fmt: skip
    lines += ["", f"Agreement: {len(agree)} settings ok in both; relative difference of the "
              f"validation NLL {spread(agree)} (median [largest]); over the {len(learned)} whose NLL "
              f"ends below the uniform guess's (ln {outputs}): "
              f"{spread(learned)}. Statuses equal: {statuses['vmapped'] == statuses['sequential']}."]  # fmt: skip
    if args.rounds > 1:
        lines.append(f"The sequential trials of round 1 against those of round {args.rounds}: "
                     f"{spread(repeat)}.")  # fmt: skip
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
