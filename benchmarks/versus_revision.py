"""Train and eval speed of the trainer's programs at a git revision vs the working tree, side by side.

    python benchmarks/versus_revision.py --base 2cc665a                 # lstm on ptb, arith, jsb
    python benchmarks/versus_revision.py --base HEAD~3 --cells gru --tasks ptb --preset paper

How a change to `cells/` or `tasks/` moves the speed of real trials, measured honestly on a noisy
machine: the base revision's `cells` and `tasks` packages are extracted with `git archive` and
imported under other names (`cells_base`, `tasks_base`) into THIS process, so both versions run
alternately on the same core, data and parameters' shapes. Each contender builds the trainer's
`Program` for the preset's budget (one layer, no dropout) and runs its jitted train call (
`steps_per_call` SGD steps) and its jitted evaluation call (as many batches) on the same
batches; rounds alternate the order. The table gives ms per SGD step (min/median/max over
rounds), the paired ratio base / now (above 1: now is faster), how far the two programs' losses on
the first call differ, the same paired ratio for ms per evaluated batch, and the ms per step each
version's task spends generating training batches (which the trainer does between calls). The base
revision must have the same `Program` constructor (from 2cc665a on). Compile time is not measured
here (two identical programs would share JAX's in-memory cache): `compile_and_screen.py --base`
pairs it the same way, clearing the caches before each compile.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import re
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import extract_revision, machine, summary, write  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))  # benchmarks/results would shadow the results package
PACKAGES = ("cells", "tasks")
_IMPORT = re.compile(r"^(\s*)(from|import) (cells|tasks)\b", re.MULTILINE)
# a module named in a string, as the packages' lazy imports name theirs (`importlib.import_module(
# "cells.compile")`): left alone, the base's `cells_base.compile_cell` was the working tree's, and
# comparisons of changes to `cells/compile.py` or `cells/scan.py` ran one code twice (from 64b354b
# until session 40; benchmarks/README.md)
_MODULE_STRING = re.compile(r"([\"'])(cells|tasks)(\.\w)")


def import_revision(revision: str, into: pathlib.Path) -> dict:
    """Imports `cells` and `tasks` as of `revision` as `cells_base` and `tasks_base`.

    Returns:
      {"cells": module, "tasks": module, "trainer": module, "commit": full hash}.
    """
    commit = extract_revision(revision, PACKAGES, into, exclude=("tasks/data",))
    for package in PACKAGES:
        source, target = into / package, into / f"{package}_base"
        source.rename(target)
        for path in target.rglob("*.py"):
            text = _IMPORT.sub(r"\1\2 \3_base", path.read_text())
            path.write_text(_MODULE_STRING.sub(r"\1\2_base\3", text))
    (into / "tasks_base" / "data").symlink_to(ROOT / "tasks" / "data")  # the same data files
    sys.path.insert(0, str(into))
    return {"cells": importlib.import_module("cells_base"),
            "tasks": importlib.import_module("tasks_base"),
            "trainer": importlib.import_module("tasks_base.trainer"), "commit": commit}  # fmt: skip


def contender(trainer, cell: str, task_name: str, preset: str, chunk=None, hidden=None):
    """One jitted train call and one eval call of `trainer`'s Program on `chunk` (default: its own
    task's first batches), as functions; a function generating one call's batches; the first
    call's losses; the shapes; and its own first batches. `hidden` replaces the preset's H."""
    import dataclasses

    import jax
    import numpy as np

    spec = trainer.TrialSpec.from_preset(cell, task_name, preset)
    task, budget = spec.make_task(), spec.budget
    if hidden is not None:
        budget = dataclasses.replace(budget, hidden=hidden)
    seq_len = task.sequence_length(budget.seq_len)
    k = budget.steps_per_call
    prog = trainer.Program(spec.graph(), task, 1, budget.hidden, budget.batch, seq_len, k, False)
    f32 = np.float32
    params = prog.init(jax.random.key(0), f32(1.0))
    carry = trainer.zero_carry(1, budget.batch, budget.hidden)
    stream = task.train_batches(budget.batch, seq_len, 0)
    own = trainer._stack([next(stream) for _ in range(k)])
    chunk = own if chunk is None else chunk
    args = (params, carry, chunk, f32(0.1), f32(5.0), f32(0.0), jax.random.key(1))

    def run():
        return prog.call("train", *args)[2]  # the per-step losses

    def evaluate():
        return prog.call("eval", params, carry, chunk)[1]  # the summed statistics

    def generate():  # what the trainer does for each call besides the program: k new batches
        return trainer._stack([next(stream) for _ in range(k)])

    losses = np.asarray(run())  # compiles
    jax.block_until_ready(evaluate())
    shape = {"hidden": budget.hidden, "batch": budget.batch, "seq_len": seq_len,
             "steps_per_call": k, "outputs": task.n_outputs}  # fmt: skip
    return {"train": run, "eval": evaluate}, generate, losses, shape, own


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--cells", nargs="+", default=["lstm"])
    parser.add_argument("--tasks", nargs="+", default=["ptb", "arith", "jsb"])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--hidden", type=int, help="H instead of the preset's, for both versions")
    parser.add_argument("--calls", type=int, default=3, help="jitted train calls per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/versus_revision")
    args = parser.parse_args(argv)
    import jax
    import numpy as np

    import tasks.trainer as now_trainer

    with tempfile.TemporaryDirectory(prefix="cellsearch-base-") as tmp:
        base = import_revision(args.base, pathlib.Path(tmp))
        results = {"machine": machine(), "base": base["commit"], "preset": args.preset,
                   "hidden": args.hidden, "rounds": args.rounds, "calls": args.calls,
                   "runs": {}}  # fmt: skip
        width = f", H = {args.hidden}" if args.hidden else ""
        lines = [f"Base {base['commit'][:12]} against the working tree; "
                 f"preset `{args.preset}`{width}.", "",
                 "| cell | task | H, B x T, outputs | ms/step base (min / median / max) | now | "
                 "base / now (paired, median [min, max]) | losses agree (max rel. diff) | "
                 "eval ms/batch base / now (median) | eval base / now (paired) | "
                 "data ms/step base / now (median) |",
                 "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for cell in args.cells:
            for task_name in args.tasks:
                runners, generators, losses, chunk = {}, {}, {}, None
                for name, trainer in (("now", now_trainer), ("base", base["trainer"])):
                    # both programs train on the working tree's batches, so their losses compare
                    runners[name], generators[name], losses[name], shape, own = contender(
                        trainer, cell, task_name, args.preset, chunk, args.hidden)  # fmt: skip
                    chunk = own if chunk is None else chunk
                runners = {name: runners[name] for name in ("base", "now")}
                times = {name: [] for name in runners}
                evals = {name: [] for name in runners}
                data = {name: [] for name in runners}
                per_step = args.calls * shape["steps_per_call"]
                for round_ in range(args.rounds):
                    for name in (list(runners) if round_ % 2 == 0 else list(runners)[::-1]):
                        for kind, record in (("train", times), ("eval", evals)):
                            start = time.perf_counter()
                            for _ in range(args.calls):
                                out = runners[name][kind]()
                            jax.block_until_ready(out)
                            record[name].append(1e3 * (time.perf_counter() - start) / per_step)
                        start = time.perf_counter()
                        for _ in range(args.calls):
                            generators[name]()
                        data[name].append(1e3 * (time.perf_counter() - start) / per_step)
                paired = [b / n for b, n in zip(times["base"], times["now"])]
                paired_eval = [b / n for b, n in zip(evals["base"], evals["now"])]
                eval_b, eval_n = summary(evals["base"]), summary(evals["now"])
                agree = float(np.max(np.abs(losses["base"] - losses["now"])
                                     / np.maximum(np.abs(losses["base"]), 1e-6)))  # fmt: skip
                b, n = summary(times["base"]), summary(times["now"])
                data_b, data_n = statistics.median(data["base"]), statistics.median(data["now"])
                results["runs"][f"{cell}/{task_name}"] = {
                    "shape": shape, "base_ms": b, "now_ms": n, "loss_rel_diff": agree,
                    "paired": summary(paired), "eval_base_ms": eval_b, "eval_now_ms": eval_n,
                    "eval_paired": summary(paired_eval), "data_ms_per_step": {"base": summary(data["base"]),
                                                                    "now": summary(data["now"])}}  # fmt: skip
                lines.append(
                    f"| {cell} | {task_name} | {shape['hidden']}, {shape['batch']} x "
                    f"{shape['seq_len']}, {shape['outputs']} | {b['min']:.2f} / {b['median']:.2f} / "
                    f"{b['max']:.2f} | {n['min']:.2f} / {n['median']:.2f} / {n['max']:.2f} | "
                    f"{statistics.median(paired):.2f} [{min(paired):.2f}, {max(paired):.2f}] | "
                    f"{agree:.1e} | {eval_b['median']:.2f} / {eval_n['median']:.2f} | "
                    f"{statistics.median(paired_eval):.2f} [{min(paired_eval):.2f}, "
                    f"{max(paired_eval):.2f}] | {data_b:.3f} / {data_n:.3f} |")  # fmt: skip
                print(lines[-1], flush=True)
        write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
