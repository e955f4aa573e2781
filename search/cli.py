"""The `cellsearch` command line.

Each subcommand is a small function `cmd_<name>(args) -> int`; user mistakes raise `UsageError` or a
`CellError` and are printed as one line on stderr with exit status 2, never as a traceback
(`CELLSEARCH_TRACEBACK=1` shows it, for a bug report).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import pathlib
import re
import signal
import sys
import threading
import time
import tomllib
import warnings

from cells import BASELINES, CellError, Graph, baseline, parse
from cells.baselines import describe
from cells.graph import SINKS
from search.strategies import STRATEGIES


class UsageError(Exception):
    """A mistake in what the user asked for; printed as one line."""


CELL_HELP = ("a baseline name (see `show --list`), a cell text file, RUN:HASH (a run's cell, by "
             "hash or hash prefix), or cell text ('z = sigmoid(W(x) + W(h)); h_new = ...')")


def load_cell(name_or_file: str) -> tuple[str, Graph]:
    """Returns (display name, graph) for a baseline name, a path to a cell text file, RUN:CELL
    (a cell of a run directory by name, hash or hash prefix, `results.find_cell`), or cell text
    itself, its assignments on separate lines or separated by ';' (named by its hash)."""
    if name_or_file in BASELINES:
        return name_or_file, baseline(name_or_file)
    path = pathlib.Path(name_or_file)
    run, colon, key = name_or_file.rpartition(":")
    if not path.is_file() and colon and run and pathlib.Path(run).is_dir():
        from results import find_cell

        cell = find_cell(run, key)
        if cell.get("name") in BASELINES:
            return cell["name"], baseline(cell["name"])
        label = f"{run}:{cell['hash']}"
        return label, parse(cell["text"], source=label)
    if not path.is_file():
        if "=" in name_or_file:  # no name, path or RUN:CELL holds one
            key, _, value = name_or_file.partition("=")
            if key.strip() not in SINKS and _is_number(value):  # `train lr=0.5 arith`
                raise UsageError(f"'{name_or_file}' is a setting, not a cell: give it as "
                                 f"--set {key.strip()}={value.strip()}")
            graph = parse(name_or_file, source="cell text")
            return graph.hash, graph
        raise UsageError(
            f"'{name_or_file}' is neither a baseline cell (see 'cellsearch show --list'), "
            "a readable file, RUN:CELL (a cell of a run directory by hash or hash prefix), "
            "nor cell text ('z = sigmoid(W(x) + W(h)); h_new = ...')"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    return str(path), parse(text, source=str(path))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_recipes(spec: str) -> list[tuple[str, dict]]:
    """(label, recipe) pairs from `FILE.json` (every recipe) or `FILE.json:INDEX` (one)."""
    path, sep, index = spec.rpartition(":")
    if not index.isdigit():  # no :INDEX, or a colon that belongs to the path
        path, sep, index = spec, "", ""
    try:
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not a JSON file ({error})") from None
    recipes = data if isinstance(data, list) else [data]
    if sep:
        if int(index) >= len(recipes):
            raise UsageError(f"{path} holds {len(recipes)} recipes; index {index} is out of range")
        return [(f"{path}:{index}", recipes[int(index)])]
    return [(f"{path}:{k}", recipe) for k, recipe in enumerate(recipes)]


def cmd_show(args: argparse.Namespace) -> int:
    if args.nasbench:
        from cells import from_nasbench_nlp

        for label, recipe in load_recipes(args.nasbench):
            graph = from_nasbench_nlp(recipe, label)
            print(f"# {label}: {graph.hash}  {graph.fingerprint}")
            print(graph.text())
        return 0
    if args.list:
        width = max(map(len, BASELINES))
        for name in BASELINES:
            print(f"{name:<{width}}  {describe(name)}")
        return 0
    if args.cell is None:
        raise UsageError("show needs a cell (a baseline name, a cell text file, RUN:HASH or cell text), "
                         "--list or --nasbench FILE.json")
    if args.hidden < 1:
        raise UsageError(f"--hidden must be a positive integer, got {args.hidden}")
    name, graph = load_cell(args.cell)
    if args.latex:
        print(graph.latex())
        return 0
    from cells.plan import plan_matmuls  # the plan without JAX, whose import alone takes 0.5 s

    matmuls, _, _ = plan_matmuls(graph)
    print(f"# {name}" + (f": {describe(name)}" if name in BASELINES else ""))
    print(graph.text(), end="")
    n_linear = len(graph.linear_nodes())
    print(
        f"# parameters per layer at H={args.hidden}: {graph.num_params(args.hidden):,} "
        f"({n_linear} W nodes)"
    )
    print(
        f"# matmuls per step: {len(matmuls)} (on {', '.join(m.key for m in matmuls)})"
    )
    print(f"# memory cell: {'yes' if graph.c_new is not None else 'no'}")
    print(f"# hash: {graph.hash}  fingerprint: {graph.fingerprint}")
    return 0


def _check_writable(out: str | None) -> None:
    """Raises UsageError naming `--out` when the file cannot be written; called before the work.

    The probe opens the file for appending (permission bits alone do not tell, for root or on a
    read-only mount) and removes it again if it did not exist."""
    if not out:
        return
    existed = os.path.lexists(out)
    try:
        open(out, "a", encoding="utf-8").close()
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write ({error.strerror})") from None
    if not existed:
        os.remove(out)


def _emit(text: str, out: str | None, summary: str) -> int:
    """Writes `text` to the file `out` (and says so), or to stdout."""
    if out:
        pathlib.Path(out).write_text(text, encoding="utf-8")
        print(f"{out}: {summary}")
    else:
        print(text, end="")
    return 0


def _recipes_json(recipes: list[dict]) -> str:
    """NAS-Bench-NLP JSON with one node per line (a list when there are several recipes)."""
    blocks = ["{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in r.items()) + "\n}"
              for r in recipes]  # fmt: skip
    return (blocks[0] if len(blocks) == 1 else "[\n" + ",\n".join(blocks) + "\n]") + "\n"


def cmd_convert(args: argparse.Namespace) -> int:
    from cells import from_nasbench_nlp

    _check_writable(args.out)
    if args.to == "cell":
        texts = []
        for spec in args.inputs:
            for label, recipe in load_recipes(spec):
                graph = from_nasbench_nlp(recipe, label)
                texts.append(f"# {label}: {graph.hash}\n{graph.text()}")
        text = "\n".join(texts)
    else:
        recipes = []
        for spec in args.inputs:
            name, graph = load_cell(spec)
            try:
                recipes.append(graph.to_nasbench_nlp())
            except CellError as error:
                raise UsageError(f"{name}: {error}") from None
        text = _recipes_json(recipes)
    return _emit(text, args.out, "written")


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
    from tasks import Budget, HParams, TrialSpec, task_class
    from tasks.registry import check_batches

    try:
        task_class(task)  # (imports a task of your own, "MODULE:CLASS", from here)
    except ValueError as error:
        raise UsageError(str(error)) from None
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
    if uneven := spec.budget.uneven_calls():
        warnings.warn(f"{task}: {uneven}", stacklevel=2)
    try:  # a task of your own: its batches have the form the trainer reads
        check_batches(spec)
    except ValueError as error:
        raise UsageError(f"{task}: {error}") from None
    return spec


def pin_cores(count: int | None) -> None:
    """Runs this process on `count` of its cores (None: all of them), claimed as a search's workers
    claim theirs (`search.executor.claim_cores`): beside a running search, free cores first.

    Called before JAX starts its CPU backend, which splits work over as many threads as the
    process has cores when it starts; a trial's numbers depend on that count (`cpu_threads`).
    """
    if count is None:
        return
    cores = len(os.sched_getaffinity(0))
    if not 1 <= count <= cores:
        raise UsageError(f"--cores must be between 1 and the {cores} cores this process may "
                         f"use, got {count}")  # fmt: skip
    from search.executor import claim_cores

    os.sched_setaffinity(0, claim_cores(count))


def _before_training(spec, out: str | None) -> str:
    """The checks a long trial should not end in, and the shared cache of compiled programs;
    returns the task's data checksum."""
    from search.executor import cache_max_bytes, compilation_cache_dir
    from tasks import use_compilation_cache

    # bad data files: a one-line error before anything runs
    checksum = spec.make_task().data_checksum()
    _check_writable(out)  # a trial of hours should not end in a file it cannot write
    # a command run again starts warm
    use_compilation_cache(compilation_cache_dir(), max_bytes=cache_max_bytes())
    return checksum


