"""Compile seconds of a new cell's programs (cold, and warm from the persistent cache in a second
process), recompiles across a sweep of settings, and the wall time to screen a new mutant.

    python benchmarks/compile_and_screen.py                  # 10 mutants of lstm and gru
    python benchmarks/compile_and_screen.py --mutants 4 --sweep 5

A "screen" is what the paper's loop does to every new mutant: one trial on `memorize` at the
preset's budget with one random setting, compilation included. Each process uses a fresh
persistent-cache directory, so the first process measures cold compiles; a second process then
compiles the same programs again from that cache (warm). Compile seconds are the trainer's own AOT
measurement (`compile_seconds` of the row): the train program and the evaluation program.
"""

from __future__ import annotations

import argparse
import json
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


def measure(texts: list[str], preset: str, sweep: int, cache: str) -> dict:
    """In this process: screen each cell (timed), then a sweep of settings of the first cell."""
    import time

    import jax

    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from tasks import HParams, TrialSpec, sample_settings, train_trial

    screens, compiles = [], []
    for text in texts:
        spec = TrialSpec.from_preset(text, "memorize", preset, HParams(lr=1.0, clip=5.0))
        start = time.perf_counter()
        result = train_trial(spec)
        screens.append(time.perf_counter() - start)
        compiles.append(result.compile_seconds)
    sweep_compiles = []
    for hp in sample_settings(("sweep",), sweep, grid={"lr": (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
                                                      "clip": (1.0, 2.5, 5.0, 10.0, 20.0),
                                                      "init_scale": (0.3, 0.7, 1.0, 1.4, 2.0, 2.8)}):  # fmt: skip
        spec = TrialSpec.from_preset(texts[0], "memorize", preset, hp)
        sweep_compiles.append(train_trial(spec).compile_seconds)
    return {"screen_seconds": screens, "compile_seconds": compiles, "sweep_compile_seconds": sweep_compiles}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=10)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--sweep", type=int, default=20, help="settings of one cell (lr, clip, init)")
    parser.add_argument("--out", default="benchmarks/results/compile_and_screen")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run `measure` in this process
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(measure(job["texts"], job["preset"], job["sweep"], job["cache"])))
        return
    texts = cells(args.mutants)
    with tempfile.TemporaryDirectory(prefix="jaxcache-") as cache:
        runs = []
        for _ in ("cold", "warm"):  # two processes, one cache: the second reads what the first wrote
            job = json.dumps({"texts": texts, "preset": args.preset, "sweep": args.sweep, "cache": cache})
            done = subprocess.run([sys.executable, __file__, "--child", job], capture_output=True,
                                  text=True, check=True)  # fmt: skip
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    results = {"machine": machine(), "preset": args.preset, "cells": len(texts), "sweep": args.sweep,
               "cold": {k: summary(v) for k, v in cold.items()},
               "warm": {k: summary(v) for k, v in warm.items()}}  # fmt: skip
    recompiles = sum(s > 0 for s in cold["sweep_compile_seconds"][1:])
    rows = [
        ("compile seconds of a new cell (train + eval programs, memorize)", "compile_seconds"),
        ("screen seconds of a new cell (one memorize trial, compile included)", "screen_seconds"),
    ]
    lines = [f"| what | cold min | median | max | warm cache (2nd process) median |", "|---|---|---|---|---|"]
    for label, key in rows:
        c, w = summary(cold[key]), summary(warm[key])
        lines.append(f"| {label} | {c['min']:.2f} | {c['median']:.2f} | {c['max']:.2f} | {w['median']:.2f} |")
    lines.append(f"| recompiles across a {args.sweep}-setting sweep of one cell (lr, clip, init) | "
                 f"{recompiles} of {args.sweep - 1} | | | |")
    results["sweep_recompiles"] = recompiles
    results["median_screen_seconds"] = statistics.median(cold["screen_seconds"])
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
