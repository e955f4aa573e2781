"""Helpers shared by the tests: tiny search configs, the CLI as a subprocess, process bookkeeping.

The session's local Ray fixture is in conftest.py."""

import contextlib
import hashlib
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from results import load
from search.config import load_config

QUICK = pathlib.Path(__file__).parents[1] / "configs" / "quick.toml"
TINY_BUDGET = (("steps", 10), ("hidden", 8), ("batch", 8), ("eval_sequences", 8))
TINY = {
    "settings_per_task": 1, "cells_per_round": 2, "jozefowicz.baseline_settings": 1,
    "jozefowicz.screen_threshold": 0.0, "jozefowicz.p_reevaluate": 0.3,
    "regularized_evolution.population": 3, "regularized_evolution.tournament": 2,
    "random.cell_size": 3, "baselines.cells": ["tanh", "lstm"],
    **{f"budget.{task}.{key}": value for task in ("arith", "xml", "ptb", "memorize", "nottingham")
       for key, value in TINY_BUDGET},
    "budget.ptb.eval_sequences": 1, "budget.xml.seq_len": 10, "budget.ptb.seq_len": 10,
    "budget.nottingham.seq_len": 10, "task_options.arith.max_digits": 2,
    # 1 and 2 layers of the paper's 1-4: a new program per (cell, task, layers) takes seconds to
    # compile here, far longer than its tiny trial, and fewer layer counts mean fewer programs
    "grid.layers": [1, 2],
}  # fmt: skip


def readme_example(first_line: str) -> str:
    """The README's Python example whose first line is `first_line` (a module the README asks the
    reader to save, `# hillclimb.py`), so that tests run the code as the README gives it."""
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        if block.startswith(first_line + "\n"):
            return block
    raise AssertionError(f"README.md has no Python example starting with {first_line!r}")


def tiny_args(**overrides) -> list[str]:
    """`tiny(**overrides)` as `--set` arguments of the `cellsearch search` command line."""
    return [f"--set={k}={v}" for k, v in (TINY | overrides).items()]


def tiny(**overrides):
    """configs/quick.toml shrunk to trials of a second or two."""
    return load_config(QUICK, TINY | overrides)


def borrowed(executor):
    """An executor factory that lends the session's Ray executor without closing it."""
    return lambda: contextlib.nullcontext(executor)


def _proc_stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name (Linux)."""
    stats = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    return stats


def descendants(pid: int) -> set[int]:
    """PIDs of every process below `pid`."""
    parent = {p: int(fields[1]) for p, fields in _proc_stats().items()}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def ray_actors(sid: int, name: str) -> set[int]:
    """PIDs of session `sid`'s Ray actor processes of class `name` (Ray titles them `ray::NAME`,
    or `ray::NAME.method` while a method runs)."""
    found = set()
    for pid, fields in _proc_stats().items():
        if int(fields[3]) != sid:
            continue
        try:
            title = (pathlib.Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title == f"ray::{name}".encode() or title.startswith(f"ray::{name}.".encode()):
            found.add(pid)
    return found


def kill_session(sid: int) -> None:
    """SIGKILLs the processes of session `sid`: what a driver started with start_new_session=True
    left behind (its local Ray) after it died. Only those PIDs, never by name."""
    for pid, fields in _proc_stats().items():
        if int(fields[3]) == sid and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def cellsearch_command(*args) -> list[str]:
    """The command line of `cellsearch ARGS`: the installed script, else the module."""
    exe = shutil.which("cellsearch")
    return [*([exe] if exe else [sys.executable, "-m", "search.cli"]), *map(str, args)]


def cellsearch(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Runs the `cellsearch` command as a user does: a new process, output captured."""
    return subprocess.run(cellsearch_command(*args), capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)  # fmt: skip


def tree_digest(path: pathlib.Path) -> str:
    """A digest of every file's name and bytes under `path`: equal iff nothing changed."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


SEQUENCE = ["trial", "round", "cell_hash", "task", "lr", "clip", "init_scale", "layers", "seed"]


def sequence(run) -> list[tuple]:
    """What makes a run's trial sequence: id, round, cell, task, hyperparameters and seed per trial."""
    frame = load(run).sort_values("trial")
    return [tuple(row) for row in frame[SEQUENCE].astype(str).itertuples(index=False)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def ray_head(cpus: int, env: dict, gpus: int = 0):
    """A Ray head of its own on 127.0.0.1, as `ray start --head` makes one on a cluster's head
    (declaring `gpus` GPUs, which Ray then hands out whether or not the machine has them);
    yields (its address, its process), and stops it by its PID."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayhead-")  # short: Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}", head
    finally:
        head.send_signal(signal.SIGTERM)  # only the head we started, by its PID
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_rows(run: pathlib.Path, rows: int, driver: subprocess.Popen, timeout: float) -> None:
    """Waits until `run` stores `rows` trials, the driver exits, or `timeout` seconds pass."""
    trials = pathlib.Path(run) / "trials.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        if trials.exists() and len(trials.read_text().splitlines()) >= rows:
            return
        time.sleep(0.1)
