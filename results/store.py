"""The run store: one directory per search, append-only JSON lines, read back with pandas.

    runs/<name>/run.toml      resolved config, code version, package versions, data checksums
    runs/<name>/trials.jsonl  one JSON object per finished trial, appended, flushed and fsynced
    runs/<name>/cells.jsonl   one JSON object per cell: hash, canonical text, parent, origin
    runs/<name>/writer.lock   held (flock) by the driver writing the run; who that is, for messages

A single writer (the search driver, which holds `writer.lock` while it runs) appends; nothing
already written is ever rewritten. A torn last line (the driver died mid-write) is skipped with a
warning on read and cut off before the next append; a corrupt line anywhere else is an error
naming the file and line, never silently dropped.
This module imports neither jax nor Ray: reading a store needs only orjson (and pandas for
`load`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import pathlib
import signal
import socket
import time
import warnings
from collections.abc import Iterator

import orjson

STORE_VERSION = 1
TRIALS = "trials.jsonl"
CELLS = "cells.jsonl"
CONFIG = "run.toml"
LOCK = "writer.lock"
LOCK_TRIES = 10  # 0.1 s apart, before a writer gives up on a held lock


FAULT = "CELLSEARCH_FAULT"  # fault injection for the reliability tests: "point" or "point:n"
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> bool:
    """True when `CELLSEARCH_FAULT` names this point and this is its n-th pass (default the 1st).

    The reliability tests set it in a driver process they start; nothing else does.
    """
    spec = os.environ.get(FAULT)
    if not spec or spec.split(":")[0] != name:
        return False
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    wanted = int(spec.split(":")[1]) if ":" in spec else 1
    return _fault_counts[name] == wanted


def crash_now() -> None:
    """Dies the way a power cut or the OOM killer ends a process: SIGKILL, no cleanup."""
    os.kill(os.getpid(), signal.SIGKILL)


def fill_disk(path: pathlib.Path, room: int = 200) -> None:
    """Makes the disk 'full' for this process: no file may grow past `path`'s size + `room` bytes
    (RLIMIT_FSIZE; writes beyond it fail with EFBIG instead of killing the process)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = path.stat().st_size + room
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


class StoreError(RuntimeError):
    """A run directory that cannot be read or written; the message is one line."""


@contextlib.contextmanager
def gc_paused():
    """Pauses Python's cyclic garbage collector for a bulk build of acyclic objects.

    Parsed JSON holds no reference cycles, but every list and dict it creates counts towards the
    collector's thresholds, and each full collection walks all the rows parsed so far: parsing
    50,000 trials took 4.1-4.5 s with the collector running and 1.9-2.1 s without (benchmarks/
    README.md, "A paper-scale run store").
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse(raw: bytes):
    """One JSON value: orjson's parse (2.4-2.9x json's on trial rows) where it accepts the text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # what it refuses but Python's json reads, e.g. NaN
        return json.loads(raw)


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """The objects of a JSON-lines file, in order: `iter_jsonl`'s, collected under one collector
    pause (a torn last line is skipped with a warning; StoreError for a corrupt one)."""
    with gc_paused():
        return list(iter_jsonl(path))


def iter_jsonl(
    path: pathlib.Path, shared: tuple[str, ...] = (), drop: tuple[str, ...] = ()
) -> Iterator[dict]:
    """Yields the objects of a JSON-lines file one by one, reading a line at a time.

    A torn last line is skipped with a warning. Whoever keeps many of the objects should pause the
    collector around it (`gc_paused`), as `read_jsonl` and `results.load` do.

    Args:
      path: the file (none: no objects).
      shared: fields whose dict values repeat from line to line (a run's package versions, a
        task's options): lines with identical dicts there get ONE dict object, not a copy each.
      drop: fields left out of every object as soon as its line is parsed.

    Raises:
      StoreError: a line other than the last is not a JSON object (its number is in the message).
    """
    if not path.exists():
        return
    seen: dict[tuple, dict] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                value = _parse(raw)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
            except ValueError as error:
                if not raw.endswith(b"\n"):  # only the last line can lack it: an interrupted write
                    warnings.warn(f"{path}: line {number} is incomplete (an interrupted write); "
                                  "skipped", stacklevel=3)  # fmt: skip
                    return
                raise StoreError(f"{path}: line {number} is corrupt ({error})") from None
            for field in drop:
                value.pop(field, None)
            for field in shared:
                _share(value, field, seen)
            yield value


def _share(row: dict, field: str, seen: dict[tuple, dict]) -> None:
    """Replaces row[field], a dict, by an identical one met before (kept in `seen`), if any."""
    value = row.get(field)
    if not isinstance(value, dict):
        return
    # each value's type is part of the key: 1, 1.0 and True are equal, and hash alike, in Python
    key = (field, tuple((name, type(v), v) for name, v in value.items()))
    try:
        row[field] = seen.setdefault(key, value)
    except TypeError:  # an unhashable value (a list): kept as it is
        pass


def _holder(fd: int) -> str:
    """The text a writer put in its lock file."""
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"


