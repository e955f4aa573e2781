"""The `cellsearch` command line, run as a user runs it: a subprocess of the installed script."""

import contextlib
import datetime
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from cells import BASELINES, parse
from results import load
from searchkit import cellsearch, cellsearch_command



def test_show_prints_canonical_equations_and_counts():
    result = cellsearch("show", "lstm", "--hidden", "10")
    assert result.returncode == 0, result.stderr
    equations = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("#"))
    assert parse(equations) == parse(BASELINES["lstm"])
    assert "parameters per layer at H=10: 880 (8 W nodes)" in result.stdout
    assert "matmuls per step: 2 (on x, h)" in result.stdout


def test_show_list_names_every_baseline():
    result = cellsearch("show", "--list")
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(BASELINES)


def test_show_latex():
    result = cellsearch("show", "gru", "--latex")
    assert result.returncode == 0
    assert result.stdout.startswith("\\begin{aligned}")


def test_show_reads_a_cell_file(tmp_path):
    path = tmp_path / "mine.cell"
    path.write_text("z = sigmoid(W(x) + W(h))\nh_new = z * h + (1 - z) * tanh(W(x))\n")
    result = cellsearch("show", str(path))
    assert result.returncode == 0, result.stderr
    assert "h_new = z * h + (1 - z) * tanh(W(x))" in result.stdout


TYPED_CELL = "z = sigmoid(W(x) + W(h)); h_new = z * h + (1 - z) * tanh(W(x))"  # as typed in a shell


