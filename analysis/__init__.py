"""What users look at: leaderboards, the paper's tables, checked findings, plots, report.md."""

import importlib

from analysis.findings import (
    CLAIMS,
    Bootstrap,
    Finding,
    Missing,
    compare,
    expected_best_weights,
    findings,
)
from analysis.leaderboard import (compare_strategies, leaderboard, search_progress, select,
                                 to_markdown, trial_scores)
from analysis.tables import paper_table1, paper_table2, with_counts
from results import find_runs

# matplotlib (the plots, and the report that draws them) is imported on first use, as are JAX and
# the trainer (cells/__init__.py, tasks/__init__.py): without the three, `cellsearch leaderboard`
# on a 100-trial run takes 0.7 s instead of 2.6 s
_LAZY = {"PLOTS": "analysis.plots", "hparam_importance": "analysis.plots",
         "op_divergence": "analysis.plots", "write_report": "analysis.report"}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, for a notebook's tab completion, without importing them
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CLAIMS",
    "PLOTS",
    "Bootstrap",
    "Finding",
    "Missing",
    "compare",
    "compare_strategies",
    "expected_best_weights",
    "find_runs",
    "findings",
    "hparam_importance",
    "leaderboard",
    "op_divergence",
    "paper_table1",
    "paper_table2",
    "search_progress",
    "select",
    "to_markdown",
    "trial_scores",
    "with_counts",
    "write_report",
]
