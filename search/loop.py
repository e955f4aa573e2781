"""The search loop: rounds of proposals, run on an executor, stored, applied in trial-id order.

    summary = run_search(config, "runs/quick")       # a local Ray on 127.0.0.1, a worker per core
    summary = run_search(config, "runs/quick", executor_for(config, address="auto", workers=64))

Round r: the strategy proposes trials with the generator `default_rng([seed, r])`; they get the
next trial ids and seeds `seed * 1_000_003 + id`; the executor runs those not already in the store
(in parallel, rows appended as they finish); then the strategy sees the round's rows in id order.
So the trial sequence depends only on the config, the seed and the results, never on timing, and
running the same command on an existing run directory resumes it exactly: stored rows are replayed
without training, trials that were in flight when it stopped are run again, and the search goes on
as if it had never stopped. A config that would change the sequence is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import time
import warnings
from typing import Callable, NamedTuple

import numpy as np

from results import RunStore, StoreError
from results.store import crash_now, fault_point, fill_disk
from search.config import ConfigError, SearchConfig, stored_config, to_dict, to_toml
from search.strategies import STRATEGIES, CellRecord, Proposal, Strategy, strategy_class
from tasks import Budget, HParams, TrialSpec, task_class
from tasks.trainer import code_version, package_versions
from tasks.usercode import class_source

STORE_FORMAT = 1


class Progress(NamedTuple):
    """What the loop reports after each trial row."""

    trials: int  # rows in the store
    max_trials: int
    failures: int  # rows with status error or diverged
    best: tuple[str, float] | None  # (cell label, Jozefowicz score) of the best cell so far
    ran: int  # trials trained by this process (not replayed)
    seconds: float  # since this process started the search


@dataclasses.dataclass
class SearchSummary:
    trials: int = 0
    ran: int = 0
    replayed: int = 0
    rounds: int = 0
    best: tuple[str, float] | None = None
    grouped: int = 0  # of `ran`, the trials trained as lanes of a vmapped group (`vmap_settings`)


def _utc_now() -> str:
    """The time now, as run.toml's `created` and a row's `stored_at` keep it (ISO 8601, UTC)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def trial_seed(config: SearchConfig, trial: int) -> int:
    return (config.seed * 1_000_003 + trial) % 2**31


def make_spec(config: SearchConfig, proposal: Proposal, trial: int, name: str | None) -> TrialSpec:
    budget = config.budget.get(proposal.task, {})
    options = config.task_options.get(proposal.task, {})
    try:
        return TrialSpec.from_preset(name or proposal.graph.text(), proposal.task, config.preset,
                                     proposal.hparams, trial_seed(config, trial), budget, options)  # fmt: skip
    except (TypeError, ValueError) as error:
        raise ConfigError(f"budget/task options for {proposal.task}: {error}") from None


def _run_tasks(config: SearchConfig) -> list[str]:
    """The run's tasks, the screening task included, sorted."""
    return sorted({*config.tasks, config.jozefowicz.screen_task})


def _tasks_of(config: SearchConfig) -> dict:
    """The run's tasks by name, as made with the run's options."""
    return {task: TrialSpec.from_preset("lstm", task, config.preset,
                                        task_options=config.task_options.get(task)).make_task()
            for task in _run_tasks(config)}  # fmt: skip


def _budgets_of(config: SearchConfig) -> dict:
    """Each task's budget as the run's preset and `[budget]` overrides resolve it with this code
    (a config names its preset, and a preset's budgets may change between versions)."""
    return {task: dataclasses.asdict(TrialSpec.from_preset(
                "lstm", task, config.preset, budget_overrides=config.budget.get(task)).budget)
            for task in _run_tasks(config)}  # fmt: skip


def _sources_of(config: SearchConfig) -> dict:
    """The code of your own a run of `config` runs, which `code_version` does not cover: the
    strategy's and each task's class, file and the file's SHA-256 (`tasks.usercode.class_source`)."""
    sources = {}
    if config.strategy not in STRATEGIES:
        sources["strategy_source"] = class_source(strategy_class(config.strategy))
    if config.own_tasks():
        sources["task_sources"] = {name: class_source(task_class(name)) for name in config.own_tasks()}
    return sources


def run_toml(config: SearchConfig) -> str:
    """The run.toml of a new run: resolved config, code and package versions, data checksums."""
    checksums = {name: task.data_checksum() for name, task in _tasks_of(config).items()}
    # not `provenance`: its device field starts a JAX backend, and on a GPU node the driver would
    # take 75% of the GPU's memory from the workers that train there (each trial row names its
    # worker's device)
    versions = {**package_versions(), "python": platform.python_version()}
    meta = {
        "format": STORE_FORMAT,
        "created": _utc_now(),
        "code_version": code_version(),
        "versions": {k: v or "" for k, v in versions.items()},
        "data_checksums": checksums,
        "budgets": _budgets_of(config),
        **_sources_of(config),
    }
    return to_toml({"config": to_dict(config), "run": meta})