def test_cell_text_on_the_command_line_is_a_cell(tmp_path):
    typed = TYPED_CELL
    path = tmp_path / "mine.cell"
    path.write_text(typed.replace("; ", "\n") + "\n")
    shown, from_file = cellsearch("show", typed), cellsearch("show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"# {parse(path.read_text()).hash}"  # named by its hash
    assert shown.stdout.splitlines()[1:] == from_file.stdout.splitlines()[1:]
    converted = cellsearch("convert", "--to", "nasbench", typed)
    assert converted.returncode == 0 and converted.stdout == cellsearch("convert", "--to", "nasbench", str(path)).stdout
    bad = cellsearch("show", "z = sigmoid(W(x) + W(h)); h_new = z * q")
    assert bad.returncode == 2 and bad.stderr == "cellsearch: error: cell text: line 1: undefined name 'q'\n"


COMMITTED = pathlib.Path(__file__).parents[1] / "docs" / "reproduction-quick"  # a real run's stores


def test_a_cell_of_a_run_is_named_run_colon_hash_prefix(tmp_path):
    found = next(c for c in map(json.loads, open(COMMITTED / "search" / "cells.jsonl"))
                 if c["origin"] == "mutation")  # fmt: skip
    prefix = found["hash"][:8]
    for run in (COMMITTED, COMMITTED / "search"):  # the reproduction's directory or the run's own
        result = cellsearch("show", f"{run}:{prefix}")
        assert result.returncode == 0, result.stderr
        assert f"# {run}:{found['hash']}" in result.stdout and f"hash: {found['hash']}" in result.stdout
    out = tmp_path / "rows.jsonl"  # train it, as a researcher takes a found cell further
    result = cellsearch("train", f"{COMMITTED}:{prefix}", "arith", "--set", "steps=20", "--set",
                        "hidden=16", "--set", "task.max_digits=2", "--out", str(out), "--cores", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["status"] == "ok" and parse(row["cell_text"]).hash == found["hash"]
    # a baseline of the run is that baseline, by name as by hash
    by_hash = cellsearch("show", f"{COMMITTED}:{parse(BASELINES['lstm_i']).hash}")
    assert by_hash.stdout.startswith("# lstm_i: ")
    assert by_hash.stdout == cellsearch("show", f"{COMMITTED}:lstm_i").stdout


def test_baselines_evaluate_a_found_cell_beside_the_baselines(tmp_path):
    # the paper's Table 1 procedure for the cells its search found: more settings on every task
    found = next(c for c in map(json.loads, open(COMMITTED / "search" / "cells.jsonl"))
                 if c["origin"] == "mutation")  # fmt: skip
    text_file = tmp_path / "mine.cell"
    text_file.write_text("z = sigmoid(W(x) + W(h))\nh_new = z * h + (1 - z) * relu(W(x) + W(h))\n")
    typed = TYPED_CELL
    command = ["baselines", "--cells", "gru", f"{COMMITTED}:{found['hash'][:8]}", str(text_file), typed,
               "--tasks", "arith", "--settings", "1", "--workers", "1", "--out", str(tmp_path / "run"), "--quiet"]
    result = cellsearch(*command)
    assert result.returncode == 0, result.stderr
    cells = {c["hash"]: c for c in map(json.loads, open(tmp_path / "run" / "cells.jsonl"))}
    assert cells[found["hash"]]["origin"] == "given" and cells[found["hash"]]["text"] == found["text"]
    assert cells[parse(typed).hash]["origin"] == "given"
    assert sorted(c["origin"] for c in cells.values()) == ["baseline", "given", "given", "given"]
    rows = [json.loads(line) for line in open(tmp_path / "run" / "trials.jsonl")]
    assert sorted(r["cell_hash"] for r in rows) == sorted(cells) and {r["purpose"] for r in rows} == {"baseline"}
    # the run keeps the cells' equations (run.toml), and the same command replays it
    again = cellsearch(*command)
    assert again.returncode == 0, again.stderr
    assert len(open(tmp_path / "run" / "trials.jsonl").readlines()) == 4


@contextlib.contextmanager
def _writer_lock_held(run):
    """A process holding the run's writer.lock, as a driver does while it runs; yields its PID."""
    hold = ("import sys; from results import RunStore; RunStore(sys.argv[1]).lock(); print(flush=True); "
            "sys.stdin.read()")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        holder.stdout.readline()
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_status_says_who_writes_a_run_and_how_far_it_is(tmp_path):
    run = tmp_path / "search"
    shutil.copytree(COMMITTED / "search", run)  # a finished 80-trial search, real rows
    with _writer_lock_held(run) as pid:
        running = cellsearch("status", str(run))
    assert running.returncode == 0, running.stderr
    assert running.stdout.splitlines()[0] == f"{run} (running: cellsearch PID {pid} on {os.uname().nodename})"
    assert "lately" not in running.stdout  # its rows predate `stored_at`: no rate to give
    frame = load(run)
    done = cellsearch("status", str(COMMITTED))  # both runs of a reproduction
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # a baselines run's count is the list its strategy trains (10 cells x 2 settings x 4 tasks,
    # nottingham's twice: with and without dropout), not its max_trials (1000), which only caps it
    assert lines[0] == f"{COMMITTED / 'baselines'} (finished)"
    assert lines[2].startswith("  100 of 100 trials, the last stored ")
    assert f"{COMMITTED / 'search'} (finished)" in lines
    counts = frame["status"].astype(str).value_counts()
    assert (f"  {len(frame)} of 80 trials, the last stored " in done.stdout
            and f"{counts['ok']} ok, {counts.get('diverged', 0)} diverged, 0 error" in done.stdout)  # fmt: skip
    assert "best: gru (Jozefowicz score 1.0000); best found v1-" in done.stdout
    # reading runs needs no jax (counting a baselines run's list included): a quick command
    light = ("import sys; from search.cli import main; code = main(sys.argv[1:]); "
             "print('jax' in sys.modules, file=sys.stderr); sys.exit(code)")  # fmt: skip
    probe = subprocess.run([sys.executable, "-c", light, "status", str(COMMITTED)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert probe.returncode == 0 and probe.stderr == "False\n", probe.stderr
    cut = tmp_path / "baselines"  # a baselines run stopped after 60 trials
    shutil.copytree(COMMITTED / "baselines", cut)
    rows = (cut / "trials.jsonl").read_text().splitlines(keepends=True)
    (cut / "trials.jsonl").write_text("".join(rows[:60]))
    stopped = cellsearch("status", str(cut)).stdout.splitlines()
    assert stopped[0] == f"{cut} (not running; the same command resumes it)"
    assert stopped[2].startswith("  60 of 100 trials")
    # the same 60 rows stored 2 s apart until now, while a driver writes the run: the rate of the
    # last 50 (1800/h) and the 40 trials left at that rate (80 s), as the driver's progress bar
    now = time.time()
    stamped = [json.loads(row) | {"stored_at": datetime.datetime.fromtimestamp(
               now - 2 * (59 - i), datetime.timezone.utc).isoformat(timespec="seconds")}
               for i, row in enumerate(rows[:60])]  # fmt: skip
    (cut / "trials.jsonl").write_text("".join(json.dumps(row) + "\n" for row in stamped))
    assert "lately" not in cellsearch("status", str(cut)).stdout  # not running: no time left to give
    with _writer_lock_held(cut):
        writing = cellsearch("status", str(cut)).stdout.splitlines()
    assert writing[3] == "  lately 1800 trials/h, about 80 s left", writing


def test_a_run_caught_mid_write_is_read_with_a_one_line_warning(tmp_path):
    # `status` is run while a driver appends rows: it may read the half of a line written so far
    run = tmp_path / "baselines"
    shutil.copytree(COMMITTED / "baselines", run)
    rows = (run / "trials.jsonl").read_text().splitlines(keepends=True)
    (run / "trials.jsonl").write_text("".join(rows[:60]) + rows[60][:100])
    results = {command: cellsearch(command, str(run)) for command in ("status", "leaderboard")}
    for result in results.values():
        assert result.returncode == 0, result.stderr
        assert result.stderr == (f"cellsearch: warning: {run / 'trials.jsonl'}: line 61 is incomplete "
                                 "(an interrupted write); skipped\n")  # fmt: skip
    assert "  60 of 100 trials" in results["status"].stdout


def _committed_cells() -> int:
    return len({json.loads(line)["hash"] for run in ("baselines", "search")
                for line in open(COMMITTED / run / "cells.jsonl")})  # fmt: skip


@pytest.mark.parametrize(
    "key, message",
    [
        ("v1-", "matches {cells} cells of"),  # every cell's hash starts so; the two runs share some
        ("v1-zz", "has the name or hash (prefix) 'v1-zz'"),
    ],
)
def test_a_run_cell_that_is_not_one_cell_is_a_one_line_error(key, message):
    message = message.format(cells=_committed_cells())
    result = cellsearch("show", f"{COMMITTED}:{key}")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("h_new = tanh(W(x) + W(h)\n", "line 1: invalid syntax"),
        ("r = sigmoid(W(x) + W(h))\nh_new = softmax(W(r * h))\n", "line 2: unknown op 'softmax'"),
        ("h_new = tanh(W(x))\n", "the cell ignores its input 'h'"),
        ("import os\nh_new = tanh(W(x) + W(h))\n", "line 1: import statement is not allowed"),
    ],
)
def test_bad_cell_file_is_one_line_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.cell"
    path.write_text(content)
    result = cellsearch("show", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert f"cellsearch: error: {path}: " in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "no_such_cell"], "'no_such_cell' is neither a baseline cell"),
        (["show", "no_such_run:v1-3f"], "RUN:CELL (a cell of a run directory"),
        (["show"], "show needs a cell (a baseline name, a cell text file, RUN:HASH or cell text)"),
        (["show", "lstm", "--hidden", "0"], "--hidden must be a positive integer"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    result = cellsearch(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    "args, usage, message",
    [
        (["train", "lstm", "ptb", "--task", "jsb"], "usage: cellsearch train ",
         "cellsearch train: error: unrecognized arguments: --task jsb"),
        (["cache", "--trim-to", "5GB"], "usage: cellsearch cache ",
         "cellsearch cache: error: unrecognized arguments: --trim-to 5GB"),
        (["--verbose", "show", "lstm"], "usage: cellsearch [-h] [--version] COMMAND",
         "cellsearch: error: unrecognized arguments: --verbose"),
    ],
)  # fmt: skip
def test_an_unknown_option_is_blamed_on_its_command(args, usage, message, capsys):
    # argparse's own parse_args names the top-level parser and prints its usage, which lists no
    # option of the command the user got wrong; an option before the command is the top level's
    from search.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert usage in err and message in err


def test_version_is_the_installed_packages():
    import importlib.metadata

    result = cellsearch("--version")
    assert result.returncode == 0 and result.stdout == f"cellsearch {importlib.metadata.version('cellsearch')}\n"


def test_the_traceback_behind_a_one_line_error_is_there_when_asked_for(monkeypatch):
    monkeypatch.setenv("CELLSEARCH_TRACEBACK", "1")
    result = cellsearch("show", "no_such_cell")
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert "'no_such_cell' is neither a baseline cell" in result.stderr.splitlines()[-1]


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "blob.cell"
    path.write_bytes(b"\xff\xfe\x00garbage")
    result = cellsearch("show", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot read {path}" in result.stderr


def test_help_everywhere():
    for args in (["--help"], ["show", "--help"]):
        result = cellsearch(*args)
        assert result.returncode == 0 and "usage: cellsearch" in result.stdout
    from search.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert len(commands) == 14
    for name, parser in commands.items():  # argparse formats help strings, not descriptions
        text = parser.format_help()
        assert text.startswith(f"usage: cellsearch {name}") and "%%" not in text, (name, text)


def test_output_piped_into_a_reader_that_leaves_early_is_not_an_error():
    # `cellsearch mutate lstm --n 500 | head -1`: the rest of the output meets a closed pipe
    command = cellsearch_command("mutate", "lstm", "--n", "500")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert stderr == "", stderr  # no "Broken pipe" error line, no traceback


# ------------------------------------------------------------------------------------ train
def test_train_prints_one_json_row(tmp_path):
    out = tmp_path / "rows.jsonl"
    result = cellsearch("train", "gru", "arith", "--set", "steps=200", "--set", "hidden=16",
                        "--set", "task.max_digits=2", "--set", "lr=0.5", "--seed", "3",
                        "--out", str(out), "--cores", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["status"] == "ok" and row["cell"] == "gru" and row["seed"] == 3
    assert row["cpu_threads"] == 1  # --cores 1: as a search's worker trains
    assert row["lr"] == 0.5 and row["task_options"] == {"max_digits": 2}
    assert json.loads(out.read_text()) == row
    # the progress bar, in a log file (not a terminal): drawn at the start and the end, not after
    # each of the trial's 20 jitted calls
    assert 2 <= result.stderr.count("gru on arith") <= 3, result.stderr


def test_train_deterministic_adds_the_xla_flag_and_changes_nothing_on_a_cpu():
    args = ("train", "gru", "arith", "--set", "steps=20", "--set", "hidden=16", "--set",
            "task.max_digits=2", "--quiet")  # fmt: skip
    plain, exact = cellsearch(*args), cellsearch(*args, "--deterministic")
    assert plain.returncode == 0 and exact.returncode == 0, exact.stderr
    plain, exact = json.loads(plain.stdout), json.loads(exact.stdout)
    assert "--xla_gpu_deterministic_ops=true" in exact["xla_flags"].split()
    assert "--xla_gpu_deterministic_ops=true" not in plain["xla_flags"].split()
    assert exact["score"] == plain["score"] and exact["train_loss"] == plain["train_loss"]


def test_train_of_a_budget_in_part_of_a_call_says_what_it_trains():
    result = cellsearch("train", "lstm", "arith", "--set", "steps=25", "--set", "hidden=8",
                        "--set", "task.max_digits=2", "--set", "lr_decay=0.5", "--set",
                        "lr_decay_every=15", "--quiet", "--cores", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("cellsearch: warning: arith: steps 25 and lr_decay_every 15 are not "
                             "multiples of steps_per_call 10: the trainer runs whole calls, so it "
                             "trains 30 steps and changes the learning rate on the first call at "
                             "or after each step the schedule names\n")  # fmt: skip
    row = json.loads(result.stdout)
    assert (row["budget_steps"], row["steps_done"]) == (25, 30)  # the row says both


def test_train_settings_trains_k_grid_settings_as_one_program(tmp_path):
    out = tmp_path / "rows.jsonl"
    result = cellsearch("train", "gru", "arith", "--settings", "3", "--set", "steps=20", "--set",
                        "hidden=16", "--set", "task.max_digits=2", "--set", "clip=2.5", "--seed", "4",
                        "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert [row["seed"] for row in rows] == [4, 5, 6]
    assert all(row["vmapped_settings"] == 3 and row["clip"] == 2.5 for row in rows)  # --set fixes clip
    assert len({(row["lr"], row["init_scale"]) for row in rows}) == 3  # drawn from the grid
    assert "3 settings of gru on arith as one program" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "lstm", "nope"], "unknown task 'nope'"),
        (["train", "lr=0.5", "arith"], "'lr=0.5' is a setting, not a cell: give it as --set lr=0.5"),
        (["train", "lstm", "arith", "--set", "speed=3"], "unknown --set key 'speed'"),
        (["train", "lstm", "arith", "--set", "steps"], "--set expects key=value"),
        (["train", "lstm", "arith", "--set", "lr=-1"], "lr must be > 0, got -1"),
        (["train", "lstm", "arith", "--set", "task.digits=3"], "unknown option 'digits' for task arith"),
        (["train", "lstm", "arith", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "lstm", "ptb", "--set", "seq_len=0"], "task ptb needs seq_len >= 1"),
        (["train", "lstm", "ptb", "--set", "hidden=0"], "hidden must be >= 1, got 0"),
        (["train", "lstm", "arith", "--set", "hidden=32.5"], "hidden must be int, got float 32.5"),
        (["train", "lstm", "arith", "--set", "steps=true"], "steps must be int, got bool True"),
        (["train", "lstm", "arith", "--set", "lr=fast"], "lr must be float, got str 'fast'"),
        (["train", "lstm", "arith", "--set", "task.max_digits=five"],
         "task arith: max_digits must be int, got str 'five'"),
        (["train", "lstm", "arith", "--settings", "0"], "--settings must be a positive integer"),
        (["train", "lstm", "arith", "--cores", "0"], "--cores must be between 1 and the"),
        (["rerun", "/nonexistent", "3"], "/nonexistent: not a run directory (no run.toml)"),
        (["train", "lstm", "arith", "--out", "/nonexistent/rows.jsonl"],
         "--out /nonexistent/rows.jsonl: cannot write (No such file or directory)"),
    ],
)
def test_train_usage_errors_are_one_line(args, message, capsys):
    # in this process: a new one per case would import jax 16 times (the other usage-error tests
    # run the command itself)
    from search.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert message in err


# ----------------------------------------------------------------------------------- mutate
def test_mutate_prints_distinct_valid_children_reproducibly():
    first = cellsearch("mutate", "lstm", "--n", "20", "--seed", "0")
    assert first.returncode == 0, first.stderr
    assert first.stdout == cellsearch("mutate", "lstm", "--n", "20", "--seed", "0").stdout
    blocks = first.stdout.split("# child ")[1:]
    assert len(blocks) == 20
    hashes = []
    for block in blocks:
        header, *lines = block.splitlines()
        hashes.append(re.search(r"v1-[0-9a-f]{16}", header)[0])
        graph = parse("\n".join(line for line in lines if not line.startswith("#")))
        assert graph.hash == hashes[-1]
    assert len(set(hashes)) == 20


def test_show_prints_hash_and_fingerprint():
    result = cellsearch("show", "gru")
    from cells import baseline

    assert f"# hash: {baseline('gru').hash}  fingerprint: {baseline('gru').fingerprint}" in result.stdout


# ------------------------------------------------------------------- search, leaderboard, export
@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "no_such.toml"], "no_such.toml: cannot read"),
        (["search", "configs/quick.toml", "--set", "strategy=annealing"], "unknown strategy 'annealing'"),
        (["search", "configs/quick.toml", "--set", "max_trails=3"], "unknown key 'max_trails'"),
        (["search", "configs/quick.toml", "--workers", "0"], "--workers must be a positive integer"),
        (["leaderboard", "no_such_run"], "no_such_run: no such run directory"),
        (["export", "no_such_run"], "no_such_run: no such run directory"),
        (["baselines", "--settings", "0"], "--settings must be a positive integer"),
        (["baselines", "--cells", "lstm", "nope"], "'nope' is neither a baseline cell"),
        (["baselines", "--tasks", "chess"], "unknown task 'chess'"),
    ],
)
def test_search_usage_errors_are_one_line(args, message, tmp_path):
    repo = __file__.rsplit("/tests/", 1)[0]
    result = cellsearch(*args, cwd=repo)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_the_search_bar_rates_only_the_trials_this_process_ran(capsys, monkeypatch):
    from search.cli import search_progress_bar
    from search.loop import Progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar
    bar, progress = search_progress_bar(60, "jozefowicz -> runs/q")
    with bar:  # a resume: 30 rows replayed, the first trial trained 100 s in (Ray's start,
        bar.start_t -= 118.0  # compiles), then one every 2 s
        progress(Progress(trials=30, max_trials=60, failures=0, best=None, ran=0, seconds=1.0))
        progress(Progress(trials=31, max_trials=60, failures=1, best=("gru", 1.0), ran=1, seconds=100.0))
        assert "31/60 [01:58, diverged/error=1 best=gru 1.000 -/h]" in capsys.readouterr().err
        progress(Progress(trials=40, max_trials=60, failures=1, best=("gru", 1.0), ran=10, seconds=118.0))
    # 20 trials left at 9 per 18 s, not at 10 per 118 s (about 4 min) nor at 40 per 118 s
    assert "40/60 [01:58, diverged/error=1 best=gru 1.000 1800/h, about 40 s left]" in capsys.readouterr().err