def _train_one(spec, name: str, args: argparse.Namespace):
    """Trains `spec` with a progress bar on stderr and returns its `TrialResult`."""
    from tqdm import tqdm

    from tasks import train_trial

    # in a log file (not a terminal) tqdm's redraws pile up on one line: once a minute there
    every = 0.1 if sys.stderr.isatty() else 60.0
    with tqdm(total=spec.budget.steps, desc=f"{name} on {spec.task}", unit="step",
              disable=args.quiet, file=sys.stderr, mininterval=every) as bar:  # fmt: skip

        def progress(step: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)  # drawn by the update, as often
            bar.update(step - bar.n)

        return train_trial(spec, progress)


def cmd_train(args: argparse.Namespace) -> int:
    if args.settings is not None and args.settings < 1:
        raise UsageError(f"--settings must be a positive integer, got {args.settings}")
    pin_cores(args.cores)  # first, as XLA_FLAGS: JAX's backend reads both once, when it starts
    if args.deterministic:
        from search.executor import DETERMINISTIC_XLA_FLAGS, add_xla_flags

        add_xla_flags(DETERMINISTIC_XLA_FLAGS)
    name, graph = load_cell(args.cell)
    spec = trial_spec_from_args(
        graph.text() if name not in BASELINES else name,
        args.task, args.preset, args.seed, parse_overrides(args.set),
    )  # fmt: skip
    _before_training(spec, args.out)
    if args.settings is not None:
        return _train_settings(spec, graph, args)
    return _print_rows([_train_one(spec, name, args)], args.out)


# what a rerun must give again; timings and provenance may differ
RERUN_FIELDS = ("status", "score", "steps_done", "train_loss", "sequence_length", "loss_curve")


def cmd_rerun(args: argparse.Namespace) -> int:
    from results import RunStore
    from results.store import iter_jsonl

    store = RunStore(args.run_dir)
    if not store.exists():
        raise UsageError(f"{args.run_dir}: not a run directory (no run.toml)")
    row = next((r for r in iter_jsonl(store.trials_path) if r.get("trial") == args.trial), None)
    if row is None:
        raise UsageError(f"{store.trials_path}: no trial {args.trial}")
    threads, note = row.get("cpu_threads"), ""
    if threads is None:  # rows from before the field: a local search's workers ran on 1 core
        threads, note = 1, " (the row does not say; a local search's workers train on 1)"
    if args.cores is not None:
        pin_cores(args.cores)
        threads, note = args.cores, " (--cores)"
    elif row.get("device", "cpu") == "cpu":
        try:
            pin_cores(threads)
        except UsageError:
            raise UsageError(f"trial {args.trial} ran on {threads} cores and this process may use "
                             f"{len(os.sched_getaffinity(0))}: its numbers would differ; --cores "
                             "sets the count") from None  # fmt: skip
    from search.executor import DETERMINISTIC_XLA_FLAGS, add_xla_flags

    if DETERMINISTIC_XLA_FLAGS in (row.get("xla_flags") or ""):
        add_xla_flags(DETERMINISTIC_XLA_FLAGS)
    from tasks import TrialSpec
    from tasks.usercode import search_also, source_root

    if (row.get("task_source") or {}).get("file"):  # a task of your own: where the run found it
        search_also(source_root(row["task_source"]))
    try:
        spec = TrialSpec.from_row(row)
    except KeyError as missing:
        raise UsageError(f"{store.trials_path}: trial {args.trial} has no field {missing}") from None
    checksum = _before_training(spec, args.out)
    if row.get("data_checksum") not in (None, checksum):
        raise UsageError(f"{spec.task}: the task's data changed since trial {args.trial} ran "
                         f"(stored {row['data_checksum']}, now {checksum})")  # fmt: skip
    name = row.get("cell") or row.get("cell_hash", "cell")
    if not args.quiet:
        print(f"trial {args.trial} of {args.run_dir}: {name} on {spec.task}, seed {spec.seed}, "
              f"{threads} core{'s' * (threads != 1)}{note}", file=sys.stderr)  # fmt: skip
    result = _train_one(spec, name, args)
    status = _print_rows([result], args.out)
    again = result.row()
    fields = [*RERUN_FIELDS, *sorted(k for k in row if k.startswith(("valid_", "test_")))]
    differ = [f for f in fields if again.get(f) != row.get(f)]
    if not differ:
        print(f"cellsearch: trial {args.trial} reproduced: {', '.join(fields[:4])}, the validation "
              "and test metrics and the loss curve are the same to the last bit", file=sys.stderr)
        return status
    shown = [f"{f} {row.get(f)} -> {again.get(f)}" for f in differ if f != "loss_curve"][:3]
    why = _what_changed(row, again)
    print(f"cellsearch: trial {args.trial} differs from its row in {len(differ)} fields ("
          + "; ".join(shown) + ")" + (f"; what changed: {'; '.join(why)}" if why else ""),
          file=sys.stderr)  # fmt: skip
    return 1


