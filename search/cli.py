"""The `cellsearch` command line.

Each subcommand is a small function `cmd_<name>(args) -> int`; user mistakes raise `UsageError` or a
`CellError` and are printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsearch",
        description="Search recurrent cell architectures (Jozefowicz, Zaremba & Sutskever 2015).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser(
        "show",
        help="print a cell's canonical equations and parameter count",
        description="Print a cell's canonical equations, parameter count and fused matmuls.",
    )
    show.add_argument("cell", nargs="?", help="a baseline name (see --list) or a cell text file")
    show.add_argument("--hidden", type=int, default=128, help="hidden width H (default 128)")
    show.add_argument("--latex", action="store_true", help="print the equations as LaTeX")
    show.add_argument("--list", action="store_true", help="list the baseline cells")
    show.set_defaults(run=cmd_show)
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
