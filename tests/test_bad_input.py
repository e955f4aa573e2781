"""The bad-input corpus: every malformed cell, config, argument, data file or store gets a one-line
error naming the problem, exit status 2, no traceback, and leaves existing run directories as
they were. The CLI runs in-process (`search.cli.main`, the function the `cellsearch` script calls);
the data-file cases run as subprocesses because the data directory is read once per process."""

import os
import pathlib
import subprocess
import sys

import pytest

from results import RunStore
from search.cli import main
from search.loop import run_toml
from searchkit import QUICK, tiny, tiny_args, tree_digest

CELLS = {
    "syntax.cell": ("h_new = tanh(W(x) +\n", "syntax.cell: line 1"),
    "unknown_op.cell": ("h_new = gelu(W(x) + W(h))\n", "gelu"),
    "reassigned.cell": ("a = W(x) + W(h)\na = tanh(a)\nh_new = a * a\n", "'a'"),
    "no_h_new.cell": ("a = tanh(W(x) + W(h))\n", "h_new"),
    "huge_bias.cell": ("h_new = tanh(W(x, bias=1e9) + W(h))\n", "bias"),
    "inf_bias.cell": ("h_new = tanh(W(x, bias=1e999) + W(h))\n", "bias"),
    "python.cell": ("h_new = __import__('os').system('true')\n", "line 1"),
    "unknown_source.cell": ("h_new = tanh(W(y) + W(h))\n", "'y'"),
    "c_without_c_new.cell": ("h_new = tanh(W(x) + W(h) + c)\n", "c_new"),
    "ignores_x.cell": ("h_new = tanh(W(h))\n", "ignores its input 'x'"),
    "empty.cell": ("", "empty.cell"),
}

CONFIGS = {
    "unknown_key.toml": ("max_trails = 3\n", "unknown key 'max_trails'"),
    "wrong_type.toml": ('seed = "zero"\n', "seed: must be int"),
    "zero_settings.toml": ("settings_per_task = 0\n", "settings_per_task: must be >= 1"),
    "unknown_task.toml": ('tasks = ["chess"]\n', "unknown task 'chess'"),
    "empty_tasks.toml": ("tasks = []\n", "tasks: needs at least one task"),
    "unknown_cell.toml": ('strategy = "baselines"\n[baselines]\ncells = ["lstm", "transformer"]\n',
                          "unknown baseline 'transformer'"),
    "unknown_strategy.toml": ('strategy = "annealing"\n', "unknown strategy 'annealing'"),
    "bad_toml.toml": ("seed = = 1\n", "invalid TOML"),
    "budget_task.toml": ("[budget.chess]\nsteps = 3\n", "budget.chess: unknown task"),
    "probability.toml": ("[jozefowicz]\np_reevaluate = 2.0\n", "jozefowicz.p_reevaluate: must be in [0, 1]"),
    "retries.toml": ("retries = -1\n", "retries: must be >= 0"),
    "dropout_task.toml": ('strategy = "baselines"\n[baselines]\ndropout = 0.5\ndropout_tasks = ["piano"]\n',
                          "baselines.dropout_tasks: 'piano' is not one of the tasks"),
    "negative_steps.toml": ("[budget.arith]\nsteps = -5\n", "steps must be >= 1"),
    "bad_preset.toml": ('preset = "huge"\n', "unknown preset 'huge'"),
}  # fmt: skip