@pytest.mark.parametrize("log_every, lines", [(0.0, 3), (3600.0, 2)])
def test_in_a_log_file_search_progress_is_a_plain_line_now_and_then(capsys, log_every, lines):
    """stderr is not a terminal (capsys): timestamped lines, the first at once, the last at the end."""
    from search.cli import search_progress_bar
    from search.loop import Progress

    bar, progress = search_progress_bar(60, "jozefowicz -> runs/q", log_every=log_every)
    with bar:
        progress(Progress(trials=30, max_trials=60, failures=0, best=None, ran=0, seconds=1.0))
        # the first trained trial ends 100 s in (Ray's start, compiles), then one every 2 s
        progress(Progress(trials=31, max_trials=60, failures=1, best=("gru", 1.0), ran=1, seconds=100.0))
        progress(Progress(trials=40, max_trials=60, failures=1, best=("gru", 1.0), ran=10, seconds=118.0))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == lines and "\r" not in "".join(err)
    assert re.fullmatch(r"20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC jozefowicz -> runs/q: 30/60 trials, "
                        r"0 diverged/error, best -, -/h", err[0])  # fmt: skip
    if lines == 3:
        assert err[1].endswith("31/60 trials, 1 diverged/error, best gru 1.000, -/h")  # one is no rate
    # 20 trials left at 9 per 18 s since the first (not 10 per 118 s: "about 4 min"; the replayed
    # 30 count in the position, not in the rate)
    assert err[-1].endswith("40/60 trials, 1 diverged/error, best gru 1.000, 1800/h, about 40 s left")
    from search.cli import _duration

    # rounded before the unit is chosen: never "120 s" or "120 min"
    assert [_duration(s) for s in (119.4, 119.6, 7100, 7199)] == ["119 s", "2 min", "118 min", "2.0 h"]


