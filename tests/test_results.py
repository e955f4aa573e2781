"""The run store: append-only JSON lines, torn writes, corrupt lines, and the pandas reader."""

import gc
import json
import math

import pandas as pd
import pytest

import results.frame
from results import RunStore, StoreError, find_runs, iter_jsonl, load, read_jsonl, to_parquet


def make_run(tmp_path, name="run", rows=3):
    store = RunStore(tmp_path / name)
    store.create('[config]\nname = "x"\n')
    store.open_for_append()
    for i in range(rows):
        store.append_trial({"trial": i, "cell_hash": f"v1-{i % 2}", "cell_name": ["lstm", None][i % 2],
                            "task": "arith", "status": "ok" if i != 2 else "diverged",
                            "score": 0.5 + i / 10 if i != 2 else None, "lr": 1, "layers": 2,
                            "seed": i, "task_options": {"max_digits": 3}})  # fmt: skip
    return store


def test_rows_round_trip_and_directory_is_private(tmp_path):
    store = make_run(tmp_path)
    assert [row["trial"] for row in store.trials()] == [0, 1, 2]
    assert (store.path.stat().st_mode & 0o777) == 0o700
    assert store.config_text().startswith("[config]")


def test_torn_last_line_is_skipped_with_a_warning_and_cut_before_the_next_append(tmp_path):
    store = make_run(tmp_path)
    with open(store.trials_path, "a") as f:
        f.write('{"trial": 3, "cell_ha')  # the driver died mid-write
    with pytest.warns(UserWarning, match="line 4 is incomplete"):
        assert len(store.trials()) == 3
    with pytest.warns(UserWarning, match="removed an incomplete last line"):
        store.open_for_append()
    store.append_trial({"trial": 3})
    assert [row["trial"] for row in store.trials()] == [0, 1, 2, 3]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    store = make_run(tmp_path)
    with open(store.trials_path, "a") as f:
        f.write('{"trial": 3}')
    assert len(store.trials()) == 4
    store.open_for_append()
    store.append_trial({"trial": 4})
    assert [row["trial"] for row in store.trials()] == [0, 1, 2, 3, 4]


def test_corrupt_middle_line_is_an_error_with_its_line_number(tmp_path):
    store = make_run(tmp_path)
    lines = store.trials_path.read_text().splitlines()
    lines[1] = lines[1][:10]
    store.trials_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match=r"trials.jsonl: line 2 is corrupt"):
        store.trials()
    with pytest.raises(StoreError, match="line 2 is corrupt"):
        load(store.path)


def test_writer_never_rewrites_existing_lines(tmp_path):
    store = make_run(tmp_path)
    before = store.trials_path.read_bytes()
    store.open_for_append()
    store.append_trial({"trial": 9})
    assert store.trials_path.read_bytes().startswith(before)


def test_rows_with_nan_are_refused_rather_than_stored(tmp_path):
    store = make_run(tmp_path)
    with pytest.raises(ValueError):
        store.append_trial({"trial": 5, "score": float("nan")})
    assert len(store.trials()) == 3


def test_load_types_columns_and_reads_several_runs(tmp_path):
    make_run(tmp_path, "a")
    make_run(tmp_path, "b", rows=2)
    frame = load([tmp_path / "a", tmp_path / "b"])
    assert len(frame) == 5 and list(frame["run"]) == ["a"] * 3 + ["b"] * 2
    assert isinstance(frame["task"].dtype, pd.CategoricalDtype)
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)
    assert frame["score"].dtype == "float64" and frame["score"].isna().sum() == 1
    assert frame["trial"].dtype == "int64" and frame["lr"].dtype == "float64"
    assert frame.loc[0, "task_options"] == {"max_digits": 3}


def test_runs_of_one_name_in_two_places_stay_two_runs(tmp_path):
    """Two reproductions each hold `search/`: read together, each keeps its own `run`."""
    make_run(tmp_path / "reproduce-quick", "search")
    make_run(tmp_path / "seed-1", "search", rows=2)
    make_run(tmp_path / "seed-1", "baselines", rows=1)
    runs = find_runs([tmp_path / "reproduce-quick", tmp_path / "seed-1"])
    frame = load(runs)
    # (`baselines` is the only run of that name here)
    assert frame["run"].value_counts().to_dict() == {"reproduce-quick/search": 3, "seed-1/search": 2,
                                                     "baselines": 1}  # fmt: skip
    assert set(load(tmp_path / "seed-1" / "search")["run"]) == {"search"}  # alone: its own name
    assert len(load([runs[0], tmp_path / "reproduce-quick" / "." / "search"])) == 3  # one run, once
    assert find_runs([tmp_path / "seed-1", tmp_path / "seed-1" / "search"]) == runs[1:]


