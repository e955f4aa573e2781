"""The search: configs, strategies (the paper's and your own), mutation, the loop on Ray, the CLI.

    import results, search

    config = search.load_config("quick", {"max_trials": 40, "name": "notebook"})
    summary = search.run_search(config, "runs/notebook")   # a local Ray on 127.0.0.1
    frame = results.load("runs/notebook")

A strategy of your own is a `Strategy` subclass in a module of yours, named in a config as
"MODULE:CLASS" (README, "A search strategy of your own").
"""

import importlib

from search.config import ConfigError, SearchConfig, load_config, parse_config
from search.mutation import Deduper, Mutant, mutate, random_cell
from search.strategies import STRATEGIES, Book, CellRecord, Proposal, Strategy, strategy_class

# the loop and the executor import the trainer (jax) and Ray on first use: configs, strategies and
# mutation, which the command line's other commands and a notebook's analysis use, need neither
_LAZY = {"run_search": "search.loop", "Progress": "search.loop", "SearchSummary": "search.loop",
         "RayExecutor": "search.executor", "executor_for": "search.executor"}  # fmt: skip


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, for a notebook's tab completion, without importing them
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "STRATEGIES",
    "Book",
    "CellRecord",
    "ConfigError",
    "Deduper",
    "Mutant",
    "Progress",
    "Proposal",
    "RayExecutor",
    "SearchConfig",
    "SearchSummary",
    "Strategy",
    "executor_for",
    "load_config",
    "mutate",
    "parse_config",
    "random_cell",
    "run_search",
    "strategy_class",
]