def check_resumable(store: RunStore, config: SearchConfig) -> None:
    """Refuses to resume a run whose stored config differs in a field that shapes the search."""
    stored = store.metadata()
    run = stored.get("run", {})
    if run.get("format") != STORE_FORMAT:
        raise StoreError(f"{store.config_path}: store format {run.get('format')!r} is not "
                         f"{STORE_FORMAT}: written by an incompatible cellsearch")  # fmt: skip
    try:
        previous = stored_config(stored, str(store.config_path))
    except ConfigError as error:
        raise StoreError(f"stored config no longer valid: {error}") from None
    old, new = previous.search_fields(), config.search_fields()
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise ConfigError(
                f"cannot resume {store.path}: '{key}' was {old.get(key)!r}, now {new.get(key)!r}; "
                "it would change the trial sequence (use a new --out, or the old value)"
            )
    stored_data = run.get("data_checksums", {})
    for name, task in _tasks_of(config).items():
        before, now = stored_data.get(name), task.data_checksum()
        if before is not None and before != now:
            raise ConfigError(
                f"cannot resume {store.path}: the data of task '{name}' changed ({before} -> "
                f"{now}), so its new trials would see other data than its stored ones (use a new "
                "--out, or the cellsearch version that wrote the run)"
            )
    stored_budgets = run.get("budgets")
    if stored_budgets is None:  # a run made before session 38: the budgets its rows trained with
        stored_budgets = {}
        names = [f"budget_{field.name}" for field in dataclasses.fields(Budget)]
        for row in store.trials():
            if row["task"] not in stored_budgets and all(name in row for name in names):
                stored_budgets[row["task"]] = {name.removeprefix("budget_"): row[name] for name in names}
    for name, now in _budgets_of(config).items():
        before = stored_budgets.get(name)
        if before is not None and before != now:
            changed = [f"{key} {before.get(key)} -> {value}" for key, value in now.items()
                       if before.get(key) != value]  # fmt: skip
            raise ConfigError(
                f"cannot resume {store.path}: the budget of task '{name}' at preset "
                f"'{config.preset}' changed since the run was made ({', '.join(changed)}), so its "
                "new trials would train otherwise than its stored ones (use a new --out, or the "
                "cellsearch version that wrote the run)"
            )


def _warn_if_code_changed(store: RunStore, config: SearchConfig) -> None:
    """A resumed run whose strategy or tasks of your own changed since the run was made: the
    replayed trials are still checked against what the strategy proposes, but the new ones
    follow new code."""
    run = store.metadata().get("run", {})
    now = _sources_of(config)
    pairs = [(run.get("strategy_source", {}), now.get("strategy_source", {}))]
    pairs += [(run.get("task_sources", {}).get(name, {}), source)
              for name, source in now.get("task_sources", {}).items()]  # fmt: skip
    for before, after in pairs:
        if before.get("sha256") and after.get("sha256") and after["sha256"] != before["sha256"]:
            code = after.get("package") or after["file"]  # a package: any of its .py files
            warnings.warn(f"{store.path}: {code} changed since the run was made (sha256 "
                          f"{before['sha256'][:12]} -> {after['sha256'][:12]}); its trials from "
                          "here on follow the new code", stacklevel=2)  # fmt: skip


