"""Leaderboards: one row per cell, built from the trial frame of `results.load`.

    frame = results.load(["runs/quick/baselines", "runs/quick/search"])
    board = analysis.leaderboard(frame)            # a DataFrame, best cells first
    print(analysis.to_markdown(board.head(10)))

A cell's score on a task is its BEST validation score over the trials (settings x seeds) it had
there, as in the paper. Every score is higher-is-better and in [0, 1] (accuracy, 1/perplexity,
per-frame likelihood), so a diverged or failed trial counts as 0: it tried a setting and got
nothing from it. The Jozefowicz score is the minimum over the search tasks of best / GRU's best.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np
import pandas as pd

from cells import PAPER_CELLS, Graph, parse
from tasks import SEARCH_TASKS

REFERENCE = "gru"
HPARAMS = ("lr", "clip", "init_scale", "layers", "dropout")


def select(
    frame: pd.DataFrame,
    tasks: Iterable[str] | None = None,
    strategies: Iterable[str] | None = None,
    statuses: Iterable[str] | None = None,
    dropout: bool | None = None,
) -> pd.DataFrame:
    """The trials matching every given filter (None: no filter on that field).

    Args:
      frame: trials from `results.load`.
      tasks, strategies, statuses: keep rows whose `task` / `strategy` / `status` is listed.
      dropout: True keeps trials trained with dropout > 0, False those without.
    """
    keep = pd.Series(True, index=frame.index)
    for column, allowed in (("task", tasks), ("strategy", strategies), ("status", statuses)):
        if allowed is not None:
            keep &= frame[column].astype(str).isin(list(allowed))
    if dropout is not None:
        keep &= (frame["dropout"] > 0) == dropout
    return frame[keep]


def trial_scores(frame: pd.DataFrame) -> pd.Series:
    """Each trial's score, with 0 for diverged and failed trials (see the module docstring)."""
    return frame["score"].where(frame["status"].astype(str) == "ok").fillna(0.0).astype(float)


def cell_names(frame: pd.DataFrame) -> pd.Series:
    """cell hash -> display name: the baseline name, else the hash."""
    names = frame.groupby("cell_hash", observed=True)["cell_name"].first()
    return names.where(names.notna(), names.index.to_series()).astype(str)


def search_tasks_of(frame: pd.DataFrame, reference: str = REFERENCE) -> list[str]:
    """The tasks of the Jozefowicz score in `frame`: those its search runs searched on (their
    configs' `tasks`, on each of which every strategy trains the reference cell outside the
    screen), the paper's first; without a search run (baselines runs, which also train music for
    Table 2), the paper's search tasks and the tasks of your own ("MODULE:CLASS") the reference
    cell has trials on."""
    ref = frame[frame["cell_name"] == reference]
    if "strategy" in ref and "purpose" in ref:
        searched = ref[(ref["strategy"].astype(str) != "baselines") & (ref["purpose"].astype(str) != "screen")]
        present = tasks_present(searched)
        if present:
            return [t for t in SEARCH_TASKS if t in present] + sorted(present - set(SEARCH_TASKS))
    present = tasks_present(ref)
    return [t for t in SEARCH_TASKS if t in present] + sorted(t for t in present if ":" in t)


def tasks_present(frame: pd.DataFrame) -> set[str]:
    """The tasks that have trials in `frame`."""
    return {str(task) for task in frame["task"].dropna().unique()}


def settings_count(frame: pd.DataFrame, by: list[str]) -> pd.Series:
    """Distinct (task, hyperparameters) settings among the trials of each group of `by`."""
    columns = list(dict.fromkeys([*by, "task", *HPARAMS]))
    return frame[columns].drop_duplicates().groupby(by, observed=True).size()


@functools.lru_cache(maxsize=65536)
def parsed(text: str) -> Graph:
    """The graph of a cell's canonical text, parsed once per process: a report asks for each of a
    search's cells several times, and parsing 10,000 cells takes 2-4 s."""
    return parse(text)


