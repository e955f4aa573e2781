"""The report's figures (PNG, matplotlib's Agg backend: no display needed).

Each `plot_*` function takes the trial frame of `results.load` and a path, writes one PNG and
returns the path, or None when the frame has nothing to draw (e.g. no search run for
`plot_progress`). `hparam_importance` is the variance decomposition behind `plot_importance`.
"""

from __future__ import annotations

import pathlib

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.findings import Bootstrap, Missing  # noqa: E402
from analysis.leaderboard import (  # noqa: E402
    HPARAMS, REFERENCE, parsed, search_progress, select, tasks_present, trial_scores,
)  # fmt: skip
from cells import PAPER_CELLS  # noqa: E402
from cells.graph import BINARY, UNARY  # noqa: E402
from tasks import GRID  # noqa: E402

SCORE_LABEL = {
    "memorize": "accuracy", "arith": "accuracy", "xml": "next-char accuracy",
    "ptb": "1 / perplexity", "jsb": "per-frame likelihood", "nottingham": "per-frame likelihood",
    "musedata": "per-frame likelihood", "piano": "per-frame likelihood",
}  # fmt: skip


def _save(figure, path) -> pathlib.Path:
    path = pathlib.Path(path)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _tasks(frame: pd.DataFrame) -> list[str]:
    present = tasks_present(frame)
    return [t for t in SCORE_LABEL if t in present and t != "memorize"]


def plot_progress(frame: pd.DataFrame, path) -> pathlib.Path | None:
    """Best Jozefowicz score of a found cell vs trials run, one line per search run."""
    progress = search_progress(frame)
    if progress.empty:
        return None
    trials_run = frame.groupby("run", observed=True).size()
    figure, axis = plt.subplots(figsize=(7, 4))
    for (run, strategy), part in progress.groupby(["run", "strategy"], sort=False):
        # the curve runs on to the run's last trial at its best
        xs = [*part["trials"], int(trials_run[run])]
        ys = [*part["jozefowicz"], part["jozefowicz"].iloc[-1]]
        axis.step(xs, ys, where="post", marker="o", ms=3, label=f"{run} ({strategy})")
    axis.axhline(1.0, color="grey", linestyle=":", label="GRU = 1")
    axis.set_xlabel("trials run (screens included)")
    axis.set_ylabel("best found cell so far\n(min over tasks of best / GRU's best)")
    axis.set_title("Search progress (baselines excluded)")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
    return _save(figure, path)


def plot_baselines(frame: pd.DataFrame, path, boot: Bootstrap | None = None) -> pathlib.Path | None:
    """Per task, the baselines' best scores (no dropout) with bootstrap 95% intervals."""
    boot = boot or Bootstrap(frame)
    tasks = _tasks(frame)
    cells = [c for c in PAPER_CELLS if any(boot.has(c, t) for t in tasks)]
    if not tasks or not cells:
        return None
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        values, lows, highs, labels = [], [], [], []
        for cell in cells:
            try:
                point, reps = boot.best(cell, task)
            except Missing:
                continue
            low, high = boot.interval(reps)
            values.append(point)
            lows.append(point - low)
            highs.append(high - point)
            labels.append(cell)
        positions = np.arange(len(values))
        colours = ["tab:orange" if c == REFERENCE else "tab:blue" for c in labels]
        axis.bar(positions, values, yerr=[lows, highs], color=colours, capsize=2)
        axis.set_xticks(positions, labels, rotation=60, fontsize=8)
        axis.set_title(task)
        axis.set_ylabel(f"best {SCORE_LABEL[task]}")
    figure.suptitle("Baselines: best validation score over settings (bars: 95% bootstrap CI)", fontsize=10)
    return _save(figure, path)


def plot_learning_rate(frame: pd.DataFrame, path) -> pathlib.Path | None:
    """Validation score vs learning rate of the baselines (median over their trials at each rate)."""
    frame = select(frame, dropout=False).assign(_score=trial_scores(frame))
    frame = frame[frame["cell_name"].isin(PAPER_CELLS)]  # a random search's run has none
    tasks = _tasks(frame)
    if not tasks:
        return None
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.6), squeeze=False)
    colours = dict(zip(PAPER_CELLS, plt.get_cmap("tab10").colors))
    for axis, task in zip(axes[0], tasks):
        part = frame[frame["task"].astype(str) == task]
        for cell, colour in colours.items():
            trials = part[part["cell_name"] == cell]
            if trials.empty:
                continue
            median = trials.groupby("lr")["_score"].median()
            axis.plot(median.index, median.values, marker="o", ms=3, color=colour, label=cell)
        axis.set_xscale("log")
        axis.set_xticks(GRID["lr"], [f"{lr:g}" for lr in GRID["lr"]], fontsize=7)
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_xlabel("learning rate")
        axis.set_ylabel(f"{SCORE_LABEL[task]} (median)")
        axis.set_title(task)
    axes[0][-1].legend(fontsize=7, loc="best")
    figure.suptitle("Score vs learning rate (diverged trials count as 0)", fontsize=10)
    return _save(figure, path)


