"""analysis/: leaderboards, paper tables and findings on hand-built stores with known values, and
the whole report / compare / reproduce path on a real tiny reproduction (a subprocess, real Ray)."""

import itertools
import json
import math
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import compare, findings, leaderboard, paper_table1, paper_table2, to_markdown
from analysis.findings import INTERVAL_RULE, verdict
from analysis import compare_strategies, search_progress
from analysis.leaderboard import search_tasks_of
from analysis.plots import plot_progress
from cells import BASELINES, baseline, parse
from results import RunStore, find_runs, load
from search.config import to_dict, to_toml
from searchkit import cellsearch, tiny

MUTANT = "h_new = sigmoid(W(x) + W(h))\n"


def trial(trial_id, cell, task, score, status="ok", dropout=0.0, lr=None, valid_nll=None,
          test_nll=None, strategy="baselines", hidden=16):  # fmt: skip
    """One trial row as the search writes it (the fields analysis reads)."""
    graph = baseline(cell) if cell in BASELINES else parse(cell)
    return {
        "trial": trial_id, "strategy": strategy, "cell_hash": graph.hash,
        "cell_name": cell if cell in BASELINES else None,
        "origin": "baseline" if cell in BASELINES else "mutation", "cell_text": graph.text(),
        "task": task, "seed": trial_id, "lr": lr if lr is not None else 0.1 * (1 + trial_id),
        "clip": 5.0, "init_scale": 1.0, "layers": 1, "dropout": dropout, "budget_hidden": hidden,
        "status": status, "score": score if status == "ok" else None,
        "valid_nll": valid_nll, "test_nll": test_nll, "train_seconds": 1.0, "compile_seconds": 0.5,
        "eval_seconds": 0.1, "versions": {"cellsearch": "test"},
    }  # fmt: skip


def write_store(path, rows, strategy="baselines"):
    store = RunStore(path)
    store.create(f'[config]\nname = "{pathlib.Path(path).name}"\nstrategy = "{strategy}"\n'
                 'preset = "quick"\nseed = 0\n\n[run]\nformat = 1\ncode_version = "test"\n')  # fmt: skip
    store.open_for_append()
    for row in rows:
        store.append_trial(row)
    return path


def scored(spec: dict) -> list[dict]:
    """Rows from {(cell, task[, dropout]): [scores]}, trial ids in order."""
    rows = []
    for key, scores in spec.items():
        cell, task, dropout = (*key, 0.0) if len(key) == 2 else key
        for score in scores:
            rows.append(trial(len(rows), cell, task, score, dropout=dropout))
    return rows


# ----------------------------------------------------------------- leaderboard with known values
KNOWN = [
    trial(0, "gru", "arith", 0.5), trial(1, "gru", "arith", 0.8), trial(2, "gru", "xml", 0.6),
    trial(3, "gru", "ptb", 0.01),
    trial(4, "lstm", "arith", 0.6), trial(5, "lstm", "arith", None, status="diverged"),
    trial(6, "lstm", "xml", 0.45), trial(7, "lstm", "ptb", 0.02),
    trial(8, MUTANT, "arith", 0.8, strategy="jozefowicz"),
    trial(9, MUTANT, "xml", 0.6, strategy="jozefowicz"),
    trial(10, MUTANT, "ptb", 0.005, strategy="jozefowicz"),
]  # fmt: skip


@pytest.fixture
def known(tmp_path):
    return load(write_store(tmp_path / "known", KNOWN))


def test_leaderboard_every_number_of_a_known_store(known):
    board = leaderboard(known)
    mutant = parse(MUTANT)
    assert list(board["name"]) == ["gru", "lstm", mutant.hash]  # by Jozefowicz score
    expected = {  # name: arith, xml, ptb, jozefowicz, trials, settings, diverged, params
        "gru": (0.8, 0.6, 0.01, 1.0, 4, 4, 0.0, baseline("gru").num_params(16)),
        "lstm": (0.6, 0.45, 0.02, 0.75, 4, 4, 0.25, baseline("lstm").num_params(16)),
        mutant.hash: (0.8, 0.6, 0.005, 0.5, 3, 3, 0.0, mutant.num_params(16)),
    }
    columns = ["arith", "xml", "ptb", "jozefowicz", "trials", "settings", "diverged", "params"]
    for name, values in expected.items():
        row = board[board["name"] == name].iloc[0]
        assert [row[c] for c in columns] == pytest.approx(list(values)), name
    assert board.loc[mutant.hash, "equations"] == "h_new = sigmoid(W(x) + W(h))"
    assert board.loc[mutant.hash, "origin"] == "mutation"


def test_leaderboard_filters(known):
    arith = leaderboard(known, tasks=["arith"])
    assert "xml" not in arith and arith.loc[baseline("lstm").hash, "jozefowicz"] == pytest.approx(0.75)
    ok = leaderboard(known, statuses=["ok"])
    assert ok.loc[baseline("lstm").hash, ["trials", "diverged"]].tolist() == [3, 0.0]
    searched = leaderboard(known, strategies=["jozefowicz"])
    assert list(searched.index) == [parse(MUTANT).hash]
    assert searched["jozefowicz"].isna().all()  # no GRU among these trials


