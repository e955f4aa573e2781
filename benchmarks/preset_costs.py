"""What a trial costs at each preset, and what a reproduction costs: core-hours on this CPU.

    python benchmarks/preset_costs.py                          # small and paper presets
    python benchmarks/preset_costs.py --presets small --tasks ptb --layers 1 4

A search's worker trains on one core, so this process pins itself to one core before JAX starts.
For each (preset, task, layer count) it trains the LSTM (lr 0.2, clip 5, init scale 1: a setting
that does not diverge) for `--calls` + 1 jitted calls, its program compiled beforehand by a trial
of one call, then evaluates it exactly as a trial does (the whole validation and test sets where
the preset says so). A full trial's cost is projected as (the preset's steps) / (the measured
steps per second) + the evaluation's seconds; compiling is listed apart (a search compiles a
cell's program once per worker, then loads it). The sampler draws the layer count uniformly from
{1, 2, 3, 4}, so a task's expected trial is the mean over the four (with fewer measured, a line
through them taken at 2.5). Trials that diverge stop early and cost less, trials with dropout a
little more, other cells about what the LSTM does (the GRU does a little less work per step).

The reproduction's cost then follows from its configs: the baselines run's trials are what its
strategy proposes (cells x tasks x settings, twice on the dropout tasks); a search's mix of tasks
depends on what passes its screen, so the search is priced per 1,000 trials split over tasks as in
a stored run (`--mix`, default the committed quick reproduction's search).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, write  # noqa: E402  (imports no jax: the core is pinned first)

sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]  # (results/)
ROOT = HERE.parent
TASKS = ("memorize", "arith", "xml", "ptb", "jsb", "nottingham", "musedata", "piano")


def measure(preset: str, task: str, layers: int, calls: int) -> dict:
    """Trains the LSTM for `calls` + 1 jitted calls at a preset's sizes; returns its timings."""
    from tasks import HParams, TrialSpec, train_trial
    from tasks.hparams import preset as preset_of

    budget = preset_of(preset, task).budget
    steps = (calls + 1) * budget.steps_per_call
    hparams = HParams(lr=0.2, clip=5.0, init_scale=1.0, layers=layers)
    short = TrialSpec.from_preset("lstm", task, preset, hparams, budget_overrides={"steps": steps})
    once = {"steps": budget.steps_per_call, "eval_sequences": 1}  # evaluating one batch
    first = TrialSpec.from_preset("lstm", task, preset, hparams, budget_overrides=once)
    warm = train_trial(first)  # compiles the train program, as a search's worker does once
    result = train_trial(short)
    if result.status != "ok":
        raise RuntimeError(f"{preset}/{task}/{layers} layers: {result.status} {result.error}")
    steps_per_second = result.steps_done / result.train_seconds
    return {
        "preset": preset, "task": task, "layers": layers, "steps": budget.steps,
        "hidden": budget.hidden, "steps_per_second": steps_per_second,
        "eval_seconds": result.eval_seconds, "compile_seconds": warm.compile_seconds,
        "trial_seconds": budget.steps / steps_per_second + result.eval_seconds,
    }  # fmt: skip


def expected_seconds(group: list[dict]) -> float:
    """A trial's core-seconds over the grid's layer counts: their mean where all were measured,
    else a line through those measured, taken at the grid's mean."""
    import numpy as np

    from tasks.hparams import GRID

    layers = np.array([r["layers"] for r in group], float)
    seconds = np.array([r["trial_seconds"] for r in group])
    if set(layers) == set(GRID["layers"]) or len(set(layers)) < 2:
        return float(seconds.mean())
    slope, intercept = np.polyfit(layers, seconds, 1)
    return float(intercept + slope * np.mean(GRID["layers"]))


def baselines_trials(config) -> dict[str, int]:
    """Trials per task of a `baselines` run: what its strategy proposes, up to `max_trials`."""
    from search.strategies import baselines_trials as trials

    return dict(collections.Counter(p.task for p in trials(config)))


