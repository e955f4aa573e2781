"""Reading run stores into pandas: one row per trial, typed columns, several runs at once."""

from __future__ import annotations

import itertools
import os
import pathlib
from typing import Iterable

import pandas as pd

from results.store import CELLS, CONFIG, TRIALS, RunStore, StoreError, gc_paused, iter_jsonl, read_jsonl

CATEGORICAL = ("cell", "task", "status", "strategy", "origin")
CHUNK_ROWS = 20_000  # trials parsed into Python objects at a time by `load`
# present in every loaded frame (missing in a row: NaN/None), so that analysis code can rely on them
COLUMNS = ("trial", "strategy", "cell_hash", "cell_name", "origin", "cell_text", "task", "seed",
           "lr", "clip", "init_scale", "layers", "dropout", "status", "score", "valid_nll",
           "test_nll", "budget_hidden", "train_seconds", "compile_seconds", "eval_seconds",
           "stored_at")  # fmt: skip


def find_runs(paths) -> list[pathlib.Path]:
    """Run directories among `paths`: each path itself if it holds a run.toml, else its sub-
    directories that do (one level down), each once. StoreError if none is found."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    runs = []
    for path in map(pathlib.Path, paths):
        if (path / CONFIG).is_file():
            runs.append(path)
        elif path.is_dir():
            runs += sorted(p for p in path.iterdir() if (p / CONFIG).is_file())
        else:
            raise StoreError(f"{path}: no such run directory")
    if not runs:
        raise StoreError(f"no run store (a directory with {CONFIG}) in {', '.join(map(str, paths))}")
    return list({run.resolve(): run for run in runs}.values())  # a run named twice, once


def run_names(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The `run` column's name of each run directory: its own name (`search`), or as many of its
    path's last parts as tell it from another run of that name (`reproduce-quick/search` beside
    `seed-1/search`, which would otherwise read as one run)."""
    resolved = [pathlib.Path(p).resolve() for p in paths]
    depth = [1] * len(resolved)
    while True:
        names = ["/".join(p.parts[-d:]) if d < len(p.parts) else str(p) for p, d in zip(resolved, depth)]
        owners: dict[str, set] = {}
        for name, path in zip(names, resolved):
            owners.setdefault(name, set()).add(path)
        clashing = [i for i, name in enumerate(names) if len(owners[name]) > 1]
        if not clashing:
            return names
        for i in clashing:
            depth[i] += 1


def load(
    paths: str | os.PathLike | Iterable[str | os.PathLike], loss_curves: bool = True
) -> pd.DataFrame:
    """Loads the trials of one or several run directories into a DataFrame.

    Args:
      paths: a run directory, or several.
      loss_curves: whether to keep each trial's `loss_curve`. No analysis reads it, and it is the
        largest part of a row (39% of a store's bytes, about 1 GB of Python objects for the
        paper's 230,000 trials), so `cellsearch leaderboard`, `report` and `compare` load without.

    Returns:
      One row per trial: the run name (`run`, the directory's name, longer where two runs share
        it: `run_names`), the trial id, cell hash and name, task,
      hyperparameters (`lr`, `clip`, `init_scale`, `layers`, `dropout`), seed, status, `score`,
      `valid_*` / `test_*` metrics, timings, provenance and `stored_at` (when the driver stored
      the row, a UTC datetime; NaT in runs written before it was recorded). `cell`, `task`,
      `status` are categoricals. Nested fields (`task_options`, `loss_curve`, `versions`, and
      `task_source` for a task of your own) are kept as Python objects; rows with equal
      `versions`, `task_options` or `task_source` share one dict.

    Raises:
      StoreError: a path is not a run directory, or a trials file has a corrupt line.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    # a run given twice is read once
    paths = list({pathlib.Path(p).resolve(): p for p in paths}.values())
    frames = []
    for path, name in zip(paths, run_names(paths)):
        store = RunStore(path)
        if not store.path.is_dir():
            raise StoreError(f"{store.path}: no such run directory")
        if not store.exists():  # read as no trials, a reproduction's directory looked empty
            raise StoreError(f"{store.path}: not a run directory (no {CONFIG}); "
                             "`find_runs` finds the runs inside a directory of runs")  # fmt: skip
        rows = iter_jsonl(store.path / TRIALS, shared=("versions", "task_options", "task_source"),
                          drop=() if loss_curves else ("loss_curve",))  # fmt: skip
        with gc_paused():  # parsing and building allocate objects per row
            # a frame per chunk of rows, so that only one chunk's rows exist as Python objects at
            # a time: built whole, the rows of the paper's 230,000 trials peaked at 1.4 GB
            chunks = iter(lambda: list(itertools.islice(rows, CHUNK_ROWS)), [])
            parts = [pd.DataFrame(chunk) for chunk in chunks]
        if parts:
            frame = pd.concat(parts, ignore_index=True)
            frame.insert(0, "run", name)
            frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run"])
    # a column with no value in one chunk or run (every `error` None, say) came out as object
    # there, and so from the concatenation: give it the type one frame of all rows would have
    frame = frame.infer_objects()
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    for column in CATEGORICAL:
        if column in frame:
            frame[column] = frame[column].astype("category")
    for column in ("score", "lr", "clip", "init_scale", "dropout", "valid_nll", "test_nll"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    # stores written before rows had `stored_at` read as NaT
    frame["stored_at"] = pd.to_datetime(frame["stored_at"], utc=True, format="ISO8601")
    for column in ("trial", "layers", "seed", "steps_done"):
        if column in frame and frame[column].notna().all():
            frame[column] = frame[column].astype("int64")
    return frame


def load_cells(path: str | os.PathLike) -> pd.DataFrame:
    """The cells of a run: hash, name, canonical text, parent hash, origin (how it was made)."""
    return pd.DataFrame(read_jsonl(pathlib.Path(path) / CELLS))


def find_cell(paths, key: str) -> dict:
    """A cell of one or several runs by baseline name, hash or unique hash prefix.

    Args:
      paths: run directories, or directories holding them (as `find_runs`).
      key: e.g. "gru", "v1-3f2a9c0d11b4e5f6" or "v1-3f2a".

    Returns:
      Its record in `cells.jsonl`: hash, name, text, parent, origin, transforms, round.

    Raises:
      StoreError: no cell matches, or several do (the message names up to four).
    """
    matches: dict[str, dict] = {}
    for run in find_runs(paths):
        for cell in iter_jsonl(run / CELLS):
            if cell.get("name") == key or cell["hash"].startswith(key):
                matches.setdefault(cell["hash"], cell)
    where = ", ".join(map(str, [paths] if isinstance(paths, (str, os.PathLike)) else paths))
    if not matches:
        raise StoreError(f"no cell of {where} has the name or hash (prefix) '{key}'")
    if len(matches) > 1:
        named = ", ".join(sorted(matches)[:4]) + (", ..." if len(matches) > 4 else "")
        raise StoreError(f"'{key}' matches {len(matches)} cells of {where} ({named}); "
                         "give more of the hash")  # fmt: skip
    return matches.popitem()[1]


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