def leaderboard(
    frame: pd.DataFrame,
    tasks: Iterable[str] | None = None,
    strategies: Iterable[str] | None = None,
    statuses: Iterable[str] | None = None,
    search_tasks: Iterable[str] | None = None,
    reference: str = REFERENCE,
) -> pd.DataFrame:
    """Per cell: best score per task, Jozefowicz score, trials, settings, divergence, parameters.

    Works on the trials of one or several runs; a cell is identified by its structural hash, so
    the same cell found by two runs is one row.

    Args:
      frame: trials from `results.load`.
      tasks, strategies, statuses: filters applied to the trials first (see `select`).
      search_tasks: the tasks of the Jozefowicz score; default those the search runs searched on
        (`search_tasks_of`).
      reference: the cell (by name) that normalises the Jozefowicz score.

    Returns:
      A DataFrame indexed by `cell_hash`, sorted best first (by `jozefowicz`, else by the first
      task), with columns `name`, `origin`, one column per task (best validation score), `jozefowicz`
      (NaN unless the cell has every search task and the reference is present), `trials`,
      `settings` (distinct (task, hyperparameters) pairs), `diverged` and `failed` (shares of trials),
      `params` (per layer, at the hidden size of its trials) and `equations` (canonical text).
    """
    frame = select(frame, tasks, strategies, statuses)
    if frame.empty:
        return pd.DataFrame(columns=["name", "origin", "jozefowicz", "trials", "settings",
                                     "diverged", "failed", "params", "equations"])  # fmt: skip
    frame = frame.assign(_score=trial_scores(frame), _status=frame["status"].astype(str))
    best = frame.pivot_table(index="cell_hash", columns="task", values="_score", aggfunc="max",
                             observed=True)  # fmt: skip
    best.columns = [str(c) for c in best.columns]
    groups = frame.groupby("cell_hash", observed=True)
    board = pd.DataFrame({
        "name": cell_names(frame),
        "origin": groups["origin"].first().astype(str) if "origin" in frame else "",
    }).join(best)  # fmt: skip
    names = board["name"]
    search = list(search_tasks) if search_tasks is not None else search_tasks_of(frame, reference)
    search = [t for t in search if t in board.columns]
    board["jozefowicz"] = np.nan
    if search and (names == reference).any():
        ref = board.loc[names == reference, search].iloc[0]
        if (ref > 0).all():
            board["jozefowicz"] = (board[search] / ref).min(axis=1, skipna=False)
    board["trials"] = groups.size()
    board["settings"] = settings_count(frame, ["cell_hash"])
    # whole-column operations: with a Python function per cell, this function took 8.3-9.0 s at
    # 10,000 cells instead of 2.6 s
    for column, status in (("diverged", "diverged"), ("failed", "error")):
        board[column] = (frame["_status"] == status).groupby(frame["cell_hash"], observed=True).mean()
    first = groups[["cell_text", "budget_hidden"]].first()
    # a row without its cell's text or width (written by hand, not by a search) has no count
    board["params"] = [parsed(t).num_params(int(h)) if isinstance(t, str) and pd.notna(h) else np.nan
                       for t, h in zip(first["cell_text"], first["budget_hidden"])]  # fmt: skip
    board["equations"] = first["cell_text"].str.strip().str.replace("\n", "; ")
    key = "jozefowicz" if board["jozefowicz"].notna().any() else best.columns[0]
    return board.sort_values([key, "name"], ascending=[False, True], na_position="last")