def test_leaderboard_merges_a_cell_across_runs(tmp_path, known):
    write_store(tmp_path / "a", KNOWN[:5])
    write_store(tmp_path / "b", KNOWN[5:])
    both = leaderboard(load([tmp_path / "a", tmp_path / "b"]))
    pd.testing.assert_frame_equal(both, leaderboard(known))


def test_bootstrap_finds_a_cell_by_name_hash_or_unique_prefix(known):
    boot = analysis.Bootstrap(known, replicates=10)
    gru, mutant = baseline("gru").hash, parse(MUTANT).hash
    assert boot.cell("gru") == gru and boot.cell(mutant) == mutant and boot.cell(mutant[:12]) == mutant
    with pytest.raises(ValueError, match="matches several cells"):
        boot.cell("v1-")  # every hash starts so
    with pytest.raises(analysis.Missing, match="no trials of mut1"):
        boot.cell("mut1")


def test_op_divergence_counts_the_trials_of_mutants_containing_each_op(tmp_path):
    other = "h_new = tanh(W(x) * h)\n"
    rows = [trial(0, MUTANT, "arith", 0.5), trial(1, MUTANT, "arith", 0.6),
            trial(2, MUTANT, "xml", None, status="diverged"), trial(3, other, "arith", 0.4),
            trial(4, other, "xml", None, status="diverged"),
            trial(5, "lstm", "arith", None, status="diverged")]  # fmt: skip
    table = analysis.op_divergence(load(write_store(tmp_path / "run", rows)))
    assert table.to_dict("index") == {  # baselines (the lstm) are left out
        "tanh": {"trials": 2, "diverged": 0.5}, "sigmoid": {"trials": 3, "diverged": pytest.approx(1 / 3)},
        "add": {"trials": 3, "diverged": pytest.approx(1 / 3)}, "mul": {"trials": 2, "diverged": 0.5},
        "W": {"trials": 5, "diverged": 0.4},
    }  # fmt: skip


def test_to_markdown_formats_numbers_and_missing_values():
    table = pd.DataFrame({"score": [0.5, np.nan], "n": [3, 1], "eq": ["a | b", "c"]},
                         index=pd.Index(["x", "y"], name="cell"))  # fmt: skip
    assert to_markdown(table, digits=2) == (
        "| cell | score | n | eq |\n|---|---|---|---|\n| x | 0.50 | 3 | a \\| b |\n| y | - | 1 | c |\n"
    )


def test_paper_table1_of_a_known_store(known):
    table = paper_table1(known)
    assert list(table.index) == ["lstm", "gru", parse(MUTANT).hash]  # paper order, then found
    assert table.loc["lstm", ["arith", "xml", "ptb"]].tolist() == pytest.approx([0.6, 0.45, 0.02])
    assert table.loc["lstm", ["arith n", "xml n", "ptb n"]].tolist() == [2, 1, 1]
    assert table.loc["gru", "arith n"] == 2
    text = analysis.with_counts(table)
    assert text.loc["lstm", "arith"] == "0.6000 (n=2)"
    table.loc["lstm", "ptb"], table.loc["gru", "ptb"] = 0.0013421, 0.0012504  # 1/perplexity
    assert analysis.with_counts(table).loc[["lstm", "gru"], "ptb"].tolist() == ["0.0013 (n=1)"] * 2
    text = analysis.with_counts(table, 4, significant=True)
    assert text.loc[["lstm", "gru"], "ptb"].tolist() == ["0.001342 (n=1)", "0.001250 (n=1)"]
    assert text.loc["lstm", "arith"] == "0.6000 (n=2)"


def test_paper_table2_picks_the_test_nll_of_the_best_validation_setting(tmp_path):
    rows = [
        trial(0, "lstm", "nottingham", 0.1, valid_nll=3.0, test_nll=3.2),
        trial(1, "lstm", "nottingham", 0.1, valid_nll=2.5, test_nll=2.9),  # best valid
        trial(2, "lstm", "nottingham", 0.1, valid_nll=2.6, test_nll=2.1),  # better test, ignored
        trial(3, "lstm", "nottingham", 0.1, dropout=0.5, valid_nll=2.4, test_nll=2.45),
        trial(4, "gru", "nottingham", None, status="diverged"),
        trial(5, "gru", "nottingham", 0.1, dropout=0.5, valid_nll=2.2, test_nll=2.3),
        trial(6, "gru", "ptb", 0.01, valid_nll=4.9, test_nll=4.8),
    ]
    table = paper_table2(load(write_store(tmp_path / "music", rows)))
    assert list(table.index) == ["lstm", "gru"]
    assert table.loc["lstm", ["nottingham", "nottingham-d"]].tolist() == [2.9, 2.45]
    assert table.loc["lstm", ["nottingham n", "nottingham-d n"]].tolist() == [3, 1]
    assert math.isinf(table.loc["gru", "nottingham"])  # every trial diverged
    assert table.loc["gru", "nottingham-d"] == 2.3 and table.loc["gru", "ptb"] == 4.8
    assert math.isnan(table.loc["lstm", "ptb"]) and "ptb-d" not in table
    text = analysis.with_counts(table, 2)
    assert text.loc["gru", "nottingham"] == "diverged (n=1)" and text.loc["lstm", "ptb"] == "-"


