"""A paper-scale run store: loading it into pandas, its leaderboard and its report.

    python benchmarks/store_scale.py                                 # 230,000 trials, 10,000 cells
    python benchmarks/store_scale.py --trials 20000 --cells 1000 --rounds 2          # shorter

The paper trained about 230,000 hyperparameter settings of about 10,000 cells. The script writes a
run store of that size (`synthesize`: real cells, trial rows shaped like real ones) and then times,
each in a fresh interpreter as a user's command runs, with its peak resident memory:
- loading its trials into pandas three ways, alternated within each round: `results.load`; the
  pandas one-liner `pd.read_json(path, lines=True)`; and `json.loads` per line into
  `pd.DataFrame` with the garbage collector running, which is how `results.load` read stores
  before session 14;
- `cellsearch leaderboard RUN --top 10` and `cellsearch report RUN`; with `--base REV`, also both
  at that git revision (its packages extracted with `git archive`), paired against the working
  tree's. Before session 14 the report took time quadratic in the cells, so give `--base` a
  smaller store:

    python benchmarks/store_scale.py --trials 20000 --cells 500 --base 0768309 --rounds 2

The table gives min/median/max over rounds and the paired ratios (seconds / the working tree's).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import extract_revision, machine, summary, write  # noqa: E402

# benchmarks/results/ would shadow the `results` package
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]

import numpy as np  # noqa: E402

from cells import PAPER_CELLS, baseline  # noqa: E402
from results import read_jsonl  # noqa: E402
from search.mutation import mutate  # noqa: E402
from search.strategies import CellRecord  # noqa: E402

ROOT = HERE.parent
TEMPLATE = ROOT / "docs" / "reproduction-quick" / "search"  # real rows whose shape the store copies
SEARCH_TASKS = ("arith", "xml", "ptb")
PACKAGES = ("cells", "tasks", "search", "results", "analysis")

LOADERS = {
    "results.load": "from results import load; frame = load({run!r})",
    "pd.read_json": "import pandas as pd; frame = pd.read_json({trials!r}, lines=True)",
    "json + DataFrame": "import json, pandas as pd; "
                        "frame = pd.DataFrame([json.loads(line) for line in open({trials!r}, 'rb')])",
}  # fmt: skip


def synthesize(out: pathlib.Path, trials: int, cells: int, seed: int = 0) -> None:
    """Writes a run store of `trials` trials of `cells` distinct cells.

    The cells are the paper's ten baselines and mutants of earlier cells (`search.mutation.mutate`,
    deduplicated by hash), as a search finds them. The LSTM and the GRU get 2% of the trials each
    (a search re-runs its references), the other cells an equal share. Each trial copies a real
    row of the same task from `TEMPLATE` (all its fields, loss curve included) and draws its cell,
    hyperparameters, seed and score (the template's times 0.3-1.1; 5% diverged, score None).
    """
    rng = np.random.default_rng(seed)
    records = [CellRecord(baseline(name), name, "baseline") for name in PAPER_CELLS]
    seen = {r.graph.hash for r in records}
    while len(records) < cells:
        parent = records[int(rng.integers(len(records)))]
        child = mutate(parent.graph, rng)
        if child.graph.hash not in seen:
            seen.add(child.graph.hash)
            records.append(CellRecord(child.graph, None, "mutation", child.parent, child.transforms))
    templates: dict[str, list[dict]] = {}
    for row in read_jsonl(TEMPLATE / "trials.jsonl"):
        if row["task"] in SEARCH_TASKS and row["status"] == "ok":
            templates.setdefault(row["task"], []).append(row)
    out.mkdir(parents=True)
    shutil.copy(TEMPLATE / "run.toml", out / "run.toml")
    with open(out / "cells.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record.row() | {"round": 0}) + "\n")
    references = [i for i, r in enumerate(records) if r.name in ("lstm", "gru")]
    with open(out / "trials.jsonl", "w") as f:
        for trial in range(trials):
            if rng.random() < 0.02 * len(references):
                record = records[references[int(rng.integers(len(references)))]]
            else:
                record = records[int(rng.integers(len(records)))]
            task = SEARCH_TASKS[int(rng.integers(len(SEARCH_TASKS)))]
            template = templates[task][int(rng.integers(len(templates[task])))]
            diverged = rng.random() < 0.05
            row = template | {
                "trial": trial, "round": trial // 1000, "cell_hash": record.graph.hash,
                "cell_name": record.name, "cell": record.name, "origin": record.origin,
                "cell_text": record.graph.text(), "seed": int(rng.integers(2**31)),
                "lr": float(rng.choice([0.1, 0.2, 0.5, 1.0, 2.0, 5.0])),
                "clip": float(rng.choice([1.0, 2.5, 5.0, 10.0, 20.0])),
                "init_scale": float(rng.choice([0.3, 0.7, 1.0, 1.4, 2.0])),
                "status": "diverged" if diverged else "ok",
                "score": None if diverged else template["score"] * float(rng.uniform(0.3, 1.1)),
            }  # fmt: skip
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def timed(command: list[str], cwd: pathlib.Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak resident memory in MB) of a command run to completion in `cwd`, whose
    packages it imports first (the default: the working tree's)."""
    env = os.environ | ({"PYTHONPATH": str(cwd)} if cwd else {})
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=cwd or ROOT, env=env)  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=230_000)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", help="where to write the store (default: a temporary directory, "
                        "removed after); an existing store there is reused")  # fmt: skip
    parser.add_argument("--base", help="git revision whose leaderboard and report to time too")
    parser.add_argument("--out", default=str(HERE / "results" / "store_scale"))
    args = parser.parse_args(argv)

    scratch = tempfile.TemporaryDirectory(prefix="store_scale_")
    run = pathlib.Path(args.store) if args.store else pathlib.Path(scratch.name) / "run"
    if not (run / "trials.jsonl").exists():
        start = time.perf_counter()
        synthesize(run, args.trials, args.cells)
        print(f"wrote {run} in {time.perf_counter() - start:.0f} s")
    size_mb = (run / "trials.jsonl").stat().st_size / 1e6
    trials = len(open(run / "trials.jsonl", "rb").read().splitlines())
    cli = [sys.executable, "-m", "search.cli"]
    commands = {name: [sys.executable, "-c", code.format(run=str(run), trials=str(run / "trials.jsonl"))]
                for name, code in LOADERS.items()}  # fmt: skip
    commands["cellsearch leaderboard"] = [*cli, "leaderboard", str(run), "--top", "10"]
    commands["cellsearch report"] = [*cli, "report", str(run), "--out", str(pathlib.Path(scratch.name) / "report")]
    where = dict.fromkeys(commands)  # command -> the extracted revision it runs in (None: this tree)
    if args.base:
        base = pathlib.Path(scratch.name) / "base"
        extract_revision(args.base, PACKAGES, base, exclude=("tasks/data",))
        for name in ("cellsearch leaderboard", "cellsearch report"):
            commands[f"{name} @ {args.base}"] = commands[name]
            where[f"{name} @ {args.base}"] = base
    measured = {name: {"seconds": [], "peak_mb": []} for name in commands}
    for round_index in range(args.rounds):
        order = list(commands) if round_index % 2 == 0 else list(commands)[::-1]
        for name in order:
            seconds, peak = timed(commands[name], where[name])
            measured[name]["seconds"].append(seconds)
            measured[name]["peak_mb"].append(peak)
            print(f"round {round_index}: {name}: {seconds:.1f} s, {peak:.0f} MB", flush=True)
    scratch.cleanup()

    # what each row is paired against: the other loaders against results.load, a command at the
    # base revision against the same command in this tree
    against = {name: "results.load" for name in LOADERS if name != "results.load"}
    against |= {name: name.split(" @ ")[0] for name in commands if where[name] is not None}
    rows = []
    results = {"machine": machine(), "trials": trials, "cells": args.cells, "trials_mb": size_mb,
               "rounds": args.rounds, "measured": {}}  # fmt: skip
    for name, m in measured.items():
        entry = {"seconds": summary(m["seconds"]), "peak_mb": summary(m["peak_mb"])}
        ratio = "-"
        if name in against:
            ratios = [theirs / mine for theirs, mine in zip(m["seconds"], measured[against[name]]["seconds"])]
            entry["seconds_over_ours"] = summary(ratios)
            ratio = f"{np.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"
        results["measured"][name] = entry
        s, p = entry["seconds"], entry["peak_mb"]
        rows.append(f"| {name} | {s['min']:.1f} / {s['median']:.1f} / {s['max']:.1f} | "
                    f"{p['median']:.0f} | {ratio} |")  # fmt: skip
    table = "\n".join([
        f"{trials:,} trials of {args.cells:,} cells, trials.jsonl {size_mb:.0f} MB; {args.rounds} rounds, "
        "each command in a fresh interpreter.", "",
        "| what | seconds, min / median / max | peak memory, MB (median) | seconds / this tree's, paired |",
        "|---|---|---|---|", *rows,
    ])  # fmt: skip
    write(results, args.out, table)


if __name__ == "__main__":
    main()