def _what_changed(row: dict, again: dict) -> list[str]:
    """What differs between how a stored row was trained and how it was trained again: the causes
    `cellsearch rerun` names when the numbers differ.

    Args:
      row: the stored row.
      again: the row of the rerun.
    Returns:
      One "field before -> now" phrase per difference.
    """
    why = []
    for key in ("code_version", "device", "cpu_model", "xla_flags", "cpu_threads"):
        before, now = row.get(key), again.get(key)
        if before == now:
            continue
        if key == "cpu_model" and before and str(now).startswith(f"{before} ("):
            # rows before 76138aa gave the model name alone, which a Zen 3 and a Zen 4 share
            why.append(f"cpu_model {before} -> {now} (the row gives no family or vector "
                       "extension, so the CPU may be the same kind)")  # fmt: skip
        else:
            why.append(f"{key} {'not recorded' if before is None else before} -> {now}")
    before, now = ((r.get("task_source") or {}).get("sha256") for r in (row, again))
    if before != now:
        why.append(f"task_source sha256 {before or 'not recorded'} -> {now}")
    if row.get("vmapped_settings", 1) > 1:
        why.append(f"it was trained as one of {row['vmapped_settings']} vmapped settings")
    return why


def _train_settings(spec, graph, args: argparse.Namespace) -> int:
    """`train --settings K`: K settings drawn from the paper's grid, trained as one program."""
    from tasks import GRID, sample_settings, train_settings

    fixed = parse_overrides(args.set)
    grid = {name: GRID[name] for name in ("lr", "clip", "init_scale") if name not in fixed}
    drawn = sample_settings((graph.hash, spec.task, args.seed), args.settings, grid=grid)
    specs = [dataclasses.replace(spec, seed=args.seed + i, hparams=spec.hparams._replace(
                 **{name: getattr(hp, name) for name in grid}))
             for i, hp in enumerate(drawn)]  # fmt: skip
    if not args.quiet:
        print(f"training {len(specs)} settings of {spec.cell if spec.cell in BASELINES else graph.hash} "
              f"on {spec.task} as one program...", file=sys.stderr)  # fmt: skip
    return _print_rows(train_settings(specs), args.out)


