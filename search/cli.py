"""The `cellsearch` command line.

Each subcommand is a small function `cmd_<name>(args) -> int`; user mistakes raise `UsageError` or a
`CellError` and are printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import tomllib

from cells import BASELINES, CellError, Graph, baseline, compile_cell, parse
from cells.baselines import describe


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line."""


def load_cell(name_or_file: str) -> tuple[str, Graph]:
    """Returns (display name, graph) for a baseline name or a path to a cell text file."""
    if name_or_file in BASELINES:
        return name_or_file, baseline(name_or_file)
    path = pathlib.Path(name_or_file)
    if not path.is_file():
        raise UsageError(
            f"'{name_or_file}' is neither a baseline cell (see 'cellsearch show --list') "
            "nor a readable file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    return str(path), parse(text, source=str(path))


def cmd_show(args: argparse.Namespace) -> int:
    if args.list:
        width = max(map(len, BASELINES))
        for name in BASELINES:
            print(f"{name:<{width}}  {describe(name)}")
        return 0
    if args.cell is None:
        raise UsageError("show needs a cell name or file (or --list)")
    if args.hidden < 1:
        raise UsageError(f"--hidden must be a positive integer, got {args.hidden}")
    name, graph = load_cell(args.cell)
    if args.latex:
        print(graph.latex())
        return 0
    compiled = compile_cell(graph)
    print(f"# {name}" + (f": {describe(name)}" if name in BASELINES else ""))
    print(graph.text(), end="")
    n_linear = len(graph.linear_nodes())
    print(
        f"# parameters per layer at H={args.hidden}: {graph.num_params(args.hidden):,} "
        f"({n_linear} W nodes)"
    )
    print(
        f"# matmuls per step: {len(compiled.matmuls)} "
        f"(on {', '.join(m.key for m in compiled.matmuls)})"
    )
    print(f"# memory cell: {'yes' if compiled.has_memory else 'no'}")
    print(f"# hash: {graph.hash}  fingerprint: {graph.fingerprint}")
    return 0


def cmd_mutate(args: argparse.Namespace) -> int:
    import numpy as np

    from search.mutation import Deduper, mutate

    if args.n < 1:
        raise UsageError(f"--n must be a positive integer, got {args.n}")
    name, graph = load_cell(args.cell)
    rng = np.random.default_rng(args.seed)
    seen = Deduper()
    seen.add(graph)
    children, draws = 0, 0
    while children < args.n:
        draws += 1
        if draws > 50 * args.n:
            raise UsageError(f"found only {children} distinct children of {name} in {draws} draws")
        child = mutate(graph, rng)
        if not seen.add(child.graph):
            continue
        children += 1
        print(f"# child {children} of {name}: {child.graph.hash}  {child.graph.fingerprint}")
        for transform in child.transforms:
            print(f"#   {transform}")
        print(child.graph.text())
    print(f"# {draws} draws: {seen.report()} (the parent counted as seen)")
    return 0


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """Parses `key=value` strings; values are TOML literals (1, 0.5, true, "s"), else strings."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got '{pair}'")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key] = value
    return out


def trial_spec_from_args(cell: str, task: str, preset_name: str, seed: int, overrides: dict):
    """A TrialSpec from a preset plus `--set` overrides, validated; UsageError names a bad key."""
    from tasks import TASKS, Budget, HParams, TrialSpec

    if task not in TASKS:
        raise UsageError(f"unknown task '{task}' (known: {', '.join(TASKS)})")
    hparams, budget, options = {}, {}, {}
    budget_fields = {f.name for f in dataclasses.fields(Budget)}
    for key, value in overrides.items():
        if key in HParams._fields:
            hparams[key] = value
        elif key in budget_fields:
            budget[key] = value
        elif key.startswith("task."):
            options[key.removeprefix("task.")] = value
        else:
            known = ", ".join([*HParams._fields, *sorted(budget_fields), "task.<option>"])
            raise UsageError(f"unknown --set key '{key}' (known: {known})")
    try:
        base = TrialSpec.from_preset(cell, task, preset_name)
        spec = TrialSpec.from_preset(
            cell, task, preset_name, base.hparams._replace(**hparams), seed, budget, options
        )
        spec.validate()
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    return spec


def cmd_train(args: argparse.Namespace) -> int:
    name, graph = load_cell(args.cell)
    spec = trial_spec_from_args(
        graph.text() if name not in BASELINES else name,
        args.task, args.preset, args.seed, parse_overrides(args.set),
    )  # fmt: skip
    from tqdm import tqdm

    from tasks import train_trial

    with tqdm(total=spec.budget.steps, desc=f"{name} on {spec.task}", unit="step",
              disable=args.quiet, file=sys.stderr) as bar:  # fmt: skip

        def progress(step: int, loss: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}")

        result = train_trial(spec, progress)
    row = result.row()
    row.pop("traceback", None)
    text = json.dumps(row)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    if result.status == "error":
        print(f"cellsearch: trial failed: {result.error}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsearch",
        description="Search recurrent cell architectures (Jozefowicz, Zaremba & Sutskever 2015).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser(
        "show",
        help="print a cell's canonical equations, parameter count, hash and fingerprint",
        description="Print a cell's canonical equations, parameter count and fused matmuls.",
    )
    show.add_argument("cell", nargs="?", help="a baseline name (see --list) or a cell text file")
    show.add_argument("--hidden", type=int, default=128, help="hidden width H (default 128)")
    show.add_argument("--latex", action="store_true", help="print the equations as LaTeX")
    show.add_argument("--list", action="store_true", help="list the baseline cells")
    show.set_defaults(run=cmd_show)

    mutate = commands.add_parser(
        "mutate",
        help="print distinct valid mutants of a cell",
        description="Apply the paper's mutation operator and print N distinct valid children "
        "with their hash, fingerprint and the transforms that made each.",
    )
    mutate.add_argument("cell", help="a baseline name or a cell text file")
    mutate.add_argument("--n", type=int, default=10, help="number of children (default 10)")
    mutate.add_argument("--seed", type=int, default=0, help="seed of every random decision")
    mutate.set_defaults(run=cmd_mutate)

    train = commands.add_parser(
        "train",
        help="train one cell on one task and print the result row as JSON",
        description="Train one trial (cell, task, hyperparameters, seed, budget) with a progress "
        "bar, then print its result row as one JSON object.",
    )
    train.add_argument("cell", help="a baseline name or a cell text file")
    train.add_argument("task", help="memorize, arith, xml, ptb, jsb, nottingham, musedata, piano")
    train.add_argument("--preset", default="quick",
                       help="budget preset: quick, small, paper, zaremba_small (default quick)")
    train.add_argument("--seed", type=int, default=0, help="seed of init, dropout and data")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a hyperparameter (lr, clip, init_scale, layers, dropout), "
                       "a budget field (steps, hidden, batch, seq_len, ...) or a task option "
                       "(task.max_digits=5); repeatable")
    train.add_argument("--out", help="also append the row to this JSON-lines file")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, CellError) as error:
        print(f"cellsearch: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cellsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
