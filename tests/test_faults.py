"""Crash anywhere: the driver is SIGKILLed at five points of a search (before the first row,
during a strategy update, mid-run, while a row is being written, at the very end), each time
resumed by the same command; the store ends with every trial once, in the uninterrupted run's
sequence. A full disk stops the search with a one-line error and an intact store; a second driver
on a run is refused."""

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from results import load
from results.store import FAULT
from search.loop import run_search
from searchkit import (QUICK, borrowed, kill_session, ray_head, sequence, tiny, tiny_args, tree_digest,
                       wait_for_rows)

TRIALS = 12
ARGS = [*tiny_args(max_trials=TRIALS), "--workers=2", "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, ray_workers):
    run = tmp_path_factory.mktemp("whole") / "run"
    run_search(tiny(max_trials=TRIALS), run, borrowed(ray_workers))
    return sequence(run)


def search(run, env=None) -> subprocess.CompletedProcess:
    """The user's command in a new driver process (and session, so its leftovers can be found)."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(run), *ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=os.environ | (env or {}),
    )  # fmt: skip
    try:
        out, err = driver.communicate(timeout=400)
    finally:
        kill_session(driver.pid)  # a killed driver leaves its local Ray behind
    return subprocess.CompletedProcess(driver.args, driver.returncode, out, err)


# One driver after another on the same run, each SIGKILLed at its point (a resumed driver counts
# its passes anew), then a last one that finishes it: six driver runs instead of ten for five
# crashes, each point reached as in a run of its own. The strategy update comes first, while
# nothing is stored, so that its 2nd pass is a real update and not the replay of a stored round.
KILL_POINTS = ["before_trials", "strategy_update:2", "after_row:1", "mid_write:2", "end"]


def test_driver_killed_anywhere_resumes_to_the_uninterrupted_sequence(tmp_path, uninterrupted):
    run, trials = tmp_path / "run", tmp_path / "run" / "trials.jsonl"
    stored = []  # lines on disk after each crash
    for point in KILL_POINTS:
        crashed = search(run, {FAULT: point})
        assert crashed.returncode == -signal.SIGKILL, (point, crashed.stderr[-2000:])  # it got there
        lines = trials.read_text().splitlines() if trials.exists() else []
        stored.append(len(lines))
        if point.startswith("mid_write"):
            assert not lines[-1].endswith("}")  # the torn half line is on disk
        if point == "end":  # the driver after the torn line skipped it with a warning, then cut it
            assert f"cellsearch: warning: {trials}: removed an incomplete last line" in crashed.stderr
    assert 0 == stored[0] < stored[1] < stored[2] < stored[3] < TRIALS, stored  # 0, 8, 9, 11
    resumed = search(run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ids = [json.loads(line)["trial"] for line in trials.read_text().splitlines()]
    assert sorted(ids) == list(range(TRIALS))  # every trial exactly once
    assert sequence(run) == uninterrupted


def test_a_full_disk_stops_the_search_with_a_clear_error_and_an_intact_store(tmp_path, uninterrupted):
    run = tmp_path / "run"
    assert search(run, {FAULT: "after_row:4"}).returncode == -signal.SIGKILL
    # once its local Ray is up, the resumed driver may grow no file by more than 200 bytes: the
    # next row or two fit, then writes fail as on a full disk
    stopped = search(run, {FAULT: "disk_full"})
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("cellsearch: error: ") and "trials.jsonl" in last and "Traceback" not in stopped.stderr
    rows = load(run)  # every stored line is whole: nothing torn, nothing lost
    assert sorted(rows["trial"]) == sorted(set(rows["trial"])) and len(rows) >= 4
    resumed = search(run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sequence(run) == uninterrupted



def test_a_read_only_run_directory_is_a_clear_error_and_stays_intact(tmp_path, ray_workers):
    run = tmp_path / "run"
    run_search(tiny(max_trials=3), run, borrowed(ray_workers))
    before = tree_digest(run)
    # no --workers: on a 1-CPU machine 2 workers would add a warning line to the one error line
    command = [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(run),
               *tiny_args(max_trials=TRIALS), "--quiet"]  # fmt: skip
    if os.geteuid() == 0:  # root writes through permissions: make the directory a read-only mount
        remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", remount, str(run), *command]
        if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
            pytest.skip("running as root without permission to make a private read-only mount")
    else:
        run.chmod(0o500)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        run.chmod(0o700)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"run directory {run} is not writable" in result.stderr
    assert tree_digest(run) == before



def test_a_run_another_driver_is_writing_is_refused_and_resumes_once_it_ends(tmp_path, ray_workers):
    # the same command started twice (two terminals, or again while a cluster job runs) would
    # train the missing trials twice and store each twice
    run = tmp_path / "run"
    command = [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(run),
               *tiny_args(max_trials=4)]  # fmt: skip
    with _writer_of(run) as holder:  # a new run
        result = subprocess.run([*command, "--quiet"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
        assert f"{run} is being written by cellsearch PID {holder.pid} on " in result.stderr
        assert [p.name for p in run.iterdir()] == ["writer.lock"]  # nothing else made
    summary = run_search(tiny(max_trials=3), run, borrowed(ray_workers))
    assert summary.ran == 3 and sorted(load(run)["trial"]) == [0, 1, 2]
    stored = {name: (run / name).read_bytes() for name in ("run.toml", "trials.jsonl", "cells.jsonl")}
    with _writer_of(run) as holder:  # a run to resume: refused before the progress bar is drawn
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.startswith("cellsearch: error: ") and result.stderr.count("\n") == 1
        assert f"is being written by cellsearch PID {holder.pid} on " in result.stderr
    assert stored == {name: (run / name).read_bytes() for name in stored}


@contextlib.contextmanager
def _writer_of(run: pathlib.Path):
    """Another process that holds `run`'s writer lock, as a running driver does, until the end."""
    hold = ("import sys; from results import RunStore; RunStore(sys.argv[1]).lock(); print(flush=True); "
            "sys.stdin.read()")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        holder.stdout.readline()  # it holds the run now
        yield holder
    finally:
        holder.stdin.close()  # its lock ends with it, however it ends
        holder.wait(timeout=60)


def test_losing_a_node_of_a_two_node_cluster_loses_no_trial(tmp_path):
    """Two Ray nodes on this machine (1 CPU each, one worker each); the second node is killed with
    the trial its worker runs. The trial is retried on the head's worker and the search completes."""
    from search.executor import local_ray_environment

    # a local search forbids multi-node Ray (that is what keeps it on 127.0.0.1); this test needs it
    env = os.environ | local_ray_environment() | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    with ray_head(cpus=1, env=env) as (address, head):
        # the node waits for the head, and the driver's second worker for the node, as on a
        # cluster whose machines come up one after the other
        second = subprocess.Popen(
            [str(pathlib.Path(sys.executable).parent / "ray"), "start", "--block", "--num-cpus=1",
             "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--address={address}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
        )  # fmt: skip
        try:
            run = tmp_path / "run"
            slow = [f"--set=budget.{t}.steps=200" for t in ("arith", "xml", "ptb")]
            # 6 trials: 3 stored, one lost with the node and retried, the rest on the head's worker
            driver = subprocess.Popen(
                [sys.executable, "-m", "search.cli", "search", str(QUICK), "--out", str(run),
                 *tiny_args(max_trials=6), "--workers=2", "--quiet", *slow, f"--address={address}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            wait_for_rows(run, 3, driver, timeout=300)
            assert driver.poll() is None, driver.communicate()[1][-2000:]
            kill_session(second.pid)  # the second node dies with the trial its worker was running
            second.wait()
            _, err = driver.communicate(timeout=400)
        finally:
            kill_session(second.pid)
            second.wait(timeout=60)
        assert driver.returncode == 0, err[-2000:]
        frame = load(run)
        assert sorted(frame["trial"]) == list(range(6))  # nothing lost, nothing twice
        assert set(frame["status"]) <= {"ok", "diverged"}  # the lost trial was retried
        assert head.poll() is None