def _print_rows(results, out: str | None) -> int:
    """Prints each result's row as JSON (and appends it to `out`); 1 if any trial failed."""
    failed = 0
    for result in results:
        row = result.row()
        row.pop("traceback", None)
        text = json.dumps(row)
        print(text)
        if out:
            with open(out, "a", encoding="utf-8") as f:
                f.write(text + "\n")
        if result.status == "error":
            print(f"cellsearch: trial failed: {result.error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_search(args: argparse.Namespace) -> int:
    from search.config import load_config

    overrides = parse_overrides(args.set)
    if args.seed_cells:
        overrides["seed_cells"] = list(cell_entries(args.seed_cells))
    config = load_config(args.config, overrides)
    return _run_search(config, args)


def cell_entries(cells: list[str]) -> tuple[str, ...]:
    """Config entries for cells given on the command line: names stay names; files, RUN:CELL and
    text become their equations, which the run keeps in run.toml (it resumes without them)."""
    resolved = map(load_cell, cells)
    return tuple(name if name in BASELINES else graph.text() for name, graph in resolved)


def cmd_baselines(args: argparse.Namespace) -> int:
    from search.config import BaselinesOptions, SearchConfig

    if args.settings < 1:
        raise UsageError(f"--settings must be a positive integer, got {args.settings}")
    cells = cell_entries(args.cells) if args.cells else BaselinesOptions().cells
    config = SearchConfig(
        name=f"baselines-{args.preset}", strategy="baselines", seed=args.seed, preset=args.preset,
        tasks=tuple(args.tasks), settings_per_task=args.settings, max_trials=10**9,
        baselines=BaselinesOptions(cells),
    )  # fmt: skip
    config.validate("baselines")
    return _run_search(config, args)


def _executor_factory(args: argparse.Namespace, config):
    from search.executor import executor_for, ray_address

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    gpus = args.gpus_per_worker
    if not (gpus >= 0 and (gpus <= 1 or gpus == int(gpus))):  # as Ray hands GPUs out
        raise UsageError(f"--gpus-per-worker must be a share of one GPU (0 to 1) or a whole "
                         f"number, got {gpus:g}")  # fmt: skip
    cpus = len(os.sched_getaffinity(0))
    if ray_address(args.address) is None and args.workers is not None and args.workers > cpus:
        # allowed (Ray is started with that many CPUs), but rarely what was meant
        print(f"cellsearch: warning: --workers {args.workers} is more than the {cpus} CPUs here: "
              "the workers share cores, so trials go no faster, and each is a JAX process of its "
              "own in memory", file=sys.stderr)  # fmt: skip
    return executor_for(config, args.workers, args.address, args.gpus_per_worker, args.ship)


def search_progress_bar(total: int, desc: str, quiet: bool = False, log_every: float = 60.0):
    """A tqdm bar on stderr and the `progress` callback of `run_search` that draws it.

    The rate and time left count from the first trial this process trained (`_pace`). When
    stderr is not a terminal (a batch job's or nohup's log file) a bar redrawn after every trial
    would be one endless line of carriage returns, so the progress is a plain timestamped line
    every `log_every` seconds and at the end instead.
    """
    if not quiet and not sys.stderr.isatty():
        return _progress_lines(total, desc, log_every)
    from tqdm import tqdm

    # tqdm's own rate and time left would count Ray's start and the replayed rows: ours instead
    bar = tqdm(total=total, desc=desc, unit="trial", disable=quiet, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")  # fmt: skip
    pace = _pace(total)

    def progress(p) -> None:
        bar.n = p.trials
        best = f"{p.best[0][:24]} {p.best[1]:.3f}" if p.best else "-"
        bar.set_postfix_str(f"diverged/error={p.failures} best={best} {pace(p)}", refresh=True)

    return bar, progress


def _pace(total: int):
    """A function of each progress report (`search.loop.Progress`, every one in turn) that gives
    the rate and time left, "1800/h, about 40 s left", or "-/h" before there is a rate.

    Both count from the first trial this process trained: Ray's start and the first compiles
    before it would make the first reports promise several times the real time left, and rows
    replayed from the store on a resume would promise the rest at the replay's speed.
    """
    first = None

    def pace(p) -> str:
        nonlocal first
        if first is None and p.ran:
            first = p
        ran = p.ran - first.ran if first else 0
        seconds = p.seconds - first.seconds if first else 0.0
        if not ran or seconds <= 0:
            return "-/h"
        left = f", about {_duration((total - p.trials) * seconds / ran)} left" if p.trials < total else ""
        return f"{3600 * ran / seconds:.0f}/h{left}"

    return pace


def _progress_lines(total: int, desc: str, log_every: float):
    """`search_progress_bar` for a log file: (a context that writes the last line, the callback)."""
    import contextlib

    pace = _pace(total)
    # monotonic time of the last line; the last report and its pace, unless written
    last: dict = {"printed": None, "progress": None}

    def write(p, paced: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        best = f"{p.best[0]} {p.best[1]:.3f}" if p.best else "-"
        print(f"{now} {desc}: {p.trials}/{total} trials, {p.failures} diverged/error, best {best}, "
              f"{paced}", file=sys.stderr, flush=True)  # fmt: skip
        last["printed"], last["progress"] = time.monotonic(), None

    def progress(p) -> None:
        last["progress"] = (p, pace(p))  # every report, so the pace sees the first trained trial
        if last["printed"] is None or time.monotonic() - last["printed"] >= log_every:
            write(*last["progress"])

    @contextlib.contextmanager
    def final_line():
        yield
        if last["progress"] is not None:  # the state at the end, unless just written
            write(*last["progress"])

    return final_line(), progress


def _run_search(config, args: argparse.Namespace, out: str | None = None, executor=None) -> int:
    from results import RunStore
    from search.executor import check_reachable, ray_address
    from search.loop import check_resumable, run_search
    from search.strategies import planned_trials
    from tasks import make_task

    address = ray_address(args.address)
    if address:  # before a run directory is made
        check_reachable(address)
    out = out or args.out or f"runs/{config.name}"
    store = RunStore(out)
    if store.exists():  # refuse before any progress bar is drawn
        store.check_free()
        check_resumable(store, config)
    else:
        store.check_new()
    executor = executor or _executor_factory(args, config)
    for task in dict.fromkeys((*config.tasks, config.jozefowicz.screen_task)):
        # checked here once, so that missing or damaged data is an error, not a run of failed trials
        make_task(task, **config.task_options.get(task, {})).data_checksum()
    total = planned_trials(config)
    bar, progress = search_progress_bar(total, f"{config.strategy} -> {out}", args.quiet)
    with bar:
        summary = run_search(config, out, executor, progress)
    best = f"{summary.best[0]} (Jozefowicz score {summary.best[1]:.4f})" if summary.best else "none"
    print(f"{out}: {summary.trials} trials ({summary.ran} run now, {summary.replayed} from the "
          f"store) in {summary.rounds} rounds; best cell: {best}")  # fmt: skip
    if config.vmap_settings > 1 and summary.ran:
        print(grouping_line(summary, config.vmap_settings))
    return 0


def grouping_line(summary, vmap_settings: int) -> str:
    """What `vmap_settings` did for the trials a search ran now, in one line: a group forms only
    from pending trials of one program shape, so a config can ask for groups and get none."""
    line = (f"{summary.grouped} of {summary.ran} trials run now trained as lanes of vmapped groups "
            f"(vmap_settings {vmap_settings})")  # fmt: skip
    if summary.grouped == 0:
        line += ("; no two pending trials shared a cell, task, budget and layer count: more "
                 "settings_per_task or fewer grid.layers make groups")  # fmt: skip
    return line


def cmd_reproduce(args: argparse.Namespace) -> int:
    import contextlib
    import shlex
    import time

    from analysis import write_report
    from search.config import bundled_configs, load_config

    configs = pathlib.Path(args.configs) if args.configs else bundled_configs()
    files = [configs / f"baselines-{args.preset}.toml", configs / f"{args.preset}.toml"]
    for file in files:
        if not file.is_file():
            raise UsageError(f"preset '{args.preset}' needs {file} (presets: quick, small, paper; "
                             "--configs names another directory)")  # fmt: skip
    baselines, search = (load_config(f) for f in files)
    out = pathlib.Path(args.out or f"runs/reproduce-{args.preset}")
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        shared = []  # one Ray session for both runs, started only if a trial must be trained

        def executor():
            if not shared:
                shared.append(stack.enter_context(_executor_factory(args, search)()))
            return contextlib.nullcontext(shared[0])

        _run_search(baselines, args, str(out / "baselines"), executor)
        _run_search(search, args, str(out / "search"), executor)
    seconds = time.monotonic() - start
    command = shlex.join(["cellsearch", *args.argv])
    report = write_report(out, command=command, wall_seconds=seconds)
    print(f"{report}: written; baselines + search + report took {seconds / 60:.1f} min")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from analysis import write_report

    out = pathlib.Path(args.out) if args.out else None
    made = [d for d in [out, *out.parents] if not d.exists()] if out is not None else []  # leaf first
    if out is not None:  # before the runs are read: a mistyped --out is a one-line error
        if not made and not out.is_dir():
            raise UsageError(f"--out {out}: not a directory (the report is report.md and figures)")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--out {out}: cannot make the directory ({error.strerror})") from None
    try:
        report = write_report(args.runs, out=out)
    except BaseException:
        for directory in made:  # a report that failed (no such run, say) leaves no empty --out behind
            if any(directory.iterdir()):
                break
            directory.rmdir()
        raise
    print(f"{report}: written")
    return 0


def _load_runs(paths):
    from results import find_runs, load

    return load(find_runs(paths), loss_curves=False)  # what the analysis commands read


def cmd_status(args: argparse.Namespace) -> int:
    from analysis import leaderboard
    from results import RunStore, find_runs, load
    from search.config import stored_config
    from search.strategies import planned_trials

    for path in find_runs(args.runs):
        store = RunStore(path)
        stored = store.metadata()
        config, run = stored.get("config", {}), stored.get("run", {})
        frame = load(path, loss_curves=False)
        planned = planned_trials(stored_config(stored, str(store.config_path), validate=False))
        writer = store.writer()
        if writer:
            state = f"running: {writer}"
        else:
            done = len(frame) >= planned
            state = "finished" if done else "not running; the same command resumes it"
        print(f"{path} ({state})")
        print(f"  {config.get('strategy')} on {', '.join(config.get('tasks', []))}, preset "
              f"{config.get('preset')}, seed {config.get('seed')}; made {run.get('created')} by code "
              f"{run.get('code_version')}")  # fmt: skip
        # (a resume with a larger --set max_trials runs past the one run.toml keeps)
        of = f" of {planned}" if len(frame) <= planned else ""
        line = f"  {len(frame)}{of} trials"
        stored_at = frame["stored_at"].dropna().sort_values()  # none in a store older than the field
        if len(frame):
            last = stored_at.iloc[-1].timestamp() if len(stored_at) else store.trials_path.stat().st_mtime
            age = time.time() - last
            counts = frame["status"].astype(str).value_counts()
            purposes = frame["purpose"].astype(str).value_counts() if "purpose" in frame else {}
            line += (f", the last stored {_duration(age)} ago: "
                     + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "diverged", "error"))
                     + " (" + ", ".join(f"{n} {k}" for k, n in purposes.items()) + ")")  # fmt: skip
        print(line + f"; {frame['cell_hash'].nunique() if len(frame) else 0} cells")
        rate = _recent_rate(stored_at) if writer else None
        if rate:  # what the driver's progress bar shows, for a shell that is not the driver's
            left = f", about {_duration((planned - len(frame)) / rate * 3600)} left" if planned > len(frame) else ""
            print(f"  lately {rate:.0f} trials/h{left}")
        board = leaderboard(frame) if len(frame) else None
        if board is not None and board["jozefowicz"].notna().any():
            scored = board[board["jozefowicz"].notna()]
            found = scored[scored["origin"] != "baseline"]
            best = [f"{_cell_label(scored)} (Jozefowicz score {scored['jozefowicz'].iloc[0]:.4f})"]
            if len(found):
                best.append(f"best found {_cell_label(found)} ({found['jozefowicz'].iloc[0]:.4f})")
            print("  best: " + "; ".join(best))
    return 0


def _recent_rate(times, rows: int = 50, window: float = 3600.0) -> float | None:
    """Trials per hour over the last `rows` of the sorted store times `times` that lie within
    `window` seconds of the newest; None with fewer than three such rows."""
    if len(times) < 3:
        return None
    times = times[times >= times.iloc[-1] - datetime.timedelta(seconds=window)].iloc[-rows:]
    span = (times.iloc[-1] - times.iloc[0]).total_seconds()
    return (len(times) - 1) / span * 3600 if len(times) >= 3 and span > 0 else None


def _cell_label(board) -> str:
    name = board["name"].iloc[0]
    return name if name and name != board.index[0] else str(board.index[0])


def _duration(seconds: float) -> str:
    """`85 s`, `14 min`, `3.2 h`: whole seconds below two minutes, whole minutes below two hours."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{seconds / 3600:.1f} h"


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from analysis import leaderboard, to_markdown
    from analysis.leaderboard import tasks_present

    if args.top < 1:
        raise UsageError(f"--top must be a positive integer, got {args.top}")
    _check_writable(args.out)
    frame = _load_runs(args.runs)
    for option, column, wanted in (("--task", "task", args.task),
                                   ("--strategy", "strategy", args.strategy)):  # fmt: skip
        present = sorted(map(str, frame[column].unique())) if column in frame else []
        for value in wanted or ():
            if value not in present:  # a typo would otherwise read as "no trials match"
                raise UsageError(f"{option} {value}: no such {column} in these runs "
                                 f"(present: {', '.join(present) or 'none'})")  # fmt: skip
    board = leaderboard(frame, tasks=args.task, strategies=args.strategy, statuses=args.status)
    if board.empty:
        print("no trials match")
        return 0
    present = tasks_present(frame)
    tasks = [c for c in board.columns if c in present]
    if args.format == "csv":
        text = board.to_csv()
    else:
        shown = board.head(args.top)[["name", "jozefowicz", *tasks, "trials", "settings",
                                      "diverged", "params"]]  # fmt: skip
        shown = shown.assign(name=shown["name"].where(shown["name"] != shown.index, "-"))
        if args.format == "markdown":
            text = to_markdown(shown)
        else:
            text = shown.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-") + "\n"
    return _emit(text, args.out, f"{len(board)} cells")


def cmd_compare(args: argparse.Namespace) -> int:
    from analysis import compare
    from analysis.findings import Missing

    frame = _load_runs(args.runs)
    try:
        table = compare(frame, args.cell_a, args.cell_b, equal_trials=args.equal_trials)
    except Missing as missing:  # e.g. a cell the run never trained: say which run was searched
        raise UsageError(f"{args.runs}: {missing}") from None
    equal = ", each the expected best of k trials, k the fewer the two have" if args.equal_trials else ""
    print(f"{args.cell_a} vs {args.cell_b}: effect = log(best {args.cell_a} / best {args.cell_b}){equal} "
          "(accuracy: about the relative difference; PTB and music: the NLL gap in nats); "
          f"95% bootstrap interval; supported = {args.cell_a} is better")  # fmt: skip
    for task, row in table.iterrows():
        interval = f"[{row.low:+.4f}, {row.high:+.4f}]"
        print(f"{task:<11} {row.effect:+.4f} {interval:<20} {row.verdict:<13} {row.detail}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from results import find_runs, load, to_parquet

    frame = load(find_runs(args.run_dir))  # first: a missing RUN is named as such, not as --out
    out = args.out or str(pathlib.Path(args.run_dir) / f"trials.{args.format}")
    _check_writable(out)
    if args.format == "parquet":
        to_parquet(frame, out)
    else:
        frame.to_csv(out, index=False)
    print(f"{out}: {len(frame)} trials")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from search.executor import cache_max_bytes, compilation_cache_dir
    from tasks.executables import CacheSize, cache_size, clear_cache, trim_cache

    limit = parse_size(args.trim) if args.trim is not None else None
    cap = cache_max_bytes()  # a bad CELLSEARCH_CACHE_MAX_GB is an error before anything is deleted
    directory = compilation_cache_dir()
    if args.clear:
        removed = clear_cache(directory)
        print(f"removed {removed.files} files ({_size(removed.bytes)})")
    elif limit is not None:
        removed = trim_cache(directory, limit)
        print(f"removed {removed.files} files ({_size(removed.bytes)}), the least recently used")
    store, jax_part = cache_size(directory, "store"), cache_size(directory, "jax")
    total = CacheSize(store.files + jax_part.files, store.bytes + jax_part.bytes)
    trimmed = f"workers trim it to {_size(cap)}" if cap else "workers never trim it"
    print(f"{directory}: {total.files} files, {_size(total.bytes)} (executable store: "
          f"{store.files} files, {_size(store.bytes)}); {trimmed} "
          "(CELLSEARCH_CACHE_MAX_GB)")  # fmt: skip
    return 0


_SIZE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_size(text: str) -> int:
    """Bytes from a size such as 500MB, 2GB, 1.5g or 1000000 (decimal units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)b?\s*", text.lower())
    if not match:
        raise UsageError(
            f"size {text!r}: expected a number of bytes or a size such as 500MB or 2GB"
        )
    return int(float(match[1]) * _SIZE_UNITS[match[2]])


def _size(n: float) -> str:
    """Bytes for people: 512 B, 3.0 KB, 17.7 MB, 10.0 GB."""
    units = ["B", "KB", "MB", "GB"]
    while n >= 1000 and len(units) > 1:
        n, units = n / 1000, units[1:]
    return f"{n:.0f} B" if units[0] == "B" else f"{n:.1f} {units[0]}"


def _execution_arguments(parser: argparse.ArgumentParser, out: str = "runs/<config name>") -> None:
    parser.add_argument("--out", help=f"run directory (default {out})")
    parser.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a "
                        "local Ray on 127.0.0.1)")  # fmt: skip
    parser.add_argument("--workers", type=int, help="worker actors (default: one per CPU, or per "
                        "GPU share with --gpus-per-worker where those are fewer)")  # fmt: skip
    parser.add_argument("--gpus-per-worker", type=float, default=0,
                        help="GPUs per worker actor (default 0: trials train on CPU cores, also "
                        "where there are GPUs; 0.5: two workers share a GPU)")  # fmt: skip
    parser.add_argument("--ship", action=argparse.BooleanOptionalAction,
                        help="send cellsearch's code and each task of your own's module (its .py "
                        "file, or its top-level package with everything in it) to the Ray workers "
                        "with the job, so that nodes need only the dependencies (default: when "
                        "joining a cluster)")  # fmt: skip