def stored_run(run: pathlib.Path) -> tuple[str, dict[str, float], dict[str, float]]:
    """A stored run's preset, its share of trials on each task, and its trials' mean core-seconds
    (training + evaluation) on each task: what the projection of that preset should come near."""
    from results import RunStore, load

    frame = load(run, loss_curves=False)
    frame["task"] = frame["task"].astype(str)
    seconds = (frame["train_seconds"] + frame["eval_seconds"]).groupby(frame["task"]).mean()
    shares = frame["task"].value_counts(normalize=True).sort_index()
    preset = RunStore(run).metadata()["config"]["preset"]
    return preset, shares.to_dict(), seconds.to_dict()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["quick", "small", "paper"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--calls", type=int, default=4, help="timed jitted calls per measurement")
    parser.add_argument("--mix", default=str(ROOT / "docs" / "reproduction-quick" / "search"),
                        help="a stored search: its share of trials per task prices a search, and "
                        "its trials' mean seconds check the projection of its preset")  # fmt: skip
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "preset_costs"))
    args = parser.parse_args(argv)

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, before JAX starts
    rows = []
    for preset, task, layers in itertools.product(args.presets, args.tasks, args.layers):
        rows.append(row := measure(preset, task, layers, args.calls))
        print(f"{preset:6} {task:10} {layers} layers: {row['steps_per_second']:8.1f} steps/s, "
              f"eval {row['eval_seconds']:6.1f} s, trial {row['trial_seconds']:8.1f} s", flush=True)

    expected = collections.defaultdict(dict)  # preset -> task -> core-seconds of a trial
    for (preset, task), group in _groups(rows).items():
        expected[preset][task] = expected_seconds(group)
    mix_preset, mix, stored_seconds = stored_run(pathlib.Path(args.mix))
    runs = {preset: reproduction_cost(preset, expected[preset], mix) for preset in args.presets}
    stored = {"run": args.mix, "preset": mix_preset, "shares": mix,
              "mean_trial_seconds": stored_seconds}  # fmt: skip
    results = {"machine": machine(), "calls": args.calls, "stored_run": stored,
               "measurements": rows, "expected_trial_seconds": expected, "runs": runs}  # fmt: skip
    write(results, args.out, _table(rows, expected, runs, stored, args.layers))


def reproduction_cost(preset: str, trial_seconds: dict[str, float], mix: dict[str, float]) -> dict:
    """Core-hours of `reproduce --preset`'s two runs, from the expected trial on each task (None
    where a task was not measured) and a search's share of trials per task."""
    from search.config import load_config

    counts = baselines_trials(load_config(ROOT / "configs" / f"baselines-{preset}.toml"))
    search = load_config(ROOT / "configs" / f"{preset}.toml")

    def hours(trials: dict[str, float]) -> float | None:
        if not all(task in trial_seconds for task in trials):
            return None
        return sum(n * trial_seconds[task] for task, n in trials.items()) / 3600

    baselines, per_1000 = hours(counts), hours({task: 1000 * share for task, share in mix.items()})
    both = None
    if baselines is not None and per_1000 is not None:
        both = baselines + per_1000 * search.max_trials / 1000
    return {"baselines_trials": counts, "baselines_core_hours": baselines,
            "search_max_trials": search.max_trials, "search_core_hours_per_1000": per_1000,
            "reproduction_core_hours": both}  # fmt: skip


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups = collections.defaultdict(list)
    for row in rows:
        groups[row["preset"], row["task"]].append(row)
    return groups


def _table(rows, expected, runs, stored, layers) -> str:
    per_layers = " / ".join(str(n) for n in layers)
    lines = [f"| preset | task | H | steps | steps/s, {per_layers} layers | evaluation s "
             f"| compile s | trial s, {per_layers} layers | expected trial (mean) "
             "| the stored run's trials (mean) |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (preset, task), group in _groups(rows).items():
        first = group[0]
        seen = stored["mean_trial_seconds"].get(task) if preset == stored["preset"] else None
        lines.append(
            f"| {preset} | {task} | {first['hidden']} | {first['steps']:,} "
            f"| {_joined(group, 'steps_per_second')} | {_joined(group, 'eval_seconds')} "
            f"| {_joined(group, 'compile_seconds')} | {_joined(group, 'trial_seconds')} "
            f"| {_duration(expected[preset][task])} "
            f"| {'-' if seen is None else _duration(seen)} |"
        )  # fmt: skip
    shares = ", ".join(f"{task} {share:.0%}" for task, share in stored["shares"].items())
    lines += ["", "| preset | baselines run: trials | core-hours | search: core-hours per 1,000 "
              f"trials ({shares}) | search trials (max_trials) | `reproduce`: core-hours |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for preset, run in runs.items():
        lines.append(f"| {preset} | {sum(run['baselines_trials'].values()):,} "
                     f"| {_hours(run['baselines_core_hours'])} "
                     f"| {_hours(run['search_core_hours_per_1000'])} "
                     f"| {run['search_max_trials']:,} "
                     f"| {_hours(run['reproduction_core_hours'])} |")  # fmt: skip
    return "\n".join(lines)


def _joined(group: list[dict], key: str) -> str:
    return " / ".join(format(row[key], ".1f" if row[key] < 10 else ".0f") for row in group)


def _hours(hours: float | None) -> str:
    if hours is None:
        return "-"
    return f"{hours:,.1f}" if hours >= 1 else f"{hours:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    main()
