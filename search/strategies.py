"""Search strategies: what to train next, given what has been trained.

A strategy is a small object with two methods, called by `search.loop` once per round:

    proposals = strategy.propose(round_index, rng)   # trials of this round
    strategy.update(rows)                            # their results, in trial-id order

Because results are applied in trial-id order and every random choice comes from the round's
generator, a strategy is a deterministic function of (config, seed, results): a resumed search
proposes exactly the trials an uninterrupted one would. `STRATEGIES` maps a built-in strategy's
name to its class; a config names a strategy of your own, a `Strategy` subclass in a module you
write, as "MODULE:CLASS" (`strategy_class`).

The shared currency is the Jozefowicz score of a cell: for each search task, its best validation
score over the settings tried, divided by the GRU's best; then the minimum over the tasks.
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from cells import Graph, baseline, from_nasbench_nlp
from search.config import SearchConfig, baselines_cell
from search.mutation import ACTIVATIONS, ACTIVATIONS_WITH_LEAKY_RELU, Deduper, mutate, random_cell
from search.nasbench import sample_recipe
from tasks import HParams, sample_settings
from tasks.usercode import named_class

REFERENCE = "gru"  # the paper normalises every score by the GRU's


class Proposal(NamedTuple):
    """One trial a strategy asks for."""

    graph: Graph
    task: str
    hparams: HParams
    purpose: str  # "baseline", "screen" or "evaluate"


@dataclasses.dataclass
class CellRecord:
    """What is known about one cell."""

    graph: Graph
    name: str | None  # baseline name, if it is one
    origin: str  # "baseline", "mutation", "random", "given" (equations in [baselines] cells)
    parent: str | None = None
    transforms: tuple[str, ...] = ()
    best: dict = dataclasses.field(default_factory=dict)  # task -> best score so far
    drawn: dict = dataclasses.field(default_factory=dict)  # task -> settings drawn so far
    trials: int = 0
    screened: bool | None = None  # passed the screen (None: not screened)

    def row(self) -> dict:
        """The cells.jsonl record."""
        return {"hash": self.graph.hash, "fingerprint": self.graph.fingerprint, "name": self.name,
                "text": self.graph.text(), "parent": self.parent, "origin": self.origin,
                "transforms": list(self.transforms)}  # fmt: skip


class Book:
    """The cells seen so far and their best scores; shared logic of every strategy."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self.cells: dict[str, CellRecord] = {}
        self.dedup = Deduper()

    def add(self, graph: Graph, origin: str, name: str | None = None, parent: str | None = None,
            transforms: tuple[str, ...] = ()) -> CellRecord | None:  # fmt: skip
        """Registers a new cell; None if it (or a cell computing the same function) was seen."""
        if not self.dedup.add(graph):
            return None
        record = CellRecord(graph, name, origin, parent, transforms)
        self.cells[graph.hash] = record
        return record

    def settings(self, record: CellRecord, task: str, count: int, purpose: str) -> list[Proposal]:
        """`count` new settings of `record` on `task`, never repeating one already drawn."""
        start = record.drawn.get(task, 0)
        chosen = sample_settings((record.graph.hash, task, self.config.seed), count, start,
                                 self.config.settings_grid())
        record.drawn[task] = start + len(chosen)
        return [Proposal(record.graph, task, hp, purpose) for hp in chosen]

    def evaluate(self, record: CellRecord, count: int, purpose: str = "evaluate") -> list[Proposal]:
        """`count` new settings of `record` on every search task (the config's `tasks`)."""
        return [p for task in self.config.tasks for p in self.settings(record, task, count, purpose)]

    def record_result(self, row: dict) -> CellRecord:
        """Counts a trial row of a cell in the book, and its score in the cell's best (a diverged or
        failed trial has none)."""
        record = self.cells[row["cell_hash"]]
        record.trials += 1
        score = row.get("score")
        if score is not None:
            task = row["task"]
            record.best[task] = max(record.best.get(task, score), score)
        return record

    def jozefowicz_score(self, record: CellRecord) -> float | None:
        """min over search tasks of best / GRU best; None until every task has a score."""
        reference = self.cells.get(baseline(REFERENCE).hash)
        if reference is None:
            return None
        ratios = []
        for task in self.config.tasks:
            mine, ref = record.best.get(task), reference.best.get(task)
            if mine is None or not ref:
                return None
            ratios.append(mine / ref)
        return min(ratios)

    def ranked(self) -> list[CellRecord]:
        """Cells with a Jozefowicz score, best first (ties: earlier cell first)."""
        scored = [(self.jozefowicz_score(r), i, r) for i, r in enumerate(self.cells.values())]
        scored = [(s, i, r) for s, i, r in scored if s is not None]
        return [r for s, i, r in sorted(scored, key=lambda t: (-t[0], t[1]))]