def _installed_version() -> str:
    try:
        return importlib.metadata.version("cellsearch")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsearch",
        description="Search recurrent cell architectures (Jozefowicz, Zaremba & Sutskever 2015).",
    )
    parser.add_argument("--version", action="version", version=f"cellsearch {_installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser(
        "show",
        help="print a cell's canonical equations, parameter count, hash and fingerprint",
        description="Print a cell's canonical equations, parameter count and fused matmuls.",
    )
    show.add_argument("cell", nargs="?", help=CELL_HELP)
    show.add_argument("--hidden", type=int, default=128, help="hidden width H (default 128)")
    show.add_argument("--latex", action="store_true", help="print the equations as LaTeX")
    show.add_argument("--list", action="store_true", help="list the baseline cells")
    show.add_argument("--nasbench", metavar="FILE.json[:INDEX]",
                      help="show NAS-Bench-NLP recipes (all of the file, or the one at INDEX)")
    show.set_defaults(run=cmd_show)

    convert = commands.add_parser(
        "convert", help="convert cells to and from NAS-Bench-NLP recipes",
        description="--to nasbench: cells as `show` takes them -> NAS-Bench-NLP JSON (one "
        "recipe, or a list for several); --to cell: NAS-Bench-NLP files (FILE.json or "
        "FILE.json:INDEX) -> cell text.",
    )  # fmt: skip
    convert.add_argument("inputs", nargs="+", metavar="INPUT")
    convert.add_argument("--to", choices=("nasbench", "cell"), required=True)
    convert.add_argument("--out", help="write here instead of stdout")
    convert.set_defaults(run=cmd_convert)

    mutate = commands.add_parser(
        "mutate",
        help="print distinct valid mutants of a cell",
        description="Apply the paper's mutation operator and print N distinct valid children "
        "with their hash, fingerprint and the transforms that made each.",
    )
    mutate.add_argument("cell", help=CELL_HELP)
    mutate.add_argument("--n", type=int, default=10, help="number of children (default 10)")
    mutate.add_argument("--seed", type=int, default=0, help="seed of every random decision")
    mutate.set_defaults(run=cmd_mutate)

    train = commands.add_parser(
        "train",
        help="train one cell on one task and print the result row as JSON",
        description="Train one trial (cell, task, hyperparameters, seed, budget) with a progress "
        "bar, then print its result row as one JSON object.",
    )
    train.add_argument("cell", help=CELL_HELP)
    train.add_argument("task", help="memorize, arith, xml, ptb, jsb, nottingham, musedata, piano, "
                       "or MODULE:CLASS for a task of your own (reverse:Reverse)")
    train.add_argument("--preset", default="quick",
                       help="budget preset: quick, small, paper, zaremba_small (default quick)")
    train.add_argument("--seed", type=int, default=0, help="seed of init, dropout and data")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a hyperparameter (lr, clip, init_scale, layers, dropout), "
                       "a budget field (steps, hidden, batch, seq_len, ...) or a task option "
                       "(task.max_digits=5); repeatable")
    train.add_argument("--out", help="also append the row to this JSON-lines file")
    train.add_argument("--settings", type=int, metavar="K",
                       help="train K settings drawn from the paper's grid (lr, clip, init_scale "
                       "unless fixed with --set; seeds SEED..SEED+K-1) as ONE vmapped program, "
                       "one row each; pays on a GPU")  # fmt: skip
    train.add_argument("--deterministic", action="store_true",
                       help="on a GPU, XLA kernels that add in a fixed order, so that a rerun is "
                       "exact (slower; a CPU is exact on the same number of cores)")
    train.add_argument("--cores", type=int, metavar="N",
                       help="train on N cores (default: all this process may use); a search's "
                       "local workers train on 1, and the numbers depend on the count")  # fmt: skip
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    rerun = commands.add_parser(
        "rerun",
        help="train a stored trial again and check that its row comes out the same",
        description="Train trial TRIAL of RUN again from what its row records (cell, task and "
        "its options, hyperparameters, budget, seed, and on a CPU the number of cores), print "
        "the new row as JSON, and say whether status, score, losses, metrics and loss curve are "
        "the same to the last bit (exit 0) or which differ (exit 1).",
    )
    rerun.add_argument("run_dir", metavar="RUN", help="a run directory")
    rerun.add_argument("trial", type=int, help="the trial id (the `trial` column)")
    rerun.add_argument("--cores", type=int, metavar="N",
                       help="train on N cores instead of the count the row records")
    rerun.add_argument("--out", help="also append the new row to this JSON-lines file")
    rerun.add_argument("--quiet", action="store_true", help="no progress bar")
    rerun.set_defaults(run=cmd_rerun)

    search = commands.add_parser(
        "search",
        help="run or resume an architecture search on Ray",
        description="Run an architecture search described by a TOML config (configs/*.toml) on a "
        "local Ray (default) or a Ray cluster (--address). Running it again on the same --out "
        f"resumes it exactly. The config's `strategy` is a built-in one ({', '.join(STRATEGIES)}) "
        "or MODULE:CLASS, a search.Strategy subclass of your own (--set "
        "strategy=hillclimb:HillClimb); its `tasks` built-in ones or MODULE:CLASS, tasks.Task "
        "subclasses of your own (--set 'tasks=[\"reverse:Reverse\"]').",
    )
    search.add_argument("config", help="a TOML search config, e.g. configs/quick.toml, or the name "
                        "of one that ships with cellsearch: quick, small, paper")
    _execution_arguments(search)
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (dotted for tables: jozefowicz.list_size=50)")
    search.add_argument("--seed-cells", nargs="+", metavar="CELL",
                        help="the cells the search starts from (seed_cells; default lstm gru): "
                        "cells as `show` takes them; gru is always added")
    search.add_argument("--quiet", action="store_true", help="no progress bar")
    search.set_defaults(run=cmd_search)

    baselines = commands.add_parser(
        "baselines",
        help="train the baseline cells with N random settings per task (no search)",
        description="Every baseline cell (default: the ten of the paper's tables) on the chosen "
        "tasks with N random settings each, through the same Ray executor and run store as a "
        "search; resumable the same way.",
    )
    baselines.add_argument("--preset", default="quick", help="budget preset (default quick)")
    baselines.add_argument("--tasks", nargs="+", default=["arith", "xml", "ptb"],
                           help="tasks (default: the search tasks arith xml ptb)")
    baselines.add_argument("--cells", nargs="+", help="cells as `show` takes them (a found one as "
                           "RUN:HASH); default: the paper's ten")
    baselines.add_argument("--settings", type=int, default=4, help="settings per task (default 4)")
    baselines.add_argument("--seed", type=int, default=0)
    _execution_arguments(baselines)
    baselines.add_argument("--quiet", action="store_true", help="no progress bar")
    baselines.set_defaults(run=cmd_baselines)

    status = commands.add_parser(
        "status", help="where runs stand: running or not, trials stored, the best cell so far",
        description="Per run: whether a driver is writing it now (its PID and host), its config, "
        "trials stored (of max_trials) by status and purpose, when the last was stored, and the "
        "best cell by Jozefowicz score. Reads the store only; safe while a search runs. RUN may "
        "be a run directory or a directory of runs (a reproduction).",
    )  # fmt: skip
    status.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    status.set_defaults(run=cmd_status)

    leaderboard = commands.add_parser(
        "leaderboard", help="best score per task of each cell in one or more runs",
        description="Per cell: best validation score per task, the Jozefowicz score (min over "
        "search tasks of best / GRU best), trials, distinct settings, divergence rate, parameters. "
        "RUN may be a run directory or a directory of runs (a reproduction).",
    )  # fmt: skip
    leaderboard.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    leaderboard.add_argument("--top", type=int, default=20, help="rows to show (default 20)")
    leaderboard.add_argument("--task", action="append", help="only trials of this task (repeatable)")
    leaderboard.add_argument("--strategy", action="append", help="only trials of this strategy")
    leaderboard.add_argument("--status", action="append", choices=("ok", "diverged", "error"),
                             help="only trials with this status (repeatable)")  # fmt: skip
    leaderboard.add_argument("--format", choices=("table", "markdown", "csv"), default="table",
                             help="terminal table (default), Markdown, or CSV of every cell with "
                             "its equations")  # fmt: skip
    leaderboard.add_argument("--out", help="write to this file instead of stdout")
    leaderboard.set_defaults(run=cmd_leaderboard)

    report = commands.add_parser(
        "report", help="write report.md (findings, paper tables, leaderboard, plots) for runs",
        description="Check the paper's findings against one or more runs (bootstrap intervals), "
        "fill the paper's Tables 1 and 2, and write report.md with PNG figures.",
    )  # fmt: skip
    report.add_argument("runs", nargs="+", metavar="RUN", help="run directories or a reproduction")
    report.add_argument("--out", help="directory for report.md and figures (default: the first RUN)")
    report.set_defaults(run=cmd_report)

    compare = commands.add_parser(
        "compare", help="compare two cells task by task with bootstrap intervals",
        description="log(best score of CELL_A / best of CELL_B) on every task both were trained "
        "on, and on average, with a 95% bootstrap interval and a verdict.",
    )  # fmt: skip
    compare.add_argument("runs", metavar="RUN", help="a run directory or a reproduction")
    compare.add_argument("cell_a", metavar="CELL_A", help="baseline name, hash, or hash prefix")
    compare.add_argument("cell_b", metavar="CELL_B", help="baseline name, hash, or hash prefix")
    compare.add_argument("--equal-trials", action="store_true",
                         help="score both by their expected best of the same number of trials "
                         "per task (the fewer of the two has): no edge for the cell run more often")
    compare.set_defaults(run=cmd_compare)

    reproduce = commands.add_parser(
        "reproduce", help="baselines + search + report in one command",
        description="Train the paper's ten cells (configs/baselines-PRESET.toml), run the search "
        "(configs/PRESET.toml), and write OUT/report.md. Running it again on the same --out "
        "resumes both runs and rewrites the report.",
    )  # fmt: skip
    reproduce.add_argument("--preset", default="quick", help="quick (5-7 min on 2 cores), "
                           "small (about 90 core-hours), paper (about 80,000 core-hours: a "
                           "cluster); default quick")  # fmt: skip
    reproduce.add_argument("--configs", help="directory of the preset configs (default: the ones "
                           "that ship with cellsearch, configs/ in the repository)")
    _execution_arguments(reproduce, "runs/reproduce-<preset>")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(run=cmd_reproduce)

    cache = commands.add_parser(
        "cache",
        help="size of the compiled-programs cache; trim or clear it",
        description="Where workers and `cellsearch train` keep compiled programs, and their size. "
        "Each worker trims it to CELLSEARCH_CACHE_MAX_GB (default 10; 'none': never) when it "
        "starts and every 256 programs it compiles, least recently used first.",
    )  # fmt: skip
    action = cache.add_mutually_exclusive_group()
    action.add_argument("--trim", metavar="SIZE", help="delete the least recently used programs "
                        "until at most SIZE remain (e.g. 500MB, 2GB)")  # fmt: skip
    action.add_argument("--clear", action="store_true", help="delete every compiled program")
    cache.set_defaults(run=cmd_cache)

    export = commands.add_parser("export", help="write a run's trials as Parquet or CSV")
    export.add_argument("run_dir", metavar="RUN", help="a run directory, or a directory of runs "
                        "(a reproduction): one table, the `run` column says which")  # fmt: skip
    export.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    export.add_argument("--out", help="output file (default RUN/trials.parquet)")
    export.set_defaults(run=cmd_export)
    for sub in commands.choices.values():  # so that `main` can answer in the command's own words
        sub.set_defaults(command_parser=sub)
    return parser


