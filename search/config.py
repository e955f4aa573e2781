"""Search configs: TOML files parsed into frozen, validated dataclasses.

    config = load_config("configs/quick.toml", overrides={"seed": 1, "jozefowicz.list_size": 50})
    config = load_config("quick")  # the same file, by name, from wherever cellsearch is installed

Unknown keys, wrong types and out-of-range values are `ConfigError`s whose one-line message names
the file and the key. `to_toml(config)` writes the resolved config that goes into a run's run.toml.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tomllib
import typing
import warnings

from tasks import GRID, PRESETS, TASKS, preset, task_class
from tasks.registry import check_batches

class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming file and key."""


@dataclasses.dataclass(frozen=True)
class JozefowiczOptions:
    """The paper's loop; the values the paper leaves open are options (paper.md section 3)."""

    screen_task: str = "memorize"  # new cells must first pass this task with one random setting
    screen_threshold: float = 0.3  # ... reaching this score (paper: unknown)
    list_size: int = 100  # the paper's top-100 list
    p_reevaluate: float = 0.25  # chance that a step re-evaluates a listed cell instead of mutating
    baseline_settings: int = 4  # settings per task for lstm and gru when seeding the list


@dataclasses.dataclass(frozen=True)
class EvolutionOptions:
    """Regularized evolution (Real et al. 2019): tournament selection, the oldest dies."""

    population: int = 10
    tournament: int = 3


@dataclasses.dataclass(frozen=True)
class RandomOptions:
    """Random search over cells drawn by `search.mutation.random_cell`."""

    cell_size: int = 6  # computed nodes per random cell


@dataclasses.dataclass(frozen=True)
class NasbenchOptions:
    """Random cells by NAS-Bench-NLP's generator rules (`search/nasbench.py`)."""

    vertices: int = 7  # NAS-Bench-NLP's intermediate vertices per cell
    p_memory: float = 0.0  # share of cells with a second state (h_prev_1); its examples have none


def baselines_cell(entry: str):
    """The cell of a `[baselines] cells` entry: a baseline's name, or a cell's equations (e.g. a
    cell a search found, to evaluate like a baseline).

    Returns:
      (the baseline's name, or None for another cell; equations of a baseline give its name), graph.

    Raises:
      ValueError naming the problem.
    """
    from cells import BASELINES, baseline, parse

    if entry in BASELINES:
        return entry, baseline(entry)
    if "=" not in entry:
        raise ValueError(f"unknown baseline '{entry}' (known: {', '.join(BASELINES)}; or a cell's "
                         "equations)")  # fmt: skip
    try:
        graph = parse(entry, source="cell")
    except ValueError as error:
        raise ValueError(f"{_short(entry)}: {error}") from None
    return next((name for name in BASELINES if baseline(name).hash == graph.hash), None), graph


def _is_number(value, whole: bool) -> bool:
    """A TOML number (never a bool); `whole`: an integer."""
    kinds = int if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool)