def run_search(
    config: SearchConfig,
    run_dir,
    executor_factory: Callable | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> SearchSummary:
    """Runs (or resumes) a search into `run_dir`.

    Args:
      config: the validated search config.
      run_dir: the run directory; created if new, resumed if it holds a run.
      executor_factory: returns a context manager with `run(jobs, on_row)`; entered before a
        new run is written, and in a resumed run only when a trial must be trained (replaying a
        finished run starts no Ray). Default `executor_for(config)`: a local Ray on 127.0.0.1
        with a worker per core, or the cluster `RAY_ADDRESS` names, or the Ray this process has
        already joined.
      progress: called after each row with a `Progress`.

    Returns:
      A `SearchSummary`.
    """
    if executor_factory is None:
        from search.executor import executor_for

        executor_factory = executor_for(config)
    store = RunStore(run_dir)
    if not store.exists():
        store.check_new()  # before the lock file is made: never among another directory's files
    store.lock()  # one writer per run: a second driver would train and store its trials again
    try:
        return _run_locked(store, config, executor_factory, progress)
    finally:
        store.unlock()


def _run_locked(store: RunStore, config: SearchConfig, executor_factory: Callable,
                progress: Callable[[Progress], None] | None) -> SearchSummary:  # fmt: skip
    new = not store.exists()
    if not new:
        check_resumable(store, config)
        _warn_if_code_changed(store, config)
    start, executor, context = time.monotonic(), None, None
    try:
        if new:
            # the workers first: an executor that refuses to start (too few GPUs, workers with
            # other code) then leaves no run behind that a corrected command would have to resume
            if config.max_trials > 0:
                context, executor = _entered(executor_factory)
            store.create(run_toml(config))
        store.open_for_append()
        stored = {row["trial"]: row for row in store.trials()}
        known_cells = {row["hash"] for row in store.cells()}
        strategy: Strategy = strategy_class(config.strategy)(config)
        tasks = {*config.tasks, config.jozefowicz.screen_task}  # those a proposal may train on
        summary = SearchSummary()
        failures = sum(row.get("status") != "ok" for row in stored.values())
        next_trial, round_index = 0, 0
        while next_trial < config.max_trials:
            rng = np.random.default_rng([config.seed, round_index])
            proposals = strategy.propose(round_index, rng)[: config.max_trials - next_trial]
            if not proposals:
                break
            rows: dict[int, dict] = {}
            jobs, meta = [], {}
            for proposal in proposals:
                record = _proposed_cell(strategy, proposal, tasks)
                if record.graph.hash not in known_cells:
                    store.append_cell(record.row() | {"round": round_index})
                    known_cells.add(record.graph.hash)
                trial = next_trial
                next_trial += 1
                meta[trial] = {"trial": trial, "round": round_index, "strategy": config.strategy,
                               "purpose": proposal.purpose, "cell_hash": proposal.graph.hash,
                               "cell_name": record.name, "origin": record.origin}  # fmt: skip
                if trial in stored:
                    if stored[trial].get("cell_hash") != proposal.graph.hash:
                        raise StoreError(
                            f"{store.trials_path}: trial {trial} is of another cell than this "
                            "config proposes; the run was made by other code or another config"
                        )
                    rows[trial] = stored[trial]
                    summary.replayed += 1
                else:
                    jobs.append((trial, make_spec(config, proposal, trial, record.name)))
            if jobs:
                if executor is None:
                    context, executor = _entered(executor_factory)
                if fault_point("before_trials"):
                    crash_now()
                if fault_point("disk_full"):
                    fill_disk(store.trials_path)

                def on_row(trial: int, row: dict) -> None:
                    nonlocal failures
                    # when the driver stored it: a copied run's file times say when it was copied
                    full = meta[trial] | row | {"stored_at": _utc_now()}
                    store.append_trial(full)
                    if fault_point("after_row"):
                        crash_now()
                    rows[trial] = full
                    summary.ran += 1
                    summary.grouped += full.get("vmapped_settings", 1) > 1
                    failures += full.get("status") != "ok"
                    if progress:
                        progress(Progress(len(stored) + summary.ran, config.max_trials, failures,
                                          _best(strategy), summary.ran,
                                          time.monotonic() - start))  # fmt: skip

                executor.run(jobs, on_row, group=config.vmap_settings)
            if fault_point("strategy_update"):
                crash_now()
            strategy.update([rows[t] for t in sorted(rows)])
            round_index += 1
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    if fault_point("end"):
        crash_now()
    summary.trials, summary.rounds, summary.best = next_trial, round_index, _best(strategy)
    return summary


def _proposed_cell(strategy: Strategy, proposal, tasks: set[str]) -> CellRecord:
    """The book's record of a proposal's cell; a strategy of your own that proposes anything else
    is stopped with one line saying what it did wrong."""
    where = f"strategy {strategy.config.strategy}"
    if not isinstance(proposal, Proposal):
        raise ValueError(f"{where} proposed {type(proposal).__name__} {proposal!r:.80}, not a "
                        "search.Proposal")  # fmt: skip
    record = strategy.book.cells.get(getattr(proposal.graph, "hash", None))
    if record is None:
        raise ValueError(f"{where} proposed a cell it did not add to its book "
                         "(`self.book.add(graph, origin)` registers one)")  # fmt: skip
    if proposal.task not in tasks:
        raise ValueError(f"{where} proposed a trial on task '{proposal.task}', which is not one of "
                         f"the config's ({', '.join(sorted(tasks))})")  # fmt: skip
    if not isinstance(proposal.hparams, HParams):
        raise ValueError(f"{where} proposed settings {proposal.hparams!r:.80}, not a tasks.HParams "
                         "(`self.book.settings` draws them from the grid)")  # fmt: skip
    return record


def _entered(executor_factory: Callable) -> tuple:
    """(context manager, executor): the factory's context, entered."""
    context = executor_factory()
    return context, context.__enter__()


def _best(strategy: Strategy) -> tuple[str, float] | None:
    ranked = strategy.book.ranked()
    if not ranked:
        return None
    top = ranked[0]
    return (top.name or top.graph.hash, strategy.book.jozefowicz_score(top))

