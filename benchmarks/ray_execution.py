"""Execution on Ray: trials/hour with 1 and 2 workers, and what the driver and store cost per trial.

    python benchmarks/ray_execution.py                       # 2 rounds, 64 trials per contender
    python benchmarks/ray_execution.py --trials 8 --rounds 1 --search-trials 200      # shorter

1. Throughput: a local Ray (loopback, as `cellsearch search` starts it) with 1 and then 2 pinned
   worker actors trains the same `--trials` small trials (lstm and gru on arith at the quick
   preset, distinct hyperparameters). Each worker first trains one trial of each cell untimed (so
   it has compiled both), then the executor runs all of them, timed. Rounds alternate the order of
   1 and 2 workers.
2. Overhead: the real search loop (`search.loop.run_search`, configs/quick.toml, the paper's
   strategy with its mutations, hashing and screens, and the JSONL store) runs `--search-trials`
   trials on 2 Ray workers whose trial function does nothing but build the row. Its wall time per
   trial (Ray started before the clock) is the cost of the driver, Ray and the store; its share is
   that cost over the wall time per trial of real trials with 2 workers (part 1).
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, summary, write  # noqa: E402

# benchmarks/results/ would shadow the `results` package that the search loop imports
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]

from search.config import load_config  # noqa: E402
from search.executor import RayExecutor, TrialWorker  # noqa: E402
from search.loop import run_search  # noqa: E402
from tasks import GRID, TrialSpec, sample_settings  # noqa: E402

ROOT = HERE.parent


class NoTrainingWorker(TrialWorker):
    """A worker whose trial builds a plausible row and trains nothing."""

    def run(self, spec):
        import random

        from tasks import TrialResult

        score = random.Random(f"{spec.cell}/{spec.task}/{spec.seed}").random()
        return TrialResult(spec, "ok", score=score, steps_done=spec.budget.steps).row()


def small_trials(count: int, steps: int) -> list[TrialSpec]:
    grid = {name: GRID[name] for name in ("lr", "clip", "init_scale")}
    settings = sample_settings(("ray-benchmark",), count, grid=grid)
    return [TrialSpec.from_preset(("lstm", "gru")[i % 2], "arith", "quick", hp, i, {"steps": steps})
            for i, hp in enumerate(settings)]  # fmt: skip


def throughput(workers: int, jobs: list[TrialSpec]) -> tuple[float, int, float]:
    """Trials/hour of `jobs` on a fresh local Ray with `workers` actors, the error count, and the
    share of the workers' time spent idle at the end (the drain).

    Once the queue is empty, each worker that finishes its last trial waits for the slowest one;
    a search of thousands of trials pays that once, a batch of `len(jobs)` pays it every round.
    """
    rows, finished = [], []

    def on_row(tid, row):
        finished.append(time.perf_counter())
        rows.append(row)

    with RayExecutor(workers=workers) as executor:
        # every worker trains one trial of each cell untimed, so that the timed part compiles nothing
        # (a warm-up over the job list in order does not do that: with 2 workers and the cells
        # alternating, each worker got one cell and compiled the other in the timed part)
        import ray  # here, not at the top: RayExecutor sets Ray's environment before its import

        warm_up = [jobs[i] for i in range(min(2, len(jobs)))]
        ray.get([actor.run.remote(spec) for actor in executor.actors for spec in warm_up])
        start = time.perf_counter()
        executor.run(list(enumerate(jobs)), on_row)
        seconds = time.perf_counter() - start
    idle = sum(finished[-1] - t for t in finished[len(finished) - workers:-1])
    return (3600 * len(jobs) / seconds, sum(row["status"] == "error" for row in rows),
            idle / (workers * seconds))  # fmt: skip


def search_overhead(trials: int) -> dict:
    """Seconds per trial of the real search loop over trials that do no training."""
    config = load_config(ROOT / "configs" / "quick.toml", {"max_trials": trials})
    with tempfile.TemporaryDirectory() as tmp, \
            RayExecutor(workers=2, worker=NoTrainingWorker) as executor:  # fmt: skip
        start = time.perf_counter()
        summary_ = run_search(config, pathlib.Path(tmp) / "run", lambda: contextlib.nullcontext(executor))
        seconds = time.perf_counter() - start
        store_bytes = sum(p.stat().st_size for p in (pathlib.Path(tmp) / "run").iterdir())
    return {"trials": summary_.trials, "seconds": seconds, "per_trial_ms": 1000 * seconds / summary_.trials,
            "store_bytes": store_bytes}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 64: with 16, the drain at a round's end (one worker idle) cost 2 workers 1-3% (README)
    parser.add_argument("--trials", type=int, default=64, help="timed trials per contender per round")
    parser.add_argument("--steps", type=int, default=300, help="train steps per trial (quick: 300)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--search-trials", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/ray_execution")
    args = parser.parse_args(argv)
    jobs = small_trials(args.trials, args.steps)
    rates: dict[int, list[float]] = {1: [], 2: []}
    drains: list[float] = []  # 2 workers' idle share at the end of each round
    errors = 0
    for round_ in range(args.rounds):
        for workers in (1, 2) if round_ % 2 == 0 else (2, 1):
            rate, failed, drain = throughput(workers, jobs)
            rates[workers].append(rate)
            errors += failed
            if workers == 2:
                drains.append(drain)
            print(f"round {round_}: {workers} worker(s) {rate:.0f} trials/hour, idle at the end "
                  f"{100 * drain:.1f}%", flush=True)
    paired = [b / a for a, b in zip(rates[1], rates[2])]
    overhead = search_overhead(args.search_trials)
    real_ms = 1000 * 3600 / statistics.median(rates[2])
    share = overhead["per_trial_ms"] / real_ms
    results = {"machine": machine(), "trials": args.trials, "steps": args.steps, "rounds": args.rounds,
               "trials_per_hour": {str(w): summary(r) for w, r in rates.items()},
               "ratio_2_over_1": summary(paired), "drain_share_2_workers": summary(drains), "errors": errors, "search_overhead": overhead,
               "real_trial_ms_at_2_workers": real_ms, "overhead_share": share}  # fmt: skip
    lines = [f"Throughput: {args.trials} trials (lstm and gru on arith, quick preset, {args.steps} "
             f"steps, H=32) per contender, {args.rounds} rounds, warm workers; {errors} error rows.", "",
             "| workers | trials/hour min | median | max | 2 workers / 1 (paired) |", "|---|---|---|---|---|"]  # fmt: skip
    for workers, r in rates.items():
        s = summary(r)
        ratio = f"{statistics.median(paired):.2f} [{min(paired):.2f}, {max(paired):.2f}]" if workers == 2 else "-"
        lines.append(f"| {workers} | {s['min']:.0f} | {s['median']:.0f} | {s['max']:.0f} | {ratio} |")
    d = summary(drains)
    lines += ["", f"With 2 workers, one sat idle at the end of each round while the other finished its "
              f"last trial: {100 * d['median']:.1f}% [{100 * d['min']:.1f}, {100 * d['max']:.1f}] of "
              "the workers' time (a search pays this once, not per batch).",
              "", f"Overhead: the quick search loop over {overhead['trials']} trials that train nothing "
              f"(2 Ray workers, Ray already up) took {overhead['seconds']:.1f} s, "
              f"{overhead['per_trial_ms']:.1f} ms per trial ({overhead['store_bytes'] / 1e6:.1f} MB "
              f"stored); a real trial above takes {real_ms:.0f} ms of wall time per trial with 2 "
              f"workers, so the driver, Ray and the store cost {100 * share:.1f}% of it."]  # fmt: skip
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