def _same_kind(value, default) -> bool:
    """Whether a TOML value fits an option whose default is `default` (an int fits a float)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return _is_number(value, whole=isinstance(default, int))
    if isinstance(default, (list, tuple)):
        return isinstance(value, list)
    return isinstance(value, type(default))


def _short(entry: str) -> str:
    """A cell entry in one line, for messages."""
    line = " / ".join(entry.strip().splitlines())
    return line if len(line) <= 60 else line[:57] + "..."


@dataclasses.dataclass(frozen=True)
class BaselinesOptions:
    """The `baselines` strategy: no search, these cells with `settings_per_task` settings each:
    baseline names, or a cell's equations (origin "given": a cell found elsewhere)."""

    cells: tuple[str, ...] = (
        "tanh", "lstm", "lstm_f", "lstm_i", "lstm_o", "lstm_b", "gru", "mut1", "mut2", "mut3",
    )  # fmt: skip
    # the paper's Table 2 compares cells with and without dropout: every setting drawn for these
    # tasks is trained twice, once as drawn (dropout 0) and once with this dropout
    dropout: float = 0.0
    dropout_tasks: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """A whole search. Every field but `max_trials` shapes the sequence of trials."""

    name: str = "search"
    # jozefowicz | regularized_evolution | random | nasbench_nlp_random | baselines, or
    # "MODULE:CLASS": a `search.Strategy` subclass of your own (`search.strategies.strategy_class`)
    strategy: str = "jozefowicz"
    seed: int = 0
    preset: str = "quick"  # budgets per task: quick | small | paper
    # the search tasks, score = min over them: built-in names, or "MODULE:CLASS" for a task of your
    # own (`tasks.task_class`)
    tasks: tuple[str, ...] = ("arith", "xml", "ptb")
    settings_per_task: int = 20  # paper: 20 random settings per task for a new cell
    cells_per_round: int = 4  # actions per round of the loop: trials run in parallel within one
    max_trials: int = 1000  # the search stops after this many trials (may grow on resume)
    retries: int = 2  # a trial whose worker died is retried this often, then recorded as error
    budget: dict = dataclasses.field(default_factory=dict)  # task -> budget overrides
    task_options: dict = dataclasses.field(default_factory=dict)  # task -> task options
    # hyperparameter -> the values its settings are drawn from, in place of the paper's grid
    # (`tasks.GRID`), e.g. {"layers": [1, 2]} for a cheaper search; empty: the paper's grid
    grid: dict = dataclasses.field(default_factory=dict)
    jozefowicz: JozefowiczOptions = JozefowiczOptions()
    regularized_evolution: EvolutionOptions = EvolutionOptions()
    random: RandomOptions = RandomOptions()
    nasbench_nlp: NasbenchOptions = NasbenchOptions()
    baselines: BaselinesOptions = BaselinesOptions()
    # the options of a strategy of your own: keys and types as its class's `options` defaults
    strategy_options: dict = dataclasses.field(default_factory=dict)
    # the cells round 0 evaluates, from which the jozefowicz and regularized_evolution strategies
    # search (the top list, the first population): baseline names or a cell's equations (origin
    # "given", e.g. cells an earlier search found); gru, the score's reference, is always added
    seed_cells: tuple[str, ...] = ("lstm", "gru")
    leaky_relu: bool = False  # add NAS-Bench-NLP's leaky_relu to the activations mutation draws
    # trials of one cell, task and layer count trained together as one vmapped program (up to
    # this many; `tasks.train_settings`): for GPU workers. Changes no trial, only how it runs.
    vmap_settings: int = 1
    # workers run with `search.executor.DETERMINISTIC_XLA_FLAGS`, so that a trial run again on a
    # GPU gives the same numbers. Changes no trial's spec, only how it runs.
    deterministic: bool = False

    def validate(self, source: str = "config", near: pathlib.Path | None = None) -> None:
        """Raises ConfigError naming the key of the first problem; `near`, the config file's
        directory, is searched for the modules of a strategy and tasks of your own
        (`strategy_class`, `tasks.task_class`)."""
        def fail(key, message):
            raise ConfigError(f"{source}: {key}: {message}")

        # the name is the default run directory, runs/NAME: exactly one path component
        name = self.name
        if (not name.strip() or name in (".", "..") or "/" in name or "\\" in name
                or not name.isprintable()):  # fmt: skip
            fail("name", f"must name one directory (no '/', not empty, '.' or '..'), got {name!r}")
        for key, names in (("tasks", self.tasks), ("baselines.cells", self.baselines.cells),
                           ("baselines.dropout_tasks", self.baselines.dropout_tasks),
                           ("seed_cells", self.seed_cells)):  # fmt: skip
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                fail(key, f"lists {', '.join(repeated)} more than once")
        from search.strategies import STRATEGIES, strategy_class

        try:  # (imports the module of a strategy of your own)
            strategy = strategy_class(self.strategy, near)
        except ValueError as error:
            raise ConfigError(f"{source}: strategy: {error}") from error
        for key, value in self.strategy_options.items():
            if key not in strategy.options:
                known = ", ".join(strategy.options) or ("none; a built-in strategy's options are "
                                                        "its own table, such as [jozefowicz]")  # fmt: skip
                fail(f"strategy_options.{key}", f"not an option of strategy '{self.strategy}' "
                                                f"(its options: {known})")  # fmt: skip
            default = strategy.options[key]
            if not _same_kind(value, default):
                fail(f"strategy_options.{key}", f"must be {type(default).__name__} like its default "
                                                f"{default!r}, got {type(value).__name__} {value!r}")  # fmt: skip
        if self.preset not in PRESETS:
            fail("preset", f"unknown preset '{self.preset}' (known: {', '.join(PRESETS)})")
        if not self.tasks:
            fail("tasks", "needs at least one task")
        for task in (*self.tasks, self.jozefowicz.screen_task):
            try:  # (imports the module of a task of your own)
                task_class(task, near)
                preset(self.preset, task)
            except ValueError as error:
                fail("tasks", str(error))
        for key in ("settings_per_task", "cells_per_round", "max_trials", "vmap_settings"):
            if getattr(self, key) < 1:
                fail(key, f"must be >= 1, got {getattr(self, key)}")
        if self.retries < 0:
            fail("retries", f"must be >= 0, got {self.retries}")
        if not 0 <= self.jozefowicz.p_reevaluate <= 1:
            fail("jozefowicz.p_reevaluate", "must be in [0, 1]")
        for key in ("list_size", "baseline_settings"):
            if getattr(self.jozefowicz, key) < 1:
                fail(f"jozefowicz.{key}", "must be >= 1")
        if self.regularized_evolution.population < 2:
            fail("regularized_evolution.population", "must be >= 2")
        if not 1 <= self.regularized_evolution.tournament <= self.regularized_evolution.population:
            fail("regularized_evolution.tournament", "must be in [1, population]")
        for key, entries in (("baselines.cells", self.baselines.cells), ("seed_cells", self.seed_cells)):
            seen: dict[str, str] = {}  # hash -> the entry that gave it
            for entry in entries:
                try:
                    _, graph = baselines_cell(entry)
                except ValueError as error:
                    fail(key, str(error))
                if graph.hash in seen:
                    fail(key, f"lists one cell twice ({graph.hash}: {_short(seen[graph.hash])} and "
                              f"{_short(entry)})")  # fmt: skip
                seen[graph.hash] = entry
        if not strategy.seeded and self.seed_cells != SearchConfig.seed_cells:
            seeded = [name for name, cls in STRATEGIES.items() if cls.seeded]
            fail("seed_cells", f"the {self.strategy} strategy starts from no seed cells (only "
                               f"{' and '.join(seeded)} do)")  # fmt: skip
        for task in self.baselines.dropout_tasks:
            if task not in self.tasks:
                fail("baselines.dropout_tasks", f"'{task}' is not one of the tasks ({', '.join(self.tasks)})")
        if self.baselines.dropout_tasks and not 0 < self.baselines.dropout < 1:
            fail("baselines.dropout", f"must be in (0, 1) when dropout_tasks is set, got {self.baselines.dropout}")
        if self.nasbench_nlp.vertices < 1:
            fail("nasbench_nlp.vertices", "must be >= 1")
        if not 0 <= self.nasbench_nlp.p_memory <= 1:
            fail("nasbench_nlp.p_memory", "must be in [0, 1]")
        if self.random.cell_size < 1:
            fail("random.cell_size", "must be >= 1")
        for name, values in self.grid.items():
            if name not in GRID:
                fail(f"grid.{name}", f"unknown hyperparameter (known: {', '.join(GRID)})")
            whole = name == "layers"
            if (not isinstance(values, list) or not values
                    or not all(_is_number(v, whole) and v > 0 for v in values)):  # fmt: skip
                kind = "whole numbers >= 1" if whole else "numbers > 0"
                fail(f"grid.{name}", f"must be a non-empty list of {kind}, got {values!r}")
            if len(set(values)) < len(values):
                fail(f"grid.{name}", f"lists a value more than once: {values!r}")
        for section in ("budget", "task_options"):
            for task, values in getattr(self, section).items():
                if task not in TASKS and task not in (*self.tasks, self.jozefowicz.screen_task):
                    fail(f"{section}.{task}", f"unknown task (known: {', '.join(TASKS)}; and "
                                              "the config's tasks of your own)")  # fmt: skip
                if not isinstance(values, dict):
                    fail(f"{section}.{task}", "must be a table of key = value")
        from tasks import TrialSpec

        for task in (*self.tasks, self.jozefowicz.screen_task):
            try:  # the budget and task options of every task make a valid trial
                spec = TrialSpec.from_preset("lstm", task, self.preset, None, 0,
                                             self.budget.get(task), self.task_options.get(task))  # fmt: skip
                spec.validate()
            except (TypeError, ValueError) as error:
                fail(f"budget/task_options of {task}", str(error).splitlines()[0])
            if uneven := spec.budget.uneven_calls():
                warnings.warn(f"{source}: budget of {task}: {uneven}", stacklevel=2)
            try:  # a task of your own: its batches have the form the trainer reads
                check_batches(spec)
            except ValueError as error:
                fail("tasks", f"{task}: {error}")

    def own_tasks(self) -> list[str]:
        """The tasks of your own ("MODULE:CLASS") the run trains, the screening task included."""
        return [t for t in dict.fromkeys((*self.tasks, self.jozefowicz.screen_task)) if t not in TASKS]

    def settings_grid(self) -> dict[str, tuple]:
        """The grid the trials' settings are drawn from: the paper's, with `grid`'s values."""
        return GRID | {name: tuple(values if name == "layers" else map(float, values))
                       for name, values in self.grid.items()}  # fmt: skip

    def search_fields(self) -> dict:
        """The fields that determine the trial sequence (all but name, max_trials, vmap_settings
        and deterministic)."""
        fields = to_dict(self)
        for key in ("name", "max_trials", "vmap_settings", "deterministic"):
            fields.pop(key)
        return fields