_TERMINATED = []  # set by the SIGTERM handler: Ray may re-raise its exception as a KeyboardInterrupt


_PACKAGES = [pathlib.Path(__file__).resolve().parent.with_name(name)
             for name in ("cells", "tasks", "search", "results", "analysis")]  # fmt: skip


def _print_warning(show_other, message, category, filename, lineno, file=None, line=None):
    """Prints a warning of cellsearch's own code as the command's one line,
    `cellsearch: warning: ...` (a torn last line of a run being written, say), not as Python's two
    lines with a line of our source; another package's warnings with `show_other`."""
    if pathlib.Path(filename).resolve().parent not in _PACKAGES:
        return show_other(message, category, filename, lineno, file, line)
    text = str(message).removeprefix("cellsearch: ")
    print(f"cellsearch: warning: {text}", file=sys.stderr if file is None else file)


def _terminate(signum, frame):
    """SIGTERM (`kill PID`, a batch system's time limit, `timeout`): a run stops as on Ctrl-C."""
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would blame the top-level parser and print its usage, not the command's
        before_command = argv[: argv.index(args.command)]  # `cellsearch --x show`: not the command's
        blamed = parser if any(arg in before_command for arg in unknown) else args.command_parser
        blamed.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv
    stored = args.run in (cmd_search, cmd_baselines, cmd_reproduce)
    previous = None
    if stored and threading.current_thread() is threading.main_thread():
        _TERMINATED.clear()  # (main may run again in one process, as the tests run it)
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_print_warning, warnings.showwarning)
            return args.run(args)
    except BrokenPipeError:  # `cellsearch ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except (UsageError, CellError, ValueError, RuntimeError, OSError) as error:
        if os.environ.get("CELLSEARCH_TRACEBACK"):
            raise
        print(f"cellsearch: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        terminated = bool(_TERMINATED)
        print(f"cellsearch: {'stopped by SIGTERM' if terminated else 'interrupted'}"
              + ("; every finished trial is stored, and the same command resumes the run"
                 if stored else ""), file=sys.stderr)  # fmt: skip
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