@pytest.mark.parametrize("stored, again, said", [
    ({"cpu_model": "AMD EPYC (family 25 model 1, AVX2)"}, {"cpu_model": "AMD EPYC (family 25 model 17, "
     "AVX-512)"}, ["cpu_model AMD EPYC (family 25 model 1, AVX2) -> AMD EPYC (family 25 model 17, AVX-512)"]),
    # a row from before the family and vector extension were recorded: perhaps the same kind
    ({"cpu_model": "AMD EPYC"}, {"cpu_model": "AMD EPYC (family 25 model 1, AVX2)"},
     ["cpu_model AMD EPYC -> AMD EPYC (family 25 model 1, AVX2) (the row gives no family or vector "
      "extension, so the CPU may be the same kind)"]),
    ({"cpu_model": "Intel Xeon"}, {"cpu_model": "AMD EPYC (family 25 model 1, AVX2)"},
     ["cpu_model Intel Xeon -> AMD EPYC (family 25 model 1, AVX2)"]),
    ({"code_version": "a", "cpu_threads": 1, "vmapped_settings": 4}, {"code_version": "b", "cpu_threads": 1},
     ["code_version a -> b", "it was trained as one of 4 vmapped settings"]),
    ({}, {"xla_flags": "--xla_cpu_enable_fast_math=false"},
     ["xla_flags not recorded -> --xla_cpu_enable_fast_math=false"]),
    ({"device": "cpu", "cpu_model": "AMD EPYC"}, {"device": "cpu", "cpu_model": "AMD EPYC"}, []),
])  # fmt: skip
def test_rerun_names_what_changed_since_the_row(stored, again, said):
    from search.cli import _what_changed

    assert _what_changed(stored, again) == said