def op_divergence(frame: pd.DataFrame) -> pd.DataFrame:
    """Among non-baseline cells: per op, trials of cells containing it and their divergence rate."""
    mutants = frame[(frame["origin"].astype(str) != "baseline") & frame["cell_text"].notna()]
    cell_of_trial, texts = pd.factorize(mutants["cell_text"])
    ops_of = [{n.op for n in parsed(text).nodes} for text in texts]
    diverged = (mutants["status"].astype(str) == "diverged").to_numpy()
    rows = []
    for op in (*UNARY, *BINARY, "W"):
        has_op = np.array([op in ops for ops in ops_of], dtype=bool)[cell_of_trial]
        if has_op.any():
            rows.append({"op": op, "trials": int(has_op.sum()), "diverged": float(diverged[has_op].mean())})
    return pd.DataFrame(rows, columns=["op", "trials", "diverged"]).set_index("op")


def plot_divergence(frame: pd.DataFrame, path) -> pathlib.Path | None:
    """Divergence rate of the trials of mutant cells, by op the cell contains."""
    table = op_divergence(frame)
    if table.empty:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.bar(table.index, 100 * table["diverged"], color="tab:red")
    for x, (rate, n) in enumerate(zip(table["diverged"], table["trials"])):
        axis.text(x, 100 * rate, f"n={n}", ha="center", va="bottom", fontsize=7)
    axis.set_ylabel("trials diverged (%)")
    axis.set_xlabel("op present in the cell")
    axis.set_title("Divergence among mutants, by op")
    return _save(figure, path)


def hparam_importance(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of each task's score variance explained by each factor's main effect.

    For a factor F (the cell, or one hyperparameter) the share is Var(E[score | F]) / Var(score)
    over the trials of the task, the first-order (main-effect) term of a functional ANOVA
    estimated from the trials themselves; the shares of correlated factors can overlap and need not
    sum to 1. Diverged trials count as score 0.

    Estimated from group means, the plain ratio SS_between / SS_total overstates the share: with k
    values of F among N trials, noise alone gives it about (k - 1) / N (0.3 for the cell in a quick
    reproduction, where each of 13 cells has about 3 trials). So each share is Kelley's epsilon
    squared, (SS_between - (k - 1) * SS_within / (N - k)) / SS_total, which removes that part;
    below 0 (no effect the trials can tell from noise) it is 0, and a factor whose every value
    has one trial (N = k) gets NaN.

    Returns:
      tasks x factors (`cell`, then `HPARAMS` that vary), values in [0, 1] or NaN.
    """
    frame = frame.assign(_score=trial_scores(frame))
    shares = {}
    for task in _tasks(frame):
        part = frame[frame["task"].astype(str) == task]
        scores = part["_score"]
        ss_total = float(((scores - scores.mean()) ** 2).sum())
        row = {}
        for factor in ("cell_hash", *HPARAMS):
            levels = part[factor].nunique()
            if levels < 2 or not ss_total > 0:
                continue
            means = part.groupby(factor, observed=True)["_score"].transform("mean")
            ss_between = float(((means - scores.mean()) ** 2).sum())
            within = (ss_total - ss_between) / (len(part) - levels) if len(part) > levels else np.nan
            share = (ss_between - (levels - 1) * within) / ss_total
            row["cell" if factor == "cell_hash" else factor] = float(np.maximum(share, 0.0))  # NaN stays
        shares[task] = row
    return pd.DataFrame.from_dict(shares, orient="index")


def plot_importance(frame: pd.DataFrame, path) -> pathlib.Path | None:
    """Share of each task's score variance explained by the cell and by each hyperparameter."""
    table = hparam_importance(frame)
    if table.empty or table.isna().all().all():
        return None
    figure, axis = plt.subplots(figsize=(7, 3.6))
    table.fillna(0).plot.bar(ax=axis, rot=0, width=0.8)
    axis.set_ylabel("share of score variance\n(main effect, epsilon squared)")
    axis.set_xlabel("task")
    axis.set_ylim(0, 1)
    axis.set_title("What explains the score: the cell or a hyperparameter")
    axis.legend(fontsize=7, ncol=3)
    return _save(figure, path)


PLOTS = {
    "progress.png": plot_progress,
    "baselines.png": plot_baselines,
    "learning_rate.png": plot_learning_rate,
    "divergence.png": plot_divergence,
    "importance.png": plot_importance,
}
"""file name -> plot function, in the order of the report."""

NEEDS = {
    "progress.png": "a search run in which a found (non-baseline) cell was scored on every search "
                    "task and the GRU above 0 on each",
    "baselines.png": "baseline trials on a search or music task",
    "learning_rate.png": "trials without dropout on a search or music task",
    "divergence.png": "trials of mutant cells",
    "importance.png": "a task whose scores vary",
}  # fmt: skip
"""file name -> what the runs must hold for the plot to be drawn (the report names what is missing)."""