def to_dict(config) -> dict:
    values = dataclasses.asdict(config)
    values |= {"tasks": list(config.tasks), "seed_cells": list(config.seed_cells)}
    values["baselines"] = dataclasses.asdict(config.baselines) | {
        "cells": list(config.baselines.cells), "dropout_tasks": list(config.baselines.dropout_tasks)
    }
    return values


def _check_type(value, annotation, key: str, source: str):
    """Converts TOML values to the field's type, or raises ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {key}: must be a list of names, got {value!r}")
        return tuple(value)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: must be a table, got {value!r}")
        return value
    if isinstance(annotation, type):
        same_kind = isinstance(value, annotation) and (annotation is bool) == isinstance(value, bool)
        if not same_kind:
            raise ConfigError(f"{source}: {key}: must be {annotation.__name__}, "
                              f"got {type(value).__name__} {value!r}")  # fmt: skip
    return value


def _build(cls, values: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key '{name}' (known here: {', '.join(known)})"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {name}: must be a table [{name}]")
            kwargs[key] = _build(hint, value, f"{name}.", source)
        else:
            kwargs[key] = _check_type(value, hint, name, source)
    return cls(**kwargs)


def _set_dotted(values: dict, key: str, value) -> None:
    """Sets `values[a][b][c] = value` for the key "a.b.c". A part with a ":" names a task of your
    own and takes in the dotted module before it: "budget.mypackage.tasks:Copy.steps" is
    ["budget", "mypackage.tasks:Copy", "steps"]."""
    parts = key.split(".")
    colon = next((i for i, part in enumerate(parts) if ":" in part), None)
    if colon is not None and colon > 1:
        parts[1 : colon + 1] = [".".join(parts[1 : colon + 1])]
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a table")
    node[parts[-1]] = value


def bundled_configs() -> pathlib.Path:
    """The directory of the configs that ship with cellsearch (quick, small, paper, baselines-*).

    In a source checkout it is the repository's configs/; an installed wheel carries the same files
    as package data of `search` (search/configs; pyproject.toml maps one to the other).
    """
    installed = pathlib.Path(__file__).parent / "configs"
    return installed if installed.is_dir() else pathlib.Path(__file__).parents[1] / "configs"


def config_path(name: str | os.PathLike) -> pathlib.Path:
    """The config file `name` names: that file, else the shipped config of that bare name.

    `quick` is ./quick, else ./quick.toml, else `bundled_configs()/quick.toml`, so `cellsearch
    search quick` works from any directory once cellsearch is installed; a path with a directory
    in it is only ever that path.
    """
    path = pathlib.Path(name)
    if path.exists() or path.parent != pathlib.Path("."):
        return path
    file = f"{path.name.removesuffix('.toml')}.toml"
    for candidate in (pathlib.Path(file), bundled_configs() / file):
        if candidate.is_file():
            return candidate
    return path


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> SearchConfig:
    """Reads a TOML config (a file, or a bundled config by name), applies overrides, validates.

    Args:
      path: a TOML file, or the name of a bundled config (`quick`; see `config_path`).
      overrides: `key=value` overrides, dotted for tables (`{"jozefowicz.list_size": 50}`).

    Returns:
      The validated `SearchConfig`. A strategy of your own ("MODULE:CLASS") is imported to check
      it, with the current directory and then the file's directory searched last.

    Raises:
      ConfigError: unreadable file, TOML syntax error, unknown key, wrong type or bad value.
    """
    source, file = str(path), config_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        hint = ""
        if not pathlib.Path(path).exists():
            names = ", ".join(sorted(p.stem for p in bundled_configs().glob("*.toml")))
            hint = f"; the configs that ship with cellsearch go by name alone: {names}"
        raise ConfigError(f"{source}: cannot read ({reason}){hint}") from None
    # a strategy of your own may be a module beside its config file (not beside a shipped one)
    near = None if file.parent == bundled_configs() else file.parent
    return parse_config(text, source, overrides, near=near)


def parse_config(text: str, source: str = "config", overrides: dict | None = None,
                 validate: bool = True, near: pathlib.Path | None = None) -> SearchConfig:  # fmt: skip
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: invalid TOML ({error})") from None
    for key, value in (overrides or {}).items():
        _set_dotted(values, key, value)
    config = _build(SearchConfig, values, "", source)
    if validate:  # (it imports the trainer, and with it jax, to check every task's budget)
        config.validate(source, near)
    return config


def stored_config(stored: dict, source: str, validate: bool = True) -> SearchConfig:
    """The config a run was made with, from its run.toml as `RunStore.metadata()` reads it.

    Args:
      validate: check it as a new config is checked (a resume does; `status`, which only reads
        the run, does not, and so needs no jax).

    Raises:
      ConfigError: this version of cellsearch cannot read it (a key it no longer knows).
    """
    return parse_config(to_toml(stored.get("config", {})), source, validate=validate)


# ---------------------------------------------------------------------------------- writing
def to_toml(values: dict) -> str:
    """A minimal TOML writer for configs: scalars, lists of scalars, and nested tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for name, table in tables:
        _table(name, table, lines)
    return "\n".join(lines) + "\n"


def _table(name: str, table: dict, lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    if scalars or not nested:
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in scalars.items())
    for key, value in nested.items():
        _table(f"{name}.{_key(key)}", value, lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _value(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if value is None:
        return '""'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")

