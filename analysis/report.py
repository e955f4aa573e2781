"""`report.md`: the findings, the paper's tables, the leaderboard and the figures of one or more runs.

    path = write_report(["runs/repro/baselines", "runs/repro/search"], out="runs/repro")

A reproduction directory holds several run stores (`baselines/`, `search/`); `results.find_runs`
expands such a directory into its stores, so `cellsearch report runs/repro` reads them all.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform

import numpy as np
import pandas as pd

from analysis.findings import CLAIMS, INTERVAL_RULE, Bootstrap, findings
from analysis.leaderboard import compare_strategies, leaderboard, search_tasks_of, to_markdown
from analysis.plots import NEEDS, PLOTS, hparam_importance, op_divergence, plot_baselines
from analysis.tables import paper_table1, paper_table2, with_counts
from results import RunStore, StoreError, find_runs, load, run_names
from tasks import MUSIC_TASKS

TASK_TITLES = {"arith": "Arith", "xml": "XML", "ptb": "PTB"}  # as the paper writes them


def _run_rows(runs: list[pathlib.Path], frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for run, name in zip(runs, run_names(runs)):
        meta = RunStore(run).metadata()
        config, info = meta.get("config", {}), meta.get("run", {})
        part = frame[frame["run"] == name]
        seconds = part[["train_seconds", "compile_seconds", "eval_seconds"]].sum().sum() if len(part) else 0
        rows.append({
            "run": name, "strategy": config.get("strategy", "?"), "preset": config.get("preset", "?"),
            "seed": config.get("seed", "?"), "tasks": ", ".join(sorted(set(part["task"].astype(str)))),
            "trials": len(part), "cells": part["cell_hash"].nunique(),
            "trial hours": round(seconds / 3600, 2), "code": info.get("code_version", "?"),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("run")


def _findings_markdown(table: pd.DataFrame, equal: pd.DataFrame) -> str:
    """The findings as a Markdown table, beside the same findings at equal trials per cell."""

    def effect(row) -> str:
        return "-" if np.isnan(row.effect) else f"{row.effect:+.3f} [{row.low:+.3f}, {row.high:+.3f}]"

    lines = ["| claim | effect [95% CI] | verdict | at equal trials: effect [95% CI], verdict "
             "| what was measured |", "|---|---|---|---|---|"]  # fmt: skip
    for name, row in table.iterrows():
        fair = equal.loc[name]
        parts = [row.measure, row.detail]
        if row.measure and row.rule != INTERVAL_RULE:
            parts.append(f"Verdict: {row.rule}")
        measure = ". ".join(part for part in parts if part) + ("." if row.measure else "")
        lines.append(f"| {row.claim} | {effect(row)} | **{row.verdict}** | {effect(fair)}, {fair.verdict} "
                     f"| {measure} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _verdict_counts(table: pd.DataFrame) -> str:
    counts = table["verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in ("supported", "contradicted", "inconclusive"))


def write_report(paths, out=None, command: str | None = None, wall_seconds: float | None = None,
                 top: int = 15) -> pathlib.Path:  # fmt: skip
    """Writes `report.md` and its PNG figures.

    Args:
      paths: run directories, or directories holding run directories (see `find_runs`).
      out: directory for report.md and the figures (default: the first path).
      command: the command that produced the runs, quoted in the report.
      wall_seconds: its wall time, quoted in the report.
      top: rows of the leaderboard.

    Returns:
      The path of report.md.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    runs = find_runs(paths)
    out = pathlib.Path(out or paths[0])
    out.mkdir(parents=True, exist_ok=True)
    frame = load(runs, loss_curves=False)
    if frame.empty:
        raise StoreError(f"no trials in {', '.join(map(str, runs))}")
    boot = Bootstrap(frame)
    figures, not_drawn = [], []
    for name, plot in PLOTS.items():
        args = (frame, out / name) + ((boot,) if plot is plot_baselines else ())
        if plot(*args) is not None:
            figures.append((name, plot.__doc__.splitlines()[0]))
        else:
            (out / name).unlink(missing_ok=True)  # never leave a stale figure from an earlier report
            not_drawn.append(f"- `{name}` is not drawn: it needs {NEEDS[name]}.")
    searched = search_tasks_of(frame)  # the tasks of the Jozefowicz score, found once
    board = leaderboard(frame, search_tasks=searched)
    checked = findings(frame, boot=boot)
    equal = Bootstrap(frame, equal_trials=True)
    checked_equal = findings(frame, boot=equal)
    # Bonferroni over the claims: each interval at 1 - 0.05 / claims, from the same replicates
    family_level = 1 - (1 - boot.level) / len(CLAIMS)
    corrected = findings(frame, boot=boot.with_level(family_level))
    weakened = [name for name in checked.index if corrected.at[name, "verdict"] != checked.at[name, "verdict"]]
    versions = frame["versions"].dropna().iloc[0] if "versions" in frame else {}

    text = ["# cellsearch report", ""]
    text.append(f"Written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
                f"{platform.machine()} with {os.cpu_count()} CPUs ({platform.platform(terse=True)}); "
                + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")  # fmt: skip
    if command:
        text += ["", f"Command: `{command}`" + (f", wall time {wall_seconds / 60:.1f} min." if wall_seconds else "")]
    text += ["", "## Runs", "", to_markdown(_run_rows(runs, frame), 2),
             "`trial hours`: training + compile + evaluation time summed over trials (workers run in "
             "parallel, so it exceeds the wall time)."]  # fmt: skip
    # several search runs (seeds of a strategy, or strategies): only then walk their trials again
    if frame.loc[frame["strategy"].astype(str) != "baselines", "run"].nunique() > 1:
        strategies = compare_strategies(frame)
        text += ["", "## Search strategies at equal trials", "",
                 f"Each search run's best found cell after its first {strategies['trials'].iloc[0]} "
                 "trials (the fewest any search run has; screens count), by its Jozefowicz score "
                 "against its own run's GRU (0: no found cell scored on every search task yet); "
                 "median, min and max over each strategy's runs; `reached`: runs whose best found "
                 "cell scored at least the GRU's 1 (`analysis.compare_strategies`).", "",
                 to_markdown(strategies, 3).rstrip("\n")]  # fmt: skip
    k = sorted(set(equal.trials_per_score.values()))
    text += ["", "## The paper's findings, checked", "",
             f"{_verdict_counts(checked)} at this budget. Each effect is signed so that positive "
             "is the paper's direction; unless its row says otherwise, it is a difference of best "
             "scores as fractions of the GRU's best score on the same task. Intervals are 95% "
             "bootstrap intervals over the trials (hyperparameter settings x seeds) behind each best "
             "score. A verdict needs the whole interval on one side of 0, unless its row gives "
             "another rule (claims about most tasks or every cell count per-task or per-cell "
             "verdicts).", "",
             "A best-of-n score grows with n, and cells rarely have the same n (a search re-runs the "
             "LSTM and GRU). The column *at equal trials* scores every cell by its expected best of "
             f"the same number of trials per task, the fewest any cell has there ({', '.join(map(str, k))}): "
             f"{_verdict_counts(checked_equal)}.", "",
             f"Corrected for testing {len(CLAIMS)} claims (Bonferroni: each interval at "
             f"{100 * family_level:.2f}% instead of 95%): {_verdict_counts(corrected)}"
             + (f"; no longer decided: {', '.join(weakened)}." if weakened else "; no verdict changes."),
             "", _findings_markdown(checked, checked_equal)]  # fmt: skip
    table1 = paper_table1(frame)
    text += ["## Table 1: search tasks (best validation score; higher is better)", "",
             "Arith and XML: per-character accuracy; PTB: 1/perplexity. `n`: hyperparameter settings "
             "behind the value.", "", to_markdown(with_counts(table1, 4, significant=True))]  # fmt: skip
    table2 = paper_table2(frame)
    if len(table2.columns):
        text += ["## Table 2: music and PTB (test NLL of the best validation setting; lower is better)",
                 "", "Music: nats per time step summed over the 88 keys; PTB: nats per word; "
                 "`-d`: with dropout.", "", to_markdown(with_counts(table2, 3))]  # fmt: skip
    shown = board.head(top).copy()
    shown.index = shown.index.str.slice(0, 19)
    shown["name"] = shown["name"].where(shown["origin"] == "baseline", "(found)")
    searched = [t for t in searched if t in board.columns]
    tasks = [c for c in board.columns if c in searched or c == "memorize"]
    columns = ["name", "jozefowicz", *tasks, "trials", "settings", "diverged", "params"]
    over = ", ".join(TASK_TITLES.get(t, t) for t in searched)
    text += ["## Leaderboard", "", f"Top {len(shown)} of {len(board)} cells by Jozefowicz score "
             f"(min over {over} of best / GRU's best)"
             + ("" if set(searched) & set(MUSIC_TASKS) else "; music is in Table 2") + ". `memorize` is "
             "the screening task; `settings` counts (task, hyperparameters) pairs; `diverged` is the "
             "share of the cell's trials that diverged; `params`: parameters of one layer at its "
             "trials' hidden size.", "",
             to_markdown(shown[columns], 4, style="g")]  # fmt: skip
    found = board[(board["origin"] != "baseline") & board["jozefowicz"].notna()].head(3)
    if len(found):
        text += ["Equations of the best found cells:", ""]
        for cell, row in found.iterrows():
            text += [f"- `{cell}` (Jozefowicz score {row.jozefowicz:.3f}):", "", "  ```",
                     *[f"  {line}" for line in row.equations.split("; ")], "  ```"]  # fmt: skip
        text.append("")
    text += ["## Figures", ""]
    for name, caption in figures:
        text += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    if not_drawn:
        text += [*not_drawn, ""]
    importance = hparam_importance(frame)
    if not importance.empty:
        text += ["Share of score variance explained by each factor alone (main effects, "
                 "`analysis.hparam_importance`), corrected for what noise alone gives a factor with "
                 "many values and few trials each (epsilon squared; 0: no effect told apart from "
                 "noise; `-`: not varied, or one trial per value):", "",
                 to_markdown(importance, 2)]  # fmt: skip
    divergence = op_divergence(frame)
    if not divergence.empty:
        text += ["Divergence among mutants by op:", "", to_markdown(divergence, 3)]
    text += ["## How to read this", "",
             "- A cell's score on a task is its best validation score over its trials; diverged "
             "trials count as 0.",
             "- The bootstrap resamples each (cell, task)'s trials with replacement and takes the best "
             "again; with 2-3 settings per cell the intervals are wide. A resampled best never "
             "exceeds the best observed, so the intervals say how much a result depends on which "
             "settings happened to be drawn, not how much more settings would add.",
             "- Reproduce or extend with `cellsearch report`, `cellsearch compare RUN A B`, and "
             "`analysis.leaderboard(results.load(...))` in pandas."]  # fmt: skip
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path
