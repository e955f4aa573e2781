"""What users look at: leaderboards, the paper's tables, checked findings, plots, report.md."""

from analysis.findings import (
    CLAIMS,
    Bootstrap,
    Finding,
    Missing,
    compare,
    expected_best_weights,
    findings,
)
from analysis.leaderboard import leaderboard, select, to_markdown, trial_scores
from analysis.plots import PLOTS, hparam_importance, op_divergence
from analysis.report import find_runs, write_report
from analysis.tables import paper_table1, paper_table2, with_counts

__all__ = [
    "CLAIMS",
    "PLOTS",
    "Bootstrap",
    "Finding",
    "Missing",
    "compare",
    "expected_best_weights",
    "find_runs",
    "findings",
    "hparam_importance",
    "leaderboard",
    "op_divergence",
    "paper_table1",
    "paper_table2",
    "select",
    "to_markdown",
    "trial_scores",
    "with_counts",
    "write_report",
]
