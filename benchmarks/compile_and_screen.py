"""Compile seconds of a new cell's programs (cold, and warm in later processes), recompiles across a
sweep of settings, and the wall time to screen a new mutant.

    python benchmarks/compile_and_screen.py                  # 10 mutants of lstm and gru
    python benchmarks/compile_and_screen.py --mutants 4 --sweep 5

A "screen" is what the paper's loop does to every new mutant: one trial on `memorize` at the
preset's budget with one random setting, compilation included. The first process compiles every
cell into a fresh cache directory, as a Ray worker does (`tasks.use_compilation_cache`: JAX's
persistent cache and the executable store); later processes compile the same cells again from it
(warm), alternately with the executable store (a program loaded untraced) and with JAX's persistent
cache alone (traced and lowered, then XLA's compile read from the cache). Compile seconds are the
trainer's own AOT measurement (`compile_seconds` of the row): the train program and the evaluation
program, also apart (issue 8 asks for the train step's), and split into phases
(`Program.compile_phases`): JAX's tracing, its lowering, XLA's compile, the store's load, lookup
and write.

    python benchmarks/compile_and_screen.py --base HEAD~3    # also: paired against a revision

Compile seconds of separate runs are hard to compare on a shared machine (the median moved from 1.1
to 1.5 s within an hour, same code). With `--base`, a third process imports that revision's
`cells` and `tasks` beside the working tree's (`versus_revision.import_revision`) and compiles each
cell's train and eval programs with both, alternately, clearing JAX's caches before each.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, summary, write  # noqa: E402


def cells(mutants: int) -> list[str]:
    """lstm, gru and `mutants` distinct mutants of them (seeded), as cell text."""
    import numpy as np

    from cells import baseline
    from search.mutation import Deduper, mutate

    rng = np.random.default_rng(0)
    seen, out = Deduper(), [baseline("lstm").text(), baseline("gru").text()]
    for text in out:
        seen.add(baseline("lstm" if "c_new" in text else "gru"))
    while len(out) < 2 + mutants:
        child = mutate(baseline(["lstm", "gru"][len(out) % 2]), rng).graph
        if seen.add(child):
            out.append(child.text())
    return out


def measure(texts: list[str], preset: str, sweep: int, cache: str, store: bool = True) -> dict:
    """In this process: screen each cell (timed), then a sweep of settings of the first cell.

    With `store`, compiled programs are kept as a Ray worker keeps them (`use_compilation_cache`:
    JAX's persistent cache and the executable store); without, in JAX's persistent cache alone.
    """
    import time

    from tasks import HParams, TrialSpec, sample_settings, train_trial, use_compilation_cache

    use_compilation_cache(cache, executables=store)
    screens, compiles, train_compiles = [], [], []
    phases = {"trace": [], "lower": [], "compile": [], "load": [], "lookup": [], "store": []}
    for text in texts:
        spec = TrialSpec.from_preset(text, "memorize", preset, HParams(lr=1.0, clip=5.0))
        start = time.perf_counter()
        result = train_trial(spec)
        screens.append(time.perf_counter() - start)
        compiles.append(result.compile_seconds)
        by_function = spec.program(spec.make_task()).compile_phases
        train_compiles.append(sum(by_function["train"].values()))
        for phase in phases:
            phases[phase].append(sum(function.get(phase, 0.0) for function in by_function.values()))
    sweep_compiles = []
    for hp in sample_settings(("sweep",), sweep, grid={"lr": (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
                                                      "clip": (1.0, 2.5, 5.0, 10.0, 20.0),
                                                      "init_scale": (0.3, 0.7, 1.0, 1.4, 2.0, 2.8)}):  # fmt: skip
        spec = TrialSpec.from_preset(texts[0], "memorize", preset, hp)
        sweep_compiles.append(train_trial(spec).compile_seconds)
    return {"screen_seconds": screens, "compile_seconds": compiles, "train_compile_seconds": train_compiles,
            "sweep_compile_seconds": sweep_compiles,
            "trace_seconds": phases["trace"], "lower_seconds": phases["lower"],
            "compile_seconds_xla": phases["compile"], "load_seconds": phases["load"],
            "store_seconds": [a + b for a, b in zip(phases["lookup"], phases["store"])]}


def paired(texts: list[str], preset: str, base_revision: str, rounds: int) -> dict:
    """In this process: each cell's compile seconds (train + eval programs) at `base_revision` and
    in the working tree, alternately."""
    import jax

    import tasks.trainer as now
    from versus_revision import import_revision

    seconds = {"base": [], "now": []}
    with tempfile.TemporaryDirectory(prefix="cellsearch-base-") as tmp:
        base = import_revision(base_revision, pathlib.Path(tmp))
        for turn in range(rounds):
            for i, text in enumerate(texts):
                order = [("now", now), ("base", base["trainer"])][:: 1 if (i + turn) % 2 else -1]
                for name, trainer in order:
                    jax.clear_caches()  # or the second of two identical programs compiles for free
                    seconds[name].append(compile_seconds(trainer, text, preset))
    return seconds | {"commit": base["commit"]}


def compile_seconds(trainer, text: str, preset: str) -> float:
    """`trainer`'s compile seconds of one cell's train and eval programs (memorize, one layer)."""
    import jax
    import numpy as np

    spec = trainer.TrialSpec.from_preset(text, "memorize", preset)
    task, budget = spec.make_task(), spec.budget
    seq_len, k = task.sequence_length(budget.seq_len), budget.steps_per_call
    prog = trainer.Program(spec.graph(), task, 1, budget.hidden, budget.batch, seq_len, k, False)
    f32 = np.float32
    params, carry = prog.init(jax.random.key(0), f32(1.0)), trainer.zero_carry(1, budget.batch, budget.hidden)
    stream = task.train_batches(budget.batch, seq_len, 0)
    chunk = trainer._stack([next(stream) for _ in range(k)])
    prog.call("train", params, carry, chunk, f32(0.1), f32(5.0), f32(0.0), jax.random.key(1))
    prog.call("eval", params, carry, chunk)
    return prog.compile_seconds


def in_child(job: dict) -> dict:
    """Runs `job` (`measure`, or `paired` if it names a base) in a fresh Python process."""
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=10)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--sweep", type=int, default=20, help="settings of one cell (lr, clip, init)")
    parser.add_argument("--base", help="also compile each cell at this git revision, paired")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the cells with --base")
    parser.add_argument("--warm-rounds", type=int, default=2,
                        help="warm processes with the executable store, and as many without it")
    parser.add_argument("--out", default="benchmarks/results/compile_and_screen")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run `measure` in this process
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        if "base" in job:
            print(json.dumps(paired(job["texts"], job["preset"], job["base"], job["rounds"])))
        else:
            print(json.dumps(measure(job["texts"], job["preset"], job["sweep"], job["cache"], job["store"])))
        return
    texts = cells(args.mutants)
    job = {"texts": texts, "preset": args.preset}
    with tempfile.TemporaryDirectory(prefix="jaxcache-") as cache:
        # one cache for every process: the first compiles and writes, the others read; warm
        # processes with and without the executable store alternate
        cold = in_child(job | {"sweep": args.sweep, "cache": cache, "store": True})
        warm = {True: [], False: []}
        for turn in range(args.warm_rounds):
            for store in (True, False)[:: 1 if turn % 2 == 0 else -1]:
                warm[store].append(in_child(job | {"sweep": 0, "cache": cache, "store": store}))
    warm = {store: {key: [x for run in runs for x in run[key]] for key in runs[0]}
            for store, runs in warm.items()}  # fmt: skip
    seconds = in_child(job | {"base": args.base, "rounds": args.rounds}) if args.base else None
    results = {"machine": machine(), "preset": args.preset, "cells": len(texts), "sweep": args.sweep,
               "warm_rounds": args.warm_rounds, "cold": {k: summary(v) for k, v in cold.items()},
               "warm": {k: summary(v) for k, v in warm[True].items() if v},  # warm: no sweep
               "warm_jax_cache_only": {k: summary(v) for k, v in warm[False].items() if v}}  # fmt: skip
    recompiles = sum(s > 0 for s in cold["sweep_compile_seconds"][1:])
    rows = [
        ("compile seconds of a new cell (train + eval programs, memorize)", "compile_seconds"),
        ("... the train program alone (issue 8's \"train step\")", "train_compile_seconds"),
        ("... both programs' tracing by JAX, to jaxprs", "trace_seconds"),
        ("... both programs' lowering by JAX, to StableHLO", "lower_seconds"),
        ("... both programs' XLA compile (warm: read from JAX's persistent cache)", "compile_seconds_xla"),
        ("... both programs loaded from the executable store, untraced", "load_seconds"),
        ("... the executable store's lookup and write on a miss", "store_seconds"),
        ("screen seconds of a new cell (one memorize trial, compile included)", "screen_seconds"),
    ]
    lines = ["| what | cold min | median | max | warm, 2nd process: median | max | warm, JAX's cache "
             "alone: median |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, key in rows:
        c, w, j = summary(cold[key]), summary(warm[True][key]), summary(warm[False][key])
        lines.append(f"| {label} | {c['min']:.3f} | {c['median']:.3f} | {c['max']:.3f} | "
                     f"{w['median']:.3f} | {w['max']:.3f} | {j['median']:.3f} |")  # fmt: skip
    lines.append(f"| recompiles across a {args.sweep}-setting sweep of one cell (lr, clip, init) | "
                 f"{recompiles} of {args.sweep - 1} | | | | | |")
    if seconds:
        ratios = [b / n for b, n in zip(seconds["base"], seconds["now"])]
        results["paired"] = {"base": seconds["commit"], "rounds": args.rounds,
                             "base_seconds": summary(seconds["base"]), "now_seconds": summary(seconds["now"]),
                             "base_over_now": summary(ratios)}  # fmt: skip
        b, n, r = summary(seconds["base"]), summary(seconds["now"]), summary(ratios)
        lines += ["", f"Paired in one process against {seconds['commit'][:12]} ({len(ratios)} compiles each, "
                  "alternating; train + eval programs, memorize):", "",
                  "| compile seconds | min | median | max |", "|---|---|---|---|",
                  f"| base | {b['min']:.2f} | {b['median']:.2f} | {b['max']:.2f} |",
                  f"| now | {n['min']:.2f} | {n['median']:.2f} | {n['max']:.2f} |",
                  f"| base / now (paired) | {r['min']:.2f} | {r['median']:.2f} | {r['max']:.2f} |"]  # fmt: skip
    results["sweep_recompiles"] = recompiles
    results["median_screen_seconds"] = statistics.median(cold["screen_seconds"])
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