def _repair_tail(path: pathlib.Path) -> None:
    """Cuts a torn last line (no trailing newline) so the next append starts on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        keep = data.rfind(b"\n") + 1
        try:  # a whole object that only lost its newline is kept
            complete = isinstance(json.loads(data[keep:]), dict)
        except ValueError:
            complete = False
        if complete:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(keep)
            warnings.warn(f"{path}: removed an incomplete last line left by an interrupted write",
                          stacklevel=2)  # fmt: skip
        f.flush()
        os.fsync(f.fileno())


class RunStore:
    """Append-only writer and reader of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self._lock: int | None = None  # the writer lock's descriptor, while this store holds it

    @property
    def trials_path(self) -> pathlib.Path:
        return self.path / TRIALS

    @property
    def cells_path(self) -> pathlib.Path:
        return self.path / CELLS

    @property
    def config_path(self) -> pathlib.Path:
        return self.path / CONFIG

    def exists(self) -> bool:
        return self.config_path.is_file()

    def check_new(self) -> None:
        """Raises StoreError unless a new run can be made here: no directory yet, or an empty one.

        A run written among other files (`--out .`, or the parent of other runs) would mix with
        them, and the analysis would read both.
        """
        others = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        others = [name for name in others if name != LOCK][:3]  # (a run that stopped being made)
        if others:
            raise StoreError(f"{self.path} is not a run directory and is not empty (it holds "
                             f"{', '.join(others)}); give a new or empty directory")  # fmt: skip

    def lock(self) -> None:
        """Makes this process the run's only writer until it ends (or `unlock`).

        Two drivers on one run would both train its missing trials and append them twice. The
        lock is an `flock` on `writer.lock`, which the system releases however the process ends,
        so a crashed driver's run resumes at once. Creates the directory if there is none; call
        `check_new` first for a new run, so that no lock file lands among other files.

        Raises:
          StoreError: another process holds the run (the message names it), or the directory
            cannot be made or written.
        """
        if self._lock is not None:
            return
        if self.path.is_dir() and not os.access(self.path, os.W_OK):
            raise StoreError(f"run directory {self.path} is not writable")
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StoreError(f"cannot create run directory {self.path}: {error.strerror}") from None
        for attempt in range(LOCK_TRIES):  # `writer` peeks with a lock of its own for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < LOCK_TRIES:
                    time.sleep(0.1)
                    continue
                holder = _holder(fd)
                os.close(fd)
                raise self._busy(holder) from None
            except OSError:  # a file system without locks: go on as before there were any
                os.close(fd)
                return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"cellsearch PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock = fd

    def writer(self) -> str | None:
        """Who writes the run now ("cellsearch PID N on HOST"), or None when no driver does."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return None  # never written since runs had a lock, or not a run
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return _holder(fd)
        except OSError:
            return None
        finally:
            os.close(fd)  # (and with it a lock just taken)

    def check_free(self) -> None:
        """Raises StoreError, naming the writer, if a driver writes the run now."""
        holder = self.writer()
        if holder:
            raise self._busy(holder)

    def _busy(self, holder: str) -> StoreError:
        return StoreError(f"{self.path} is being written by {holder}; wait for it to end (or stop "
                          "it), then the same command resumes the run")

    def unlock(self) -> None:
        """Releases the writer lock (the file stays: deleting it would race a new writer)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def create(self, config_text: str) -> None:
        """Creates the directory (user-only permissions) and writes run.toml."""
        self.check_new()
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._write_new(self.config_path, config_text)
        except OSError as error:
            raise StoreError(f"cannot create run directory {self.path}: {error.strerror}") from None

    def _write_new(self, path: pathlib.Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def open_for_append(self) -> None:
        """Checks the directory is writable and repairs torn tails before the first append."""
        if not os.access(self.path, os.W_OK):
            raise StoreError(f"run directory {self.path} is not writable")
        for path in (self.trials_path, self.cells_path):
            try:
                _repair_tail(path)
            except OSError as error:
                raise StoreError(f"cannot repair {path}: {error.strerror}") from None

    def append(self, path: pathlib.Path, row: dict) -> None:
        """Appends one JSON object as a line, flushed and fsynced before returning."""
        line = json.dumps(row, allow_nan=False, separators=(",", ":")) + "\n"
        size = path.stat().st_size if path.exists() else 0
        try:
            with open(path, "a", encoding="utf-8") as f:
                if path.name == TRIALS and fault_point("mid_write"):
                    f.write(line[: len(line) // 2])  # a torn line on disk, then the crash
                    f.flush()
                    os.fsync(f.fileno())
                    crash_now()
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:
            try:  # a partial line (disk full) is cut off again: the file keeps only whole rows
                os.truncate(path, size)
            except OSError:
                pass  # then it is a torn tail, which the next open repairs
            raise StoreError(f"cannot append to {path}: {error.strerror}; the run stopped here "
                             "and resumes with the same command") from None

    def append_trial(self, row: dict) -> None:
        self.append(self.trials_path, row)

    def append_cell(self, row: dict) -> None:
        self.append(self.cells_path, row)

    def trials(self) -> list[dict]:
        return read_jsonl(self.trials_path)

    def cells(self) -> list[dict]:
        return read_jsonl(self.cells_path)

    def config_text(self) -> str:
        try:
            return self.config_path.read_text(encoding="utf-8")
        except OSError as error:
            raise StoreError(f"cannot read {self.config_path}: {error.strerror}") from None

    def metadata(self) -> dict:
        """run.toml as a dict: `config` (the resolved config) and `run` (format, creation time,
        code version, package versions, data checksums). StoreError if it cannot be read."""
        import tomllib

        try:
            return tomllib.loads(self.config_text())
        except tomllib.TOMLDecodeError as error:
            raise StoreError(f"{self.config_path}: invalid TOML ({error})") from None
