"""The paper's two tables, filled from a run.

Table 1 (search tasks, higher is better): each cell's best validation score on Arith, XML and PTB
(PTB as 1/perplexity), rows Tanh ... MUT3 and the best cells the search found.
Table 2 (music and PTB, lower is better): test NLL of the trial with the best validation NLL, with
and without dropout; music NLL is per time step summed over the 88 keys, PTB per word.
Both keep, next to each value, the number of distinct hyperparameter settings behind it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.leaderboard import cell_names, leaderboard, paper_order, settings_count, tasks_present
from tasks import MUSIC_TASKS, SEARCH_TASKS

TABLE2_TASKS = (*MUSIC_TASKS, "ptb")


def paper_table1(frame: pd.DataFrame, best_found: int = 3) -> pd.DataFrame:
    """Table 1: best validation score per search task, with the number of settings behind it.

    Args:
      frame: trials from `results.load` (one or several runs).
      best_found: how many of the best non-baseline cells (by Jozefowicz score) to add.

    Returns:
      Rows named by cell (baselines in the paper's order, then found cells by hash); for each
      search task present a score column `<task>` and an int column `<task> n`.
    """
    present = tasks_present(frame)
    tasks = [t for t in SEARCH_TASKS if t in present]
    board = leaderboard(frame, tasks=tasks)
    rows = paper_order(board)
    found = board[(board["origin"] != "baseline") & board["jozefowicz"].notna()].head(best_found)
    rows = pd.concat([rows, found])
    counts = settings_count(frame, ["cell_hash", "task"]).unstack()
    table = pd.DataFrame(index=rows.index)
    for task in tasks:
        table[task] = rows[task]
        table[f"{task} n"] = counts.reindex(rows.index)[task].fillna(0).astype(int)
    table.index = rows["name"].rename("cell")
    return table


def paper_table2(frame: pd.DataFrame, cells: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Table 2: test NLL (validation-selected) on music and PTB, without and with dropout.

    Args:
      frame: trials from `results.load`.
      cells: cell names for the rows; default the paper's baselines present.

    Returns:
      Rows named by cell; for each task of music/PTB present and each dropout condition with
      trials, a column `<task>` (no dropout) or `<task>-d` (dropout > 0) and its `... n` column.
    """
    frame = frame[frame["task"].astype(str).isin(TABLE2_TASKS)]
    names = cell_names(frame)
    order = paper_order(pd.DataFrame({"name": names})) if cells is None else None
    hashes = list(order.index) if order is not None else [h for c in cells for h in names.index[names == c]]
    table = pd.DataFrame(index=pd.Index([names[h] for h in hashes], name="cell"))
    for task in TABLE2_TASKS:
        for suffix, with_dropout in (("", False), ("-d", True)):
            part = frame[(frame["task"].astype(str) == task) & ((frame["dropout"] > 0) == with_dropout)]
            if part.empty:
                continue
            values = []
            for cell in hashes:
                trials = part[part["cell_hash"] == cell]
                ok = trials[(trials["status"].astype(str) == "ok") & np.isfinite(trials["valid_nll"].astype(float))]
                best = ok.loc[ok["valid_nll"].astype(float).idxmin()] if len(ok) else None
                values.append(float(best["test_nll"]) if best is not None else np.inf if len(trials) else np.nan)
            table[f"{task}{suffix}"] = values
            counts = settings_count(part, ["cell_hash"])
            table[f"{task}{suffix} n"] = [int(counts.get(cell, 0)) for cell in hashes]
    return table


def with_counts(table: pd.DataFrame, digits: int = 4, significant: bool = False) -> pd.DataFrame:
    """Merges each `<col>` / `<col> n` pair into one text column '0.8923 (n=3)', for printing.

    Args:
      table: a paper table (`paper_table1`, `paper_table2`).
      digits: decimals, or significant digits with `significant` (so that PTB's 1/perplexity,
        about 0.001, keeps its differences: '0.001342' where 4 decimals print '0.0013').

    Returns:
      A table of strings, without the ' n' columns.
    """
    number = f"#.{digits}g" if significant else f".{digits}f"
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        if column.endswith(" n"):
            continue
        counts = table.get(f"{column} n")
        texts = []
        for key in table.index:
            value = table.at[key, column]
            n = int(counts[key]) if counts is not None else None
            text = "-" if pd.isna(value) or n == 0 else "diverged" if np.isinf(value) else f"{value:{number}}"
            texts.append(text if n in (None, 0) else f"{text} (n={n})")
        out[column] = texts
    return out