class Strategy:
    """What to train next, given what has been trained; subclass it for a strategy of your own.

    `search.loop` calls `propose(round_index, rng)` once a round and trains what it returns, then
    `update(rows)` with the round's rows in trial-id order (a row as `results.load` gives one, as a
    dict: `cell_hash`, `task`, `score`, `status`, `purpose`, ...). Draw every random choice from
    `rng` (the round's generator, `default_rng([seed, round])`) and keep all state in the object:
    then a resumed run proposes what an uninterrupted one would. The loop stops at `max_trials`,
    or at a round that proposes nothing.

    Attributes:
      name: a built-in's name in configs; a strategy of your own goes by "MODULE:CLASS".
      options: defaults of the options it takes from the config's `[strategy_options]` table; an
        instance's `options` holds them with the config's values. Keys the defaults lack, and values
        of another type, are config errors.
      seeded: whether it starts from the config's `seed_cells`; a config of a strategy that does not
        is refused if it sets them.
      config: the `SearchConfig` (on an instance).
      book: the `Book` of the cells seen so far and their best scores (on an instance).
    """

    name = "base"
    options: dict = {}
    seeded = False

    def __init__(self, config: SearchConfig):
        self.config = config
        self.book = Book(config)
        self.activations = ACTIVATIONS_WITH_LEAKY_RELU if config.leaky_relu else ACTIVATIONS
        self.options = {**type(self).options, **config.strategy_options}

    def propose(self, round_index: int, rng: np.random.Generator) -> list[Proposal]:
        """The trials of round `round_index`, each of a cell in `book` (`book.add` registers one)."""
        raise NotImplementedError

    def update(self, rows: list[dict]) -> None:
        """Takes the round's rows, in trial-id order; this one records their scores in `book`."""
        for row in rows:
            self.book.record_result(row)

    def evaluate_cells(self, cells: tuple[str, ...], count: int) -> list[Proposal]:
        """`count` settings per search task of each cell not seen before: baseline names, or a
        cell's equations (origin "given"); the proposals round 0 usually makes."""
        out = []
        for entry in cells:
            name, graph = baselines_cell(entry)
            record = self.book.add(graph, "baseline" if name else "given", name=name)
            if record is not None:
                out += self.book.evaluate(record, count, purpose="baseline")
        return out

    def new_mutant(self, parent: CellRecord, rng: np.random.Generator) -> CellRecord | None:
        """A mutant of `parent` not seen before, registered in `book` (None after 20 repeats in a
        row)."""
        for _ in range(20):
            child = mutate(parent.graph, rng, activations=self.activations)
            record = self.book.add(child.graph, "mutation", parent=parent.graph.hash,
                                   transforms=child.transforms)  # fmt: skip
            if record is not None:
                return record
        return None


class Jozefowicz(Strategy):
    """The paper's loop (section 3.3 of paper.md).

    Round 0 evaluates the `seed_cells` (the paper's: `lstm` and `gru`; `gru` always), with
    `baseline_settings` settings per search task. Each later
    round first gives every cell that passed the screen in the previous round `settings_per_task`
    settings per search task; then takes `cells_per_round` steps, each either (probability
    `p_reevaluate`) `settings_per_task` more settings per task for a random cell of the top list, or
    a mutant of a random cell of the top list, screened on `screen_task` with one random setting
    and kept when its score reaches `screen_threshold`. The top list holds the `list_size` best
    cells by Jozefowicz score.
    """

    name = "jozefowicz"
    seeded = True

    def __init__(self, config: SearchConfig):
        super().__init__(config)
        self.passed: list[CellRecord] = []  # screened in, waiting for their evaluation

    def top(self) -> list[CellRecord]:
        return self.book.ranked()[: self.config.jozefowicz.list_size]

    def propose(self, round_index, rng):
        options = self.config.jozefowicz
        if round_index == 0:
            return self.evaluate_cells((*self.config.seed_cells, REFERENCE), options.baseline_settings)
        proposals = []
        for record in self.passed:
            proposals += self.book.evaluate(record, self.config.settings_per_task)
        self.passed = []
        listed = self.top() or [self.book.cells[baseline(REFERENCE).hash]]
        for _ in range(self.config.cells_per_round):
            pick = listed[rng.integers(len(listed))]
            if rng.random() < options.p_reevaluate:
                proposals += self.book.evaluate(pick, self.config.settings_per_task)
                continue
            child = self.new_mutant(pick, rng)
            if child is not None:
                proposals += self.book.settings(child, options.screen_task, 1, "screen")
        return proposals

    def update(self, rows):
        for row in rows:
            record = self.book.record_result(row)
            if row.get("purpose") == "screen":
                score = row.get("score")
                record.screened = score is not None and score >= self.config.jozefowicz.screen_threshold
                if record.screened:
                    self.passed.append(record)