@pytest.fixture
def workspace(tmp_path):
    """A directory with the corpus files and an existing run store that must stay untouched."""
    for name, (text, _) in {**CELLS, **CONFIGS}.items():
        (tmp_path / name).write_text(text)
    store = RunStore(tmp_path / "run")
    store.create(run_toml(tiny(max_trials=4)))
    store.open_for_append()
    store.append_trial({"trial": 0, "cell_hash": "v1-0", "task": "arith", "status": "ok", "score": 0.5})
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "run.toml").write_text('[config]\nname = "c"\n[run]\nformat = 1\n')
    (tmp_path / "corrupt" / "trials.jsonl").write_text('{"trial": 0}\n{"trial": 1, oops\n{"trial": 2}\n')
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "run.toml").write_text(run_toml(tiny(max_trials=4)).replace("format = 1", "format = 99"))
    before = tree_digest(tmp_path)
    yield tmp_path
    assert tree_digest(tmp_path) == before  # nothing existing was written to


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def check(code: int, err: str, message: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("cellsearch: error: ") and message in err, err


@pytest.mark.parametrize("name", list(CELLS))
def test_bad_cell_text(workspace, capsys, name):
    check(*run_cli(capsys, "show", workspace / name), CELLS[name][1])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bad_config(workspace, capsys, name):
    check(*run_cli(capsys, "search", workspace / name, "--out", workspace / "new"), CONFIGS[name][1])
    assert not (workspace / "new").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["leaderboard", "{w}/missing"], "missing: no such run directory"),
        (["report", "{w}/missing"], "missing: no such run directory"),
        (["search", QUICK, "--set", "max_trials"], "--set expects key=value"),
        (["search", QUICK, "--set", "seeds=3"], "unknown key 'seeds'"),
        (["search", QUICK, "--set", "jozefowicz.list_size=big"], "jozefowicz.list_size: must be int"),
        (["search", QUICK, "--workers", "0"], "--workers must be a positive integer"),
        (["search", QUICK, "--gpus-per-worker", "-1"], "--gpus-per-worker must be a share of one GPU"),
        (["search", QUICK, "--gpus-per-worker", "1.5"], "(0 to 1) or a whole number, got 1.5"),
        (["train", "lstm", "chess"], "unknown task 'chess'"),
        (["train", "lstm", "arith", "--set", "lr=-1"], "lr must be > 0"),
        (["train", "nocell", "arith"], "'nocell' is neither a baseline cell"),
        (["compare", "{w}/run", "lstm", "gru"], "{w}/run: no trials of lstm"),
        (["leaderboard", "{w}/run", "--task", "chess"], "--task chess: no such task in these runs"),
        (["leaderboard", "{w}/run", "--strategy", "annealing"], "--strategy annealing: no such strategy"),
        (["leaderboard", "{w}/corrupt"], "trials.jsonl: line 2"),
        (["search", QUICK, "--out", "{w}/future"], "store format 99 is not 1"),
        (["search", QUICK, "--out", "{w}"], "is not a run directory and is not empty (it holds "),
        (["mutate", "lstm", "--n", "0"], "--n must be a positive integer"),
        (["export", "{w}/run", "--out", "{w}/missing/t.csv"], "--out {w}/missing/t.csv: cannot write"),
        (["leaderboard", "{w}/run", "--out", "{w}"], "cannot write (Is a directory)"),
        (["report", "{w}/run", "--out", "{w}/run/run.toml"], "--out {w}/run/run.toml: not a directory"),
        (["report", "{w}/run", "--out", "{w}/run/run.toml/r"], "--out {w}/run/run.toml/r: cannot make the directory"),
        (["report", "{w}/missing", "--out", "{w}/new"], "missing: no such run directory"),
        (["report", "{w}/missing", "--out", "{w}/new/deeper"], "missing: no such run directory"),
    ],
)  # fmt: skip
def test_bad_arguments_and_stores(workspace, capsys, args, message):
    args = [str(a).replace("{w}", str(workspace)) for a in args]
    check(*run_cli(capsys, *args), message.replace("{w}", str(workspace)))
    assert not (workspace / "new").exists()  # a failed report leaves no empty --out behind


def test_the_out_check_runs_first_and_leaves_no_file_behind(workspace, capsys, tmp_path_factory):
    from search.cli import _check_writable

    out = tmp_path_factory.mktemp("out") / "board.txt"
    code, err = run_cli(capsys, "leaderboard", workspace / "corrupt", "--out", out)
    check(code, err, "trials.jsonl: line 2")
    _check_writable(str(out))
    assert not out.exists()  # probed, then removed: a failed command leaves no empty file
    out.write_text("kept")
    _check_writable(str(out))
    assert out.read_text() == "kept"
    blocked = workspace / "corrupt" / "run.toml" / "board.txt"  # run.toml is a file
    code, err = run_cli(capsys, "leaderboard", workspace / "run", "--out", blocked)
    check(code, err, "cannot write (Not a directory)")