# ------------------------------------------------------------- findings: true, false, undecidable
def tight(value, n=6):
    """n scores within 1% of `value`: a cell whose best is known precisely."""
    return [value * (1 + 0.01 * k / n) for k in range(-n // 2, n - n // 2)]


def loose(value):
    """Scores spread widely around `value`: a best-of-4 that could be much lower or higher."""
    return [max(0.01, value + d) for d in (-0.3, -0.1, 0.1, 0.3)]


SEARCH = ("arith", "xml")


def over(tasks, **cells):
    return {(cell, task): values for cell, values in cells.items() for task in tasks}


CASES = {
    "forget_gate_most": (
        over(SEARCH, lstm=tight(0.9), lstm_f=tight(0.3), lstm_i=tight(0.7), lstm_o=tight(0.85), gru=tight(0.9)),
        over(SEARCH, lstm=tight(0.9), lstm_f=tight(0.85), lstm_i=tight(0.3), lstm_o=tight(0.8), gru=tight(0.9)),
        over(SEARCH, lstm=loose(0.6), lstm_f=loose(0.6), lstm_i=loose(0.6), lstm_o=loose(0.6), gru=loose(0.6)),
    ),
    "input_over_output": (
        over(SEARCH, lstm=tight(0.9), lstm_i=tight(0.7), lstm_o=tight(0.85), gru=tight(0.9)),
        over(SEARCH, lstm=tight(0.9), lstm_i=tight(0.85), lstm_o=tight(0.3), gru=tight(0.9)),
        over(SEARCH, lstm=loose(0.6), lstm_i=loose(0.6), lstm_o=loose(0.6), gru=loose(0.6)),
    ),
    "forget_bias_closes_gap": (
        over(SEARCH, lstm=tight(0.7), lstm_b=tight(0.9), gru=tight(0.9)),
        over(SEARCH, lstm=tight(0.7), lstm_b=tight(0.5), gru=tight(0.9)),
        over(SEARCH, lstm=loose(0.6), lstm_b=loose(0.6), gru=loose(0.6)),
    ),
    "gru_beats_lstm": (
        over(SEARCH, lstm=tight(0.7), gru=tight(0.9)),
        over(SEARCH, lstm=tight(0.9), gru=tight(0.6)),
        over(SEARCH, lstm=loose(0.6), gru=loose(0.6)),
    ),
    "lstm_wins_language": (
        over(["ptb"], lstm=tight(0.02), gru=tight(0.015)),
        over(["ptb"], lstm=tight(0.01), gru=tight(0.015)),
        over(["ptb"], lstm=loose(0.5), gru=loose(0.5)),
    ),
    "no_cell_beats_both": (
        over(SEARCH, lstm=tight(0.8), gru=tight(0.9), **{MUTANT: tight(0.5)}),
        over(SEARCH, lstm=tight(0.7), gru=tight(0.8), **{MUTANT: tight(0.99)}),
        over(SEARCH, lstm=tight(0.6), gru=tight(0.6), **{MUTANT: loose(0.6)}),
    ),
    "mut1_strongest": (
        over(SEARCH, mut1=tight(0.95), lstm=tight(0.8), gru=tight(0.85), tanh=tight(0.5)),
        over(SEARCH, mut1=tight(0.6), lstm=tight(0.8), gru=tight(0.85), tanh=tight(0.5)),
        over(SEARCH, mut1=loose(0.6), lstm=loose(0.6), gru=loose(0.6), tanh=loose(0.6)),
    ),
    "dropout_changes_ranking": (
        {("lstm", "nottingham", 0.0): tight(0.9), ("gru", "nottingham", 0.0): tight(0.7),
         ("tanh", "nottingham", 0.0): tight(0.5), ("lstm", "nottingham", 0.5): tight(0.5),
         ("gru", "nottingham", 0.5): tight(0.7), ("tanh", "nottingham", 0.5): tight(0.9)},
        {("lstm", "nottingham", 0.0): tight(0.9), ("gru", "nottingham", 0.0): tight(0.7),
         ("tanh", "nottingham", 0.0): tight(0.5), ("lstm", "nottingham", 0.5): tight(0.92),
         ("gru", "nottingham", 0.5): tight(0.72), ("tanh", "nottingham", 0.5): tight(0.52)},
        {(cell, "nottingham", d): loose(0.5) for cell in ("lstm", "gru", "tanh") for d in (0.0, 0.5)},
    ),
}  # fmt: skip


@pytest.mark.parametrize("claim", list(CASES))
@pytest.mark.parametrize("case, expected", [(0, "supported"), (1, "contradicted"), (2, "inconclusive")])
def test_each_claim_is_supported_contradicted_or_inconclusive(tmp_path, claim, case, expected):
    frame = load(write_store(tmp_path / "run", scored(CASES[claim][case])))
    result = findings(frame, replicates=500).loc[claim]
    assert result.verdict == expected, result.detail
    if result.rule == INTERVAL_RULE:  # the report's default rule; others are printed in the row
        assert verdict(result.low, result.high) == expected
    if expected == "supported":  # the report reads every effect as positive = the paper's direction
        assert result.effect > 0 and result.high > 0, result
    assert not result.detail.startswith("not measured"), result.detail


def test_findings_do_not_depend_on_the_order_trials_finished_in(tmp_path):
    # Two runs of one search store the same trials in the order Ray finished them, which varies.
    frame = load(write_store(tmp_path / "run", scored(CASES["forget_gate_most"][2])))
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert not frame["trial"].equals(shuffled["trial"])
    pd.testing.assert_frame_equal(findings(frame, replicates=300), findings(shuffled, replicates=300))


def test_a_stricter_level_widens_the_interval_and_can_only_undecide_a_verdict(tmp_path):
    replicates = np.linspace(-0.01, 1.0, 1001)  # 1% of them below 0
    frame = load(write_store(tmp_path / "run", scored(CASES["gru_beats_lstm"][0])))
    usual = analysis.Bootstrap(frame)
    bonferroni = usual.with_level(1 - 0.05 / 8)
    assert bonferroni.best("lstm", "arith")[1] is usual.best("lstm", "arith")[1]  # drawn once
    assert verdict(*usual.interval(replicates)) == "supported"
    assert verdict(*bonferroni.interval(replicates)) == "inconclusive"
    plain, strict = findings(frame, replicates=500), findings(frame, replicates=500, level=1 - 0.05 / 8)
    for claim in plain.index:
        assert strict.at[claim, "verdict"] in (plain.at[claim, "verdict"], "inconclusive")
        assert strict.at[claim, "low"] <= plain.at[claim, "low"] or np.isnan(plain.at[claim, "low"])


def test_replicates_not_kept_are_drawn_again_the_same(tmp_path):
    frame = load(write_store(tmp_path / "run", scored(CASES["gru_beats_lstm"][0])))
    boot = analysis.Bootstrap(frame, replicates=50)
    once = boot.best("lstm", "arith", keep=False)
    again = boot.best("lstm", "arith", keep=False)
    assert once[1] is not again[1] and np.array_equal(once[1], again[1])  # drawn twice, equal
    kept = boot.best("lstm", "arith")
    assert np.array_equal(kept[1], once[1]) and boot.best("lstm", "arith")[1] is kept[1]
    calls = []
    for _ in range(2):
        assert boot.kept(("x", 1), lambda a: calls.append(a) or a * 2, 21) == 42
    assert calls == [21]  # computed once, and the copy a Bonferroni pass makes shares it
    assert boot.with_level(0.99).kept(("x", 1), lambda a: 0, 0) == 42


def test_replicates_are_the_best_of_resampled_trials(tmp_path):
    # each replicate is the best of 4 trials drawn with replacement from the cell's 4
    spread = [0.8, 0.2, 0.6, 0.4]
    frame = load(write_store(tmp_path / "run", scored(over(SEARCH, lstm=spread, gru=spread))))
    point, reps = analysis.Bootstrap(frame, replicates=4000).best("lstm", "arith")
    assert point == 0.8 and set(np.unique(reps)) <= set(spread)
    for value, below in zip(sorted(spread), [0.0, 0.25, 0.5, 0.75]):
        # P(best of 4 draws = value) = P(all <= value) - P(all < value)
        expected = (below + 0.25) ** 4 - below**4
        assert np.mean(reps == value) == pytest.approx(expected, abs=0.03)


def test_a_claim_without_its_cells_is_not_measured(known):
    table = findings(known, replicates=200)
    assert set(table.index) == set(analysis.CLAIMS)
    gates = table.loc["forget_gate_most"]
    assert gates.verdict == "inconclusive" and gates.detail.startswith("not measured")
    assert math.isnan(gates.effect)


@pytest.mark.parametrize("n, k", [(1, 1), (5, 1), (5, 2), (6, 3), (7, 7)])
def test_expected_best_weights_match_every_draw_enumerated(n, k):
    scores = np.sort(np.random.default_rng(10 * n + k).random(n))
    draws = [max(draw) for draw in itertools.combinations(scores, k)]
    assert scores @ analysis.expected_best_weights(n, k) == pytest.approx(np.mean(draws))


@pytest.mark.parametrize("n, k", [(60, 20), (10_000, 200), (50_000, 3)])
def test_expected_best_weights_are_a_distribution_at_paper_scale(n, k):
    weights = analysis.expected_best_weights(n, k)
    exact = [math.comb(i, k - 1) for i in range(n)]  # integers: exact at any size
    assert weights.sum() == pytest.approx(1.0)
    for i in (k - 1, n // 2, n - 1):  # against exact integer arithmetic, where floats allow it
        assert weights[i] == pytest.approx(exact[i] / math.comb(n, k), rel=1e-9, abs=1e-300)
    assert np.all(weights[: k - 1] == 0) and np.all(np.diff(weights[k - 1 :]) >= 0)


def test_equal_trials_take_away_the_edge_of_a_cell_run_more_often(tmp_path):
    # lstm and lstm_b draw from the same scores, but the lstm was run 8 times, lstm_b twice
    spread = [0.2, 0.4, 0.6, 0.8]
    spec = over(SEARCH, lstm=spread * 2, lstm_b=[0.4, 0.6], gru=spread)
    frame = load(write_store(tmp_path / "run", scored(spec)))
    boot = analysis.Bootstrap(frame, replicates=300, equal_trials=True)
    assert boot.trials_per_score == {("arith", False): 2, ("xml", False): 2}
    best_of_two = np.mean([max(pair) for pair in itertools.combinations(spread * 2, 2)])
    assert boot.best("lstm", "arith")[0] == pytest.approx(best_of_two)  # not 0.8
    assert boot.best("lstm_b", "arith")[0] == pytest.approx(0.6)  # all its trials
    assert analysis.Bootstrap(frame, replicates=300).best("lstm", "arith")[0] == 0.8
    plain = compare(frame, "lstm", "lstm_b", replicates=300)
    fair = compare(frame, "lstm", "lstm_b", replicates=300, equal_trials=True)
    assert plain.loc["arith", "effect"] == pytest.approx(math.log(0.8 / 0.6))
    assert fair.loc["arith", "effect"] == pytest.approx(math.log(best_of_two / 0.6))
    assert "expected best of 2 of 8 vs 2: " in fair.loc["arith", "detail"]


def test_compare_two_cells_task_by_task(tmp_path):
    spec = over(SEARCH, lstm_b=tight(0.9), lstm=tight(0.7), gru=tight(0.9))
    frame = load(write_store(tmp_path / "run", scored(spec)))
    table = compare(frame, "lstm_b", "lstm", replicates=500)
    assert list(table.index) == ["arith", "xml", "mean"]
    expected = math.log(max(tight(0.9)) / max(tight(0.7)))
    assert table.loc["arith", "effect"] == pytest.approx(expected)
    assert set(table["verdict"]) == {"supported"}
    reverse = compare(frame, "lstm", "lstm_b", replicates=500)
    assert set(reverse["verdict"]) == {"contradicted"}
    with pytest.raises(analysis.Missing):
        compare(frame, "lstm", "mut3")


# --------------------------------------------------------------- a real tiny reproduction (Ray)
def write_tiny_configs(directory: pathlib.Path) -> None:
    """A 'tiny' preset for `reproduce --configs`: 5 baselines with dropout on nottingham, and a
    16-trial search, all at budgets of a second per trial and one layer (a program to compile
    for each cell and task, not two)."""
    one_layer = {"grid.layers": [1]}
    baselines = tiny(name="baselines", strategy="baselines", settings_per_task=2, max_trials=1000,
                     tasks=["arith", "xml", "ptb", "nottingham"],
                     **{"baselines.cells": ["tanh", "lstm", "lstm_b", "gru", "mut1"],
                        "baselines.dropout": 0.5, "baselines.dropout_tasks": ["nottingham"]},
                     **one_layer)  # fmt: skip
    search = tiny(name="search", max_trials=16, **one_layer)
    directory.mkdir()
    (directory / "baselines-tiny.toml").write_text(to_toml(to_dict(baselines)))
    (directory / "tiny.toml").write_text(to_toml(to_dict(search)))


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    """`cellsearch reproduce` run as a user runs it: a new driver process with its own local Ray."""
    root = tmp_path_factory.mktemp("repro")
    write_tiny_configs(root / "configs")
    result = subprocess.run(
        [sys.executable, "-m", "search.cli", "reproduce", "--preset", "tiny", "--configs",
         str(root / "configs"), "--out", str(root / "out"), "--workers", "2", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "out", result


def png_size(path: pathlib.Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_reproduce_writes_both_runs_and_a_report(reproduction):
    out, result = reproduction
    assert (out / "baselines" / "run.toml").is_file() and (out / "search" / "run.toml").is_file()
    frame = load([out / "baselines", out / "search"])
    baselines = frame[frame["run"] == "baselines"]
    assert len(baselines) == 5 * (4 * 2 + 2)  # 5 cells x 4 tasks x 2 settings + dropout copies
    dropped = baselines[baselines["dropout"] > 0]
    assert set(dropped["task"]) == {"nottingham"} and len(dropped) == 10
    assert len(frame[frame["run"] == "search"]) == 16
    report = (out / "report.md").read_text()
    for heading in ("## The paper's findings, checked", "## Table 1", "## Table 2", "## Leaderboard",
                    "## Figures"):  # fmt: skip
        assert heading in report
    assert "| at equal trials: effect [95% CI], verdict |" in report
    assert "Corrected for testing 8 claims (Bonferroni: each interval at 99.38% instead of 95%)" in report
    own_rules = [row.rule for _, row in findings(frame).iterrows() if row.measure and row.rule != INTERVAL_RULE]
    assert own_rules and all(f"Verdict: {rule}." in report for rule in own_rules)
    assert "report.md: written" in result.stdout


def importance_frame(scores, **factors) -> pd.DataFrame:
    """Trials of arith with the given scores and factor columns (the rest fixed)."""
    fixed = {"lr": 0.1, "clip": 5.0, "init_scale": 1.0, "layers": 1, "dropout": 0.0}
    columns = {"task": "arith", "status": "ok", "score": scores, "cell_hash": "c", **fixed, **factors}
    return pd.DataFrame({k: v if np.ndim(v) else [v] * len(scores) for k, v in columns.items()})


def test_variance_shares_are_epsilon_squared_by_hand():
    # lr groups [0, 2] and [4, 6]: SS_total 20, SS_between 16, SS_within 4 over N - k = 2
    # -> (16 - 1 * 4 / 2) / 20 = 0.7 (the plain ratio would say 0.8)
    table = analysis.hparam_importance(importance_frame([0.0, 2.0, 4.0, 6.0], lr=[0.1, 0.1, 0.2, 0.2]))
    assert list(table.columns) == ["lr"] and table.at["arith", "lr"] == pytest.approx(0.7)
    # every value of a factor tried once: nothing to estimate the noise from
    one_each = analysis.hparam_importance(importance_frame([0.0, 2.0, 4.0], clip=[1.0, 2.0, 3.0]))
    assert np.isnan(one_each.at["arith", "clip"])


def test_variance_shares_do_not_credit_a_factor_with_noise():
    # 20 cells x 2 trials of pure noise: the plain ratio of group means is about 19/40 on average
    rng = np.random.default_rng(0)
    cells = np.repeat([f"c{i}" for i in range(20)], 2)
    shares, plain = [], []
    for _ in range(200):
        scores = rng.normal(size=40)
        shares.append(analysis.hparam_importance(importance_frame(scores, cell_hash=cells)).at["arith", "cell"])
        means = pd.Series(scores).groupby(cells).transform("mean")
        plain.append(means.var(ddof=0) / scores.var())
    assert np.mean(plain) > 0.4 and np.mean(shares) < 0.15 and min(shares) >= 0.0
    # and a factor that decides the score is credited with nearly all of it
    scores = np.repeat(np.arange(20.0), 2) + rng.normal(scale=0.1, size=40)
    assert analysis.hparam_importance(importance_frame(scores, cell_hash=cells)).at["arith", "cell"] > 0.99


def test_report_draws_each_plot_as_a_valid_png_or_says_what_it_lacks(reproduction):
    # Whether the tiny search finds a cell that passes its screen (needed by progress.png) depends
    # on its data; every other plot always has what it needs here.
    out, _ = reproduction
    report = (out / "report.md").read_text()
    drawn = [name for name in analysis.PLOTS if (out / name).is_file()]
    assert set(analysis.PLOTS) - set(drawn) <= {"progress.png"}
    for name in analysis.PLOTS:
        path = out / name
        if name not in drawn:
            assert f"`{name}` is not drawn: it needs a search run in which" in report
            continue
        width, height = png_size(path)
        assert 400 <= width <= 4000 and 200 <= height <= 3000, (name, width, height)
        assert path.stat().st_size > 8_000, name  # a blank canvas compresses to less
        assert f"]({name})" in report and f"`{name}` is not drawn" not in report


def test_search_progress_follows_the_best_found_cell_scored_on_every_task(tmp_path):
    rows = []

    def trial(cell, origin, task, score, status="ok"):
        rows.append({"trial": len(rows), "cell_hash": cell, "origin": origin, "task": task,
                     "cell_name": cell if origin == "baseline" else None, "score": score,
                     "status": status, "strategy": "jozefowicz", "run": "search"})  # fmt: skip

    for task, score in (("arith", 0.5), ("xml", 0.4), ("ptb", 0.02)):
        trial("gru", "baseline", task, score)
    trial("a", "mutation", "arith", 0.6)
    trial("a", "mutation", "xml", 0.2)
    trial("b", "mutation", "arith", 0.9)  # never scored on every task: not on the curve
    trial("a", "mutation", "ptb", 0.03)  # a complete: min(1.2, 0.5, 1.5) = 0.5 at trial 7
    trial("c", "mutation", "arith", 0.5)
    trial("c", "mutation", "xml", 0.4)
    trial("c", "mutation", "ptb", 0.01, status="diverged")  # counts 0: no better
    trial("a", "mutation", "xml", 0.36)  # a's best xml now 0.36: min(1.2, 0.9, 1.5) = 0.9
    frame = pd.DataFrame(rows)
    progress = search_progress(frame)
    assert progress["trials"].tolist() == [7, 11] and progress["trial"].tolist() == [6, 10]
    assert progress["jozefowicz"].tolist() == pytest.approx([0.5, 0.9])
    assert progress["cell_hash"].tolist() == ["a", "a"] and progress["stored_at"].isna().all()
    assert plot_progress(frame, tmp_path / "progress.png") is not None
    assert png_size(tmp_path / "progress.png")[0] >= 400
    assert search_progress(frame[~frame["cell_hash"].isin(["a", "c"])]).empty
    assert plot_progress(frame[~frame["cell_hash"].isin(["a", "c"])], tmp_path / "none.png") is None
    # with the time each row was stored, as a search writes it: the curve against wall time too
    stamps = pd.date_range("2026-11-29 10:00", periods=len(frame), freq="10s", tz="UTC")
    timed = search_progress(frame.assign(stored_at=stamps))
    assert timed["stored_at"].tolist() == [stamps[6], stamps[10]]


def test_the_jozefowicz_score_is_over_the_tasks_a_search_searched(tmp_path):
    """A search on arith and nottingham is scored on both, beside a baselines run that trained the
    paper's search tasks and nottingham (for Table 2); baselines alone keep the paper's tasks."""
    rows = []

    def add(run, strategy, cell, purpose, task, score):
        row = trial(len(rows), cell, task, score, strategy=strategy)
        rows.append(row | {"run": run, "purpose": purpose})

    for task, score in (("arith", 0.5), ("xml", 0.4), ("ptb", 0.02), ("nottingham", 1e-3)):
        add("baselines", "baselines", "gru", "baseline", task, score)
    add("search", "random", "gru", "screen", "memorize", 0.3)  # a screen is not a search task
    for task, score in (("arith", 0.4), ("nottingham", 1e-4)):
        add("search", "random", "gru", "baseline", task, score)
    for task, score in (("arith", 0.5), ("nottingham", 1e-9), ("xml", 0.4), ("ptb", 0.02)):
        add("search", "random", MUTANT, "evaluate", task, score)  # (xml, ptb: not searched)
    frame = pd.DataFrame(rows)
    mutant = parse(MUTANT).hash
    assert search_tasks_of(frame) == ["arith", "nottingham"]
    board = leaderboard(frame)
    # the mutant's arith is the GRU's best (0.5, the baselines run's), its nottingham 1e-6 of it
    assert board.loc[mutant, "jozefowicz"] == pytest.approx(1e-6)
    assert board.set_index("name").loc["gru", "jozefowicz"] == 1.0
    assert search_progress(frame)["jozefowicz"].tolist() == pytest.approx([1e-5])  # its run's GRU
    baselines = frame[frame["run"] == "baselines"]
    assert search_tasks_of(baselines) == ["arith", "xml", "ptb"]  # the paper's, not Table 2's music
    # baselines on a task of your own (`cellsearch baselines --tasks reverse:Reverse arith`): it too
    own = pd.DataFrame([trial(0, "gru", "reverse:Reverse", 0.6, strategy="baselines"),
                        trial(1, "gru", "arith", 0.5, strategy="baselines"),
                        trial(2, MUTANT, "reverse:Reverse", 0.3, strategy="baselines"),
                        trial(3, MUTANT, "arith", 0.5, strategy="baselines")]).assign(purpose="baseline")
    assert search_tasks_of(own) == ["arith", "reverse:Reverse"]
    assert leaderboard(own).loc[mutant, "jozefowicz"] == pytest.approx(0.5)


OTHER = "h_new = relu(W(x) + W(h))\n"


def test_strategies_compare_by_their_runs_best_found_cells_at_equal_trials(tmp_path):
    runs = {  # run -> (strategy, [(cell, task, score)]), the GRU's arith 0.5 and xml 0.4 first
        "random-0": ("random", [(MUTANT, "arith", 0.5), (MUTANT, "xml", 0.2),  # 0.5 at 4 trials
                                (OTHER, "arith", 0.6), (OTHER, "xml", 0.44)]),  # 1.1 at 6
        "random-1": ("random", [(MUTANT, "arith", 0.25), (MUTANT, "xml", 0.4)]),  # 0.5 at 4
        "hill-0": ("hillclimb:HillClimb", [(MUTANT, "arith", 0.1),  # never scored on xml
                                           (OTHER, "arith", 0.5), (OTHER, "xml", 0.4)]),  # 1.0 at 5
    }  # fmt: skip
    paths, rows = [], {}
    for run, (strategy, found) in runs.items():
        rows[run] = [trial(0, "gru", "arith", 0.5, strategy=strategy), trial(1, "gru", "xml", 0.4, strategy=strategy)]
        rows[run] += [trial(2 + i, cell, task, score, strategy=strategy) for i, (cell, task, score) in enumerate(found)]
        paths.append(write_store(tmp_path / run, rows[run], strategy=strategy))
    frame = load(paths)
    equal = compare_strategies(frame)  # at 4 trials, the fewest a run has: hill-0 has found none
    assert equal.index.tolist() == ["random", "hillclimb:HillClimb"]
    assert equal.loc["random"].tolist() == [2, 4, 0.5, 0.5, 0.5, 0]
    assert equal.loc["hillclimb:HillClimb"].tolist() == [1, 4, 0.0, 0.0, 0.0, 0]
    later = compare_strategies(frame, trials=6)
    assert later.index.tolist() == ["hillclimb:HillClimb", "random"]
    assert later.loc["random"].tolist() == pytest.approx([2, 6, 0.8, 0.5, 1.1, 1])
    assert later.loc["hillclimb:HillClimb"].tolist() == [1, 6, 1.0, 1.0, 1.0, 1]
    assert compare_strategies(frame[frame["run"] == "hill-0"])["runs"].tolist() == [1]
    report = analysis.write_report(paths, tmp_path / "report").read_text()
    assert "## Search strategies at equal trials" in report
    assert "| random | 2 | 4 | 0.500 | 0.500 | 0.500 | 0 |" in report
    one = analysis.write_report(paths[:1], tmp_path / "one").read_text()
    assert "## Search strategies" not in one  # one search run: nothing to compare
    # a run named as another, in another directory (two reproductions' `search`): still two runs
    twin = write_store(tmp_path / "elsewhere" / "random-0", rows["random-1"], "random")
    report = analysis.write_report([paths[0], twin], tmp_path / "twins").read_text()
    assert f"| {tmp_path.name}/random-0 | random | quick | 0 | arith, xml | 6 |" in report
    assert "| elsewhere/random-0 | random | quick | 0 | arith, xml | 4 |" in report
    assert "| random | 2 | 4 | 0.500 | 0.500 | 0.500 | 0 |" in report


def test_tables_and_leaderboard_of_the_real_runs_agree_with_the_rows(reproduction):
    out, _ = reproduction
    frame = load([out / "baselines", out / "search"])
    rows = [json.loads(line) for run in ("baselines", "search")
            for line in (out / run / "trials.jsonl").read_text().splitlines()]  # fmt: skip
    board = leaderboard(frame)
    for (cell, task), best in _best_by_hand(rows).items():
        assert board.loc[cell, task] == pytest.approx(best), (cell, task)
    assert board.loc[baseline("gru").hash, "jozefowicz"] == 1.0
    table = paper_table1(frame)
    assert list(table.index[:5]) == ["tanh", "lstm", "lstm_b", "gru", "mut1"]
    for cell in table.index[:5]:
        settings = {(r["lr"], r["clip"], r["init_scale"], r["layers"]) for r in rows
                    if r["cell_name"] == cell and r["task"] == "arith"}  # fmt: skip
        assert table.loc[cell, "arith n"] == len(settings)
    assert {"nottingham", "nottingham-d"} <= set(paper_table2(frame).columns)


def _best_by_hand(rows):
    best = {}
    for r in rows:
        score = r["score"] if r["status"] == "ok" else 0.0
        key = (r["cell_hash"], r["task"])
        best[key] = max(best.get(key, score), score)
    return best



def test_cli_leaderboard_compare_and_report_on_a_reproduction(reproduction, tmp_path):
    out, _ = reproduction
    table = cellsearch("leaderboard", out, "--task", "arith", "--top", "3")
    assert table.returncode == 0 and "jozefowicz" in table.stdout and "xml" not in table.stdout
    assert sum(line.startswith("v1-") for line in table.stdout.splitlines()) == 3
    markdown = cellsearch("leaderboard", out, "--format", "markdown")
    assert markdown.stdout.startswith("| cell_hash | name | jozefowicz |")
    csv = cellsearch("leaderboard", out, "--format", "csv", "--out", tmp_path / "board.csv")
    assert csv.returncode == 0
    board = pd.read_csv(tmp_path / "board.csv")
    assert "equations" in board and board["trials"].sum() == len(load([out / "baselines", out / "search"]))
    versus = cellsearch("compare", out, "lstm_b", "lstm")
    assert versus.returncode == 0, versus.stderr
    lines = versus.stdout.splitlines()
    assert lines[0].startswith("lstm_b vs lstm: effect = log(best lstm_b / best lstm)")
    assert [line.split()[0] for line in lines[1:]] == ["arith", "nottingham", "ptb", "xml", "mean"]
    fair = cellsearch("compare", out, "lstm_b", "lstm", "--equal-trials")
    assert fair.returncode == 0, fair.stderr
    assert "each the expected best of k trials, k the fewer the two have" in fair.stdout.splitlines()[0]
    assert "expected best of " in fair.stdout.splitlines()[1]
    again = cellsearch("report", out / "baselines", out / "search", "--out", tmp_path / "again")
    assert again.returncode == 0 and (tmp_path / "again" / "report.md").is_file()
    exported = cellsearch("export", out, "--format", "csv", "--out", tmp_path / "all.csv")
    assert exported.returncode == 0, exported.stderr
    assert pd.read_csv(tmp_path / "all.csv")["run"].value_counts().to_dict() == (
        load([out / "baselines", out / "search"])["run"].value_counts().to_dict())


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "no_such_run"], "no_such_run: no such run directory"),
        (["compare", "no_such_run", "lstm", "gru"], "no_such_run: no such run directory"),
        (["leaderboard", "--top", "0", "."], "--top must be a positive integer"),
        (["reproduce", "--preset", "huge", "--configs", "configs"], "preset 'huge' needs"),
    ],
)
def test_analysis_usage_errors_are_one_line(args, message):
    result = cellsearch(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_compare_names_a_cell_that_is_not_in_the_run(reproduction):
    out, _ = reproduction
    result = cellsearch("compare", out, "lstm", "mut3")
    assert result.returncode == 2 and "no trials of mut3" in result.stderr


def test_compare_refuses_a_cell_against_itself(reproduction):
    out, _ = reproduction
    frame = load(find_runs(out))
    lstm_hash = frame.loc[frame["cell_name"] == "lstm", "cell_hash"].iloc[0]
    with pytest.raises(analysis.Missing, match=f"lstm and {lstm_hash[:8]} are the same cell"):
        compare(frame, "lstm", lstm_hash[:8])