def test_cache_reports_trims_and_clears_the_compiled_programs(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEARCH_CACHE", str(tmp_path))
    stored = tmp_path / "jax" / "executables"
    stored.mkdir(parents=True)
    for i in range(3):
        (stored / f"{i}.xla").write_bytes(b"x" * 1000)
        os.utime(stored / f"{i}.xla", (1e9 + i, 1e9 + i))  # 0 is the least recently used
    result = cellsearch("cache")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{tmp_path / 'jax'}: 3 files, 3.0 KB (executable store: 3 files, "
                             "3.0 KB); workers trim it to 10.0 GB "
                             "(CELLSEARCH_CACHE_MAX_GB)\n")  # fmt: skip
    result = cellsearch("cache", "--trim", "1.5KB")
    assert result.stdout.startswith("removed 2 files (2.0 KB), the least recently used\n")
    assert [p.name for p in stored.iterdir()] == ["2.xla"]
    result = cellsearch("cache", "--clear")
    assert result.stdout.startswith("removed 1 files (1.0 KB)\n")
    assert "jax: 0 files" in result.stdout
    monkeypatch.setenv("CELLSEARCH_CACHE_MAX_GB", "none")
    assert "workers never trim it" in cellsearch("cache").stdout
    # the parser does not import jax, so its help states the trainer's period itself
    from tasks.trainer import TRIM_EVERY

    assert f"every {TRIM_EVERY} programs" in " ".join(cellsearch("cache", "--help").stdout.split())


@pytest.mark.parametrize("args, env, message", [
    (["cache", "--trim", "2XB"], "10", "size '2XB': expected a number of bytes or a size"),
    (["cache"], "-1", "CELLSEARCH_CACHE_MAX_GB='-1': expected a positive number of GB or 'none'"),
    (["train", "lstm", "arith"], "lots", "CELLSEARCH_CACHE_MAX_GB='lots': expected a positive"),
])  # fmt: skip
def test_a_bad_cache_size_is_a_one_line_error(args, env, message, tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEARCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CELLSEARCH_CACHE_MAX_GB", env)
    result = cellsearch(*args)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"cellsearch: error: {message}")


def test_a_cache_directory_that_cannot_be_made_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("CELLSEARCH_CACHE", str(tmp_path / "a_file"))
    result = cellsearch("cache")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert f"cannot make the cache directory {tmp_path}/a_file/jax (Not a directory)" in result.stderr
    assert "set CELLSEARCH_CACHE to a writable directory" in result.stderr


def test_show_needs_no_jax():
    # `cellsearch show` is typed at a prompt: JAX's import alone took 0.5 s of its 0.9
    code = "import sys, search.cli; search.cli.main(['show', 'gru']); print('jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "# matmuls per step: 3 (on x, h, r*h)" in result.stdout
    assert result.stdout.endswith("False\n")


def test_the_store_reader_analysis_and_command_line_import_no_jax_plots_or_ray():
    # a fresh interpreter: what `cellsearch leaderboard` imports before it reads a run
    code = ("import sys, results, analysis, cells, tasks, search.cli; "
            "print(sorted(m for m in ('jax', 'flax', 'optax', 'matplotlib', 'ray') if m in sys.modules)); "
            "print(all(set(p.__all__) <= set(dir(p)) for p in (analysis, cells, tasks)), 'jax' in sys.modules); "
            "from analysis import write_report, PLOTS; from cells import compile_cell; "
            "from tasks import train_trial; print('jax' in sys.modules, 'matplotlib' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # dir() lists the lazy names (a notebook completes them) without importing them; each loads
    # when it is named
    assert result.stdout.split("\n")[:3] == ["[]", "True False", "True True"]
    import analysis, cells, tasks  # noqa: E401

    for package in (analysis, cells, tasks):
        with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
            package.nothing  # noqa: B018