def test_a_run_of_rows_without_cell_text_or_settings_is_still_analysed(workspace, capsys, tmp_path_factory):
    # rows written by hand (no cell text, width or learning rate): tables, no traceback, no warning
    out = tmp_path_factory.mktemp("report")
    for args in (["leaderboard", workspace / "run"], ["report", workspace / "run", "--out", out]):
        assert run_cli(capsys, *args) == (0, ""), args
    assert (out / "report.md").is_file()


def test_resume_with_a_changed_config_is_refused(workspace, capsys):
    overrides = tiny_args(max_trials=4, seed=7)
    check(*run_cli(capsys, "search", QUICK, "--out", workspace / "run", *overrides), "'seed' was 0, now 7")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "ptb.train.txt").unlink(), "ptb.train.txt: missing"),
        (lambda d: (d / "ptb.valid.txt").write_bytes((d / "ptb.valid.txt").read_bytes()[:1000]),
         "ptb.valid.txt: checksum mismatch"),
        (lambda d: (d / "ptb.test.txt").write_text("the cat\n"), "ptb.test.txt: checksum mismatch"),
        (lambda d: (d / "SHA256SUMS").unlink(), "SHA256SUMS: missing"),
    ],
)  # fmt: skip
def test_bad_data_files(tmp_path, damage, message):
    from tasks.datasets import PACKAGE_DATA

    data = tmp_path / "data"
    data.mkdir()
    for file in pathlib.Path(PACKAGE_DATA).iterdir():
        if file.name.startswith(("ptb", "SHA256SUMS")):
            (data / file.name).write_bytes(file.read_bytes())
    damage(data)
    result = subprocess.run(
        [sys.executable, "-m", "search.cli", "train", "lstm", "ptb", "--quiet"],
        capture_output=True, text=True, timeout=300, env=os.environ | {"CELLSEARCH_DATA": str(data)},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_a_task_of_your_own_whose_batches_are_wrong_is_one_line(workspace, capsys, tmp_path_factory,
                                                                 monkeypatch):  # fmt: skip
    """`train` and `search` draw its batches before anything trains (`tasks.registry.check_batches`)."""
    from test_config import BAD_BATCHES

    own = tmp_path_factory.mktemp("own")
    (own / "bad_batches.py").write_text(BAD_BATCHES)
    monkeypatch.syspath_prepend(own)
    message = "bad_batches:TooLong: train_batches gave inputs of shape (4, 6) and dtype int32, not "
    check(*run_cli(capsys, "train", "lstm", "bad_batches:TooLong"), message)
    check(*run_cli(capsys, "search", QUICK, "--set", 'tasks=["bad_batches:TooLong"]', "--out",
                   workspace / "new"), f"tasks: {message}")  # fmt: skip
    assert not (workspace / "new").exists()


def test_a_task_in_a_package_of_two_directories_cannot_be_shipped(workspace, capsys, tmp_path_factory,
                                                                  monkeypatch):  # fmt: skip
    """`--ship` sends a task's top-level package whole; a namespace package spread over two
    directories has no one directory to send, which is said before a run directory is made."""
    from searchkit import readme_example

    halves = [tmp_path_factory.mktemp(half) for half in ("first", "second")]
    for half in halves:
        (half / "spread").mkdir()
        monkeypatch.syspath_prepend(half)
    (halves[0] / "spread" / "reverse.py").write_text(readme_example("# reverse.py"))
    monkeypatch.delitem(sys.modules, "spread", raising=False)
    monkeypatch.delitem(sys.modules, "spread.reverse", raising=False)
    check(*run_cli(capsys, "search", QUICK, "--set", 'tasks=["spread.reverse:Reverse"]', "--ship",
                   "--out", workspace / "new"),
          "spread.reverse:Reverse: package spread spans 2 directories (")  # fmt: skip
    assert not (workspace / "new").exists()