class RegularizedEvolution(Strategy):
    """Regularized evolution (Real et al. 2019) with the Jozefowicz score as fitness.

    Round 0 evaluates `gru`, the other `seed_cells` (default `lstm`) and random cells up to
    `population`, `settings_per_task` settings per task each; they form the population. Each
    later round makes `cells_per_round` children: sample `tournament` members, mutate the
    fittest. After the round the children join the population and the oldest members leave until
    `population` remain.
    """

    name = "regularized_evolution"
    seeded = True

    def __init__(self, config: SearchConfig):
        super().__init__(config)
        self.population: list[CellRecord] = []
        self.children: list[CellRecord] = []

    def fitness(self, record: CellRecord) -> float:
        score = self.book.jozefowicz_score(record)
        return -np.inf if score is None else score

    def propose(self, round_index, rng):
        options = self.config.regularized_evolution
        count = self.config.settings_per_task
        if round_index == 0:
            proposals = self.evaluate_cells((REFERENCE, *self.config.seed_cells), count)
            self.population = list(self.book.cells.values())
            while len(self.population) < options.population:
                record = self.book.add(random_cell(rng, self.config.random.cell_size, activations=self.activations), "random")
                if record is not None:
                    self.population.append(record)
                    proposals += self.book.evaluate(record, count)
            return proposals
        proposals = []
        for _ in range(self.config.cells_per_round):
            chosen = rng.choice(len(self.population), size=options.tournament, replace=False)
            parent = max((self.population[i] for i in sorted(chosen)), key=self.fitness)
            child = self.new_mutant(parent, rng)
            if child is not None:
                self.children.append(child)
                proposals += self.book.evaluate(child, count)
        return proposals

    def update(self, rows):
        super().update(rows)
        self.population += self.children
        self.children = []
        del self.population[: max(0, len(self.population) - self.config.regularized_evolution.population)]


class RandomSearch(Strategy):
    """Random cells (`search.mutation.random_cell`), each given `settings_per_task` per task.

    Round 0 also evaluates `gru`, the reference of the Jozefowicz score.
    """

    name = "random"

    def propose(self, round_index, rng):
        count = self.config.settings_per_task
        proposals = self.evaluate_cells((REFERENCE,), count) if round_index == 0 else []
        for _ in range(self.config.cells_per_round):
            record = self.book.add(random_cell(rng, self.config.random.cell_size, activations=self.activations), "random")
            if record is not None:
                proposals += self.book.evaluate(record, count)
        return proposals


class NasbenchRandom(Strategy):
    """NAS-Bench-NLP's search space: random cells by its generator rules (`search.nasbench`),
    each given `settings_per_task` per task, scored like every other strategy. Round 0 also
    evaluates `gru`, the reference of the score."""

    name = "nasbench_nlp_random"

    def propose(self, round_index, rng):
        options, count = self.config.nasbench_nlp, self.config.settings_per_task
        proposals = self.evaluate_cells((REFERENCE,), count) if round_index == 0 else []
        for _ in range(self.config.cells_per_round):
            memory = bool(rng.random() < options.p_memory)
            graph = from_nasbench_nlp(sample_recipe(rng, options.vertices, memory))
            record = self.book.add(graph, "nasbench_nlp")
            if record is not None:
                proposals += self.book.evaluate(record, count)
        return proposals


class Baselines(Strategy):
    """No search: the cells of `[baselines] cells` (and the GRU), `settings_per_task` per task.

    Each setting drawn for a task of `dropout_tasks` is also trained with `dropout` (paired: the
    same lr, clip, init and layers), for the paper's Table 2.
    """

    name = "baselines"

    def propose(self, round_index, rng):
        if round_index > 0:
            return []
        options = self.config.baselines
        names = tuple(dict.fromkeys((*options.cells, REFERENCE)))
        proposals = []
        for proposal in self.evaluate_cells(names, self.config.settings_per_task):
            proposals.append(proposal)
            if proposal.task in options.dropout_tasks:
                proposals.append(proposal._replace(hparams=proposal.hparams._replace(dropout=options.dropout)))
        return proposals


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Jozefowicz, RegularizedEvolution, RandomSearch, NasbenchRandom, Baselines)
}


def strategy_class(name: str, near: str | os.PathLike | None = None) -> type[Strategy]:
    """The class a config's `strategy` names: a built-in's name, or "MODULE:CLASS" for a
    `Strategy` subclass of your own (imported by `tasks.usercode.import_class`: the current
    directory, then `near`, the config file's directory, are searched last).

    Raises:
      ValueError: one line naming the problem (unknown name, a module that does not import, a
        class that is missing or not a `Strategy`).
    """
    return named_class(name, STRATEGIES, Strategy, "search.Strategy", "strategy", near)


def baselines_trials(config: SearchConfig) -> list[Proposal]:
    """Every trial a `baselines` run of `config` trains, in order: its one round, to `max_trials`."""
    rng = np.random.default_rng([config.seed, 0])  # the generator `search.loop` gives round 0
    return Baselines(config).propose(0, rng)[: config.max_trials]


def planned_trials(config: SearchConfig) -> int:
    """The trials a finished run of `config` holds: `max_trials` for a search; for a `baselines`
    run, which trains a fixed list, that list's length (`max_trials` only caps it)."""
    return len(baselines_trials(config)) if config.strategy == "baselines" else config.max_trials