def search_progress(frame: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Each time a search run's best found cell improved: after how many trials, when, which cell.

    A found cell (not a baseline or seed) enters once it has a score on every search task; its
    Jozefowicz score uses the reference cell's best over the WHOLE run, so a run's curve only rises.
    Baselines runs, and runs without the reference's score on the search tasks, have no rows.

    Args:
      frame: trials from `results.load` (one run or several).
      reference: the cell (by name) that normalises the Jozefowicz score.

    Returns:
      One row per improvement, in each run's trial order: `run`, `strategy`, `trials` (trials run
      by then, screens included), `trial` (the id of the trial that improved it), `stored_at`
      (when it was stored; NaT in runs written before rows recorded it), `cell_hash` and
      `jozefowicz` (of the best found cell so far). Against `trials` or `stored_at`, this compares
      strategies at equal budget or equal wall time.
    """
    columns = ["run", "strategy", "trials", "trial", "stored_at", "cell_hash", "jozefowicz"]
    rows = []
    for run, part in frame.groupby("run", observed=True):
        strategies = set(part["strategy"].astype(str)) - {"baselines"}
        tasks = search_tasks_of(part, reference)
        part = part.sort_values("trial").assign(_score=trial_scores(part))
        ref = part[part["cell_name"] == reference].groupby("task", observed=True)["_score"].max()
        if not strategies or not tasks or not (ref.reindex(tasks) > 0).all():
            continue
        ref = {t: float(ref[t]) for t in tasks}  # a dict: read once per trial below
        stored_at = part["stored_at"] if "stored_at" in part else pd.Series(pd.NaT, index=part.index)
        best: dict[str, dict[str, float]] = {}
        top = None
        found = (part["origin"].astype(str) != "baseline").to_numpy()
        # a walk in trial order, in Python: 1.5 s at the paper's scale, where a vectorised form
        # took 0.26 s but read much worse (benchmarks/README.md, "A paper-scale run store")
        for k, (cell, task, score, trial, when) in enumerate(zip(
                part["cell_hash"], part["task"].astype(str), part["_score"], part["trial"], stored_at)):  # fmt: skip
            if not found[k] or task not in tasks:
                continue
            scores = best.setdefault(cell, {})
            scores[task] = max(scores.get(task, 0.0), score)
            if len(scores) == len(tasks):
                value = min(scores[t] / ref[t] for t in tasks)
                if top is None or value > top:
                    top = value
                    rows.append((run, "/".join(sorted(strategies)), k + 1, trial, when, cell, value))
    progress = pd.DataFrame(rows, columns=columns)
    progress["stored_at"] = pd.to_datetime(progress["stored_at"], utc=True)
    return progress


def compare_strategies(frame: pd.DataFrame, trials: int | None = None,
                       reference: str = REFERENCE) -> pd.DataFrame:  # fmt: skip
    """The search strategies in `frame`, each by its runs' best found cells at equal trials.

    Run each strategy with several seeds (`--set seed=N --out runs/NAME-N`) and load them all: a
    run's best found cell after `trials` trials is the last improvement `search_progress` gives by
    then (its Jozefowicz score against its own run's GRU), or 0 where no found cell was scored on
    every search task by then.

    Args:
      frame: trials from `results.load` of several search runs (baselines runs are left out).
      trials: the budget compared, in trials run (screens included); default the fewest trials
        any search run in `frame` has.
      reference: the cell (by name) that normalises the Jozefowicz score.

    Returns:
      One row per strategy, best median first: `runs`, `trials`, the median, min and max over its
      runs of the best found cell's score (`best_median`, `best_min`, `best_max`) and `reached`,
      the runs whose best found cell scored at least the reference's 1.
    """
    columns = ["runs", "trials", "best_median", "best_min", "best_max", "reached"]
    runs = frame[frame["strategy"].astype(str) != "baselines"].groupby("run", observed=True)
    sizes = runs.size()
    if sizes.empty:
        return pd.DataFrame(columns=columns).rename_axis("strategy")
    budget = int(sizes.min()) if trials is None else trials
    strategy = runs["strategy"].first().astype(str)
    progress = search_progress(frame, reference)
    progress = progress[progress["trials"] <= budget]
    best = progress.groupby("run")["jozefowicz"].max().reindex(sizes.index).fillna(0.0)
    table = pd.DataFrame({"strategy": strategy, "best": best}).groupby("strategy")["best"].agg(
        runs="size", best_median="median", best_min="min", best_max="max",
        reached=lambda scores: int((scores >= 1.0).sum()))  # fmt: skip
    table.insert(1, "trials", budget)
    return table.sort_values(["best_median", "best_max"], ascending=False)[columns]


def paper_order(board: pd.DataFrame) -> pd.DataFrame:
    """The rows of the paper's baselines (in the paper's order) that `board` has."""
    rows = [board.index[board["name"] == name][0] for name in PAPER_CELLS if (board["name"] == name).any()]
    return board.loc[rows]


def to_markdown(table: pd.DataFrame, digits: int = 4, index: bool = True, style: str = "f") -> str:
    """A DataFrame as a GitHub Markdown table (NaN as '-').

    Args:
      digits: decimals (style "f") or significant digits (style "g") of floats.
    """

    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return "-" if np.isnan(value) else f"{value:.{digits}{style}}"
        return str(value).replace("|", "\\|")

    columns = ([table.index.name or ""] if index else []) + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for key, *row in table.astype(object).itertuples(name=None):
        values = ([cell(key)] if index else []) + [cell(v) for v in row]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"
