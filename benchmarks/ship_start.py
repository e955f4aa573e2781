"""What shipping code costs a search's start: a local Ray with its workers, ready to train.

    python benchmarks/ship_start.py                    # 4 rounds, 2 workers
    python benchmarks/ship_start.py --rounds 2 --out /tmp/ship_start

The README's two tasks of your own, `reverse.py` alone and `charlm.py` in a package `lab` with a
300 kB corpus, are written to a temporary directory and imported as a search imports them. Each
round starts a fresh local Ray (as `cellsearch search` does) twice, in alternating order: once with
the workers importing cellsearch where it is installed and the tasks from the driver's directories
(the default on one machine), once with cellsearch's five packages (its data inside) and both
modules shipped with the job (`--ship`, the default on a cluster: Ray zips and uploads them, and
each worker's node unpacks them before the worker starts). Timed: `RayExecutor.__enter__`, from
`ray.init` until every worker has started, checked its code and imported both tasks
(`_check_workers`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, summary, write  # noqa: E402

# benchmarks/results/ would shadow the `results` package
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests"))

from search.executor import RayExecutor  # noqa: E402
from searchkit import readme_example  # noqa: E402
from tasks import task_class  # noqa: E402
from tasks.executables import CODE_PACKAGES, package_directory  # noqa: E402
from tasks.usercode import class_source, module_package, search_also  # noqa: E402

TASKS = ("reverse:Reverse", "lab.charlm:CharLM")


def experiment(directory: pathlib.Path) -> None:
    """The README's two tasks of your own, as `tests/test_search.py` lays them out."""
    (directory / "lab").mkdir()
    (directory / "reverse.py").write_text(readme_example("# reverse.py"))
    (directory / "lab" / "__init__.py").write_text("")
    (directory / "lab" / "charlm.py").write_text(readme_example("# charlm.py"))
    corpus = (HERE.parent / "tasks" / "data" / "ptb.train.txt").read_bytes()[:300_000]
    (directory / "lab" / "corpus.txt").write_bytes(corpus)


def start_seconds(workers: int, ship: list[str], sources: dict) -> float:
    start = time.perf_counter()
    with RayExecutor(workers=workers, task_sources=sources, ship=ship):
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "ship_start"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        experiment(pathlib.Path(tmp))
        search_also(tmp)
        classes = [task_class(name) for name in TASKS]
        sources = {name: class_source(cls) for name, cls in zip(TASKS, classes)}
        # what `search.executor_for` ships
        ship = [str(package_directory(package)) for package in CODE_PACKAGES]
        ship += sorted({str(module_package(cls)) for cls in classes})
        times = {"directories": [], "shipped": []}
        for index in range(args.rounds):
            order = ["directories", "shipped"][:: 1 if index % 2 == 0 else -1]
            for name in order:
                times[name].append(start_seconds(args.workers, ship if name == "shipped" else [], sources))
                print(f"round {index}: {name} {times[name][-1]:.2f} s", flush=True)
    ratios = [s / d for s, d in zip(times["shipped"], times["directories"])]
    results = {"machine": machine(), "workers": args.workers, "rounds": args.rounds,
               "start_seconds": {name: summary(values) for name, values in times.items()},
               "shipped_over_directories": summary(ratios), "raw": times}  # fmt: skip
    rows = [f"| {name} | {s['min']:.2f} | {s['median']:.2f} | {s['max']:.2f} |"
            for name, s in results["start_seconds"].items()]  # fmt: skip
    r = results["shipped_over_directories"]
    table = ("| workers import cellsearch and the tasks from | start, s: min | median | max |\n|---|---|---|---|\n"
             + "\n".join(rows) + f"\n\nShipped / directories, paired by round: {r['median']:.2f} "
             f"[{r['min']:.2f}, {r['max']:.2f}] ({args.workers} workers, {args.rounds} rounds).\n")  # fmt: skip
    write(results, args.out, table)


if __name__ == "__main__":
    main()
