"""The run store and its pandas reader; needs neither jax nor Ray."""

from results.frame import find_cell, find_runs, load, load_cells, run_names, to_parquet
from results.store import RunStore, StoreError, iter_jsonl, read_jsonl

__all__ = [
    "RunStore",
    "StoreError",
    "find_cell",
    "find_runs",
    "iter_jsonl",
    "load",
    "load_cells",
    "read_jsonl",
    "run_names",
    "to_parquet",
]