def test_load_builds_the_same_frame_chunk_by_chunk_as_from_all_rows_at_once(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "run")
    store.create('[config]\nname = "x"\n')
    store.open_for_append()
    # in chunks of 2 rows: no error text in the first, no score in the third, a closing accuracy
    # in the last only; each alone makes a column of another type than all rows together do
    errors = [None, None, "boom", None, None, None, None, None]
    scores = [0.5, 0.6, None, 0.7, None, None, 0.8, 0.9]
    for i, (error, score) in enumerate(zip(errors, scores)):
        closing = {"valid_closing_accuracy": 0.5} if i == 6 else {}
        store.append_trial({"trial": i, "task": "xml", "status": "ok", "score": score, "lr": 2,
                            "layers": 1, "seed": i, "error": error, **closing})  # fmt: skip
    whole = load(store.path)
    monkeypatch.setattr(results.frame, "CHUNK_ROWS", 2)
    chunked = load(store.path)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)
    assert str(chunked["error"].dtype) == "str" and chunked["valid_closing_accuracy"].dtype == "float64"
    assert list(chunked["trial"]) == list(range(8)) and chunked["score"].isna().sum() == 3


def test_load_can_leave_loss_curves_out_and_shares_repeated_dicts(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create('[config]\nname = "x"\n')
    store.open_for_append()
    for i in range(3):
        store.append_trial({"trial": i, "loss_curve": [[10, 2.5 - i]], "versions": {"jax": "0.10"},
                            "task_options": {"flag": [True, 1, True][i]}})  # fmt: skip
    frame = load(store.path)
    assert frame.loc[2, "loss_curve"] == [[10, 0.5]]
    assert frame.loc[0, "versions"] is frame.loc[2, "versions"]  # one dict, not three
    # 1 == True and hash(1) == hash(True): still not the same options
    assert [type(v["flag"]) for v in frame["task_options"]] == [bool, int, bool]
    assert frame.loc[0, "task_options"] is frame.loc[2, "task_options"]
    assert "loss_curve" not in load(store.path, loss_curves=False)
    lists = list(iter_jsonl(store.trials_path, shared=("loss_curve",), drop=("versions",)))
    assert "versions" not in lists[0] and lists[0]["loss_curve"] == [[10, 2.5]]  # only dicts shared


def test_parquet_export_round_trips(tmp_path):
    store = make_run(tmp_path)
    frame = load(store.path)
    to_parquet(frame, tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert list(back["trial"]) == [0, 1, 2]
    assert json.loads(back.loc[0, "task_options"]) == {"max_digits": 3}


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no such run directory"):
        load(tmp_path / "nope")
    make_run(tmp_path / "runs" / "a")  # a directory of runs is not itself a run
    with pytest.raises(StoreError, match="runs: not a run directory .no run.toml.; `find_runs`"):
        load(tmp_path / "runs")
    assert list(read_jsonl(tmp_path / "nothing.jsonl")) == []


def test_read_jsonl_reads_what_pythons_json_reads_and_leaves_the_collector_as_it_was(tmp_path):
    path = tmp_path / "rows.jsonl"
    # orjson refuses NaN and Infinity, which json.dumps writes by default: read all the same
    path.write_text('{"a": 1, "curve": [[10, 2.5]]}\n{"a": NaN, "b": Infinity}\n{"c": "\\u00e9"}\n')
    rows = read_jsonl(path)
    assert rows[0] == {"a": 1, "curve": [[10, 2.5]]} and rows[2] == {"c": "\u00e9"}
    assert math.isnan(rows[1]["a"]) and rows[1]["b"] == math.inf
    assert gc.isenabled()
    gc.disable()
    try:
        read_jsonl(path)
        assert not gc.isenabled()
    finally:
        gc.enable()
    path.write_text('{"a": 1}\n[1, 2]\n{"a": 3}\n')
    with pytest.raises(StoreError, match="line 2 is corrupt"):
        read_jsonl(path)
    assert gc.isenabled()  # also after an error
