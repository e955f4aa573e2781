"""Reading run stores into pandas: one row per trial, typed columns, several runs at once."""

from __future__ import annotations

import os
import pathlib
from typing import Iterable

import pandas as pd

from results.store import CELLS, TRIALS, RunStore, StoreError, gc_paused, read_jsonl

CATEGORICAL = ("cell", "task", "status", "strategy", "origin")
# present in every loaded frame (missing in a row: NaN/None), so that analysis code can rely on them
COLUMNS = ("trial", "strategy", "cell_hash", "cell_name", "origin", "cell_text", "task", "seed",
           "lr", "clip", "init_scale", "layers", "dropout", "status", "score", "valid_nll",
           "test_nll", "budget_hidden", "train_seconds", "compile_seconds", "eval_seconds")  # fmt: skip


def load(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Loads the trials of one or several run directories into a DataFrame.

    Args:
      paths: a run directory, or several.

    Returns:
      One row per trial: the run name (`run`), the trial id, cell hash and name, task,
      hyperparameters (`lr`, `clip`, `init_scale`, `layers`, `dropout`), seed, status, `score`,
      `valid_*` / `test_*` metrics, timings and provenance. `cell`, `task`, `status` are
      categoricals. Nested fields (`task_options`, `loss_curve`, `versions`) are kept as Python
      objects.

    Raises:
      StoreError: a path is not a run directory, or a trials file has a corrupt line.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = []
    for path in paths:
        store = RunStore(path)
        if not store.path.is_dir():
            raise StoreError(f"{store.path}: no such run directory")
        rows = read_jsonl(store.path / TRIALS)  # parsed with the collector paused
        with gc_paused():  # and so is the build, which allocates objects per row as well
            frame = pd.DataFrame(rows)
        frame.insert(0, "run", store.path.name)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run"])
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    for column in CATEGORICAL:
        if column in frame:
            frame[column] = frame[column].astype("category")
    for column in ("score", "lr", "clip", "init_scale", "dropout", "valid_nll", "test_nll"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in ("trial", "layers", "seed", "steps_done"):
        if column in frame and frame[column].notna().all():
            frame[column] = frame[column].astype("int64")
    return frame


def load_cells(path: str | os.PathLike) -> pd.DataFrame:
    """The cells of a run: hash, name, canonical text, parent hash, origin (how it was made)."""
    return pd.DataFrame(read_jsonl(pathlib.Path(path) / CELLS))


def to_parquet(frame: pd.DataFrame, out: str | os.PathLike) -> None:
    """Writes a loaded frame to Parquet (nested fields as JSON text, which Parquet types keep)."""
    import json

    flat = frame.copy()
    for column in flat.columns:
        if flat[column].dtype == object and any(isinstance(v, (dict, list)) for v in flat[column]):
            flat[column] = flat[column].map(
                lambda v: json.dumps(v) if isinstance(v, (dict, list)) else v
            )
    flat.to_parquet(out, index=False)
