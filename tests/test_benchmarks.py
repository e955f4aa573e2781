"""What the benchmarks compute besides timings: versus_frameworks.py's FLOP floor, the store
store_scale.py writes, and how preset_costs.py prices a reproduction (the timing itself is not
tested)."""

import inspect
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from versus_frameworks import TORCH_TARGET, flop_floor, recurrence_split, step_flops  # noqa: E402, I001
from store_scale import synthesize  # noqa: E402  (it takes benchmarks/ off sys.path again ...)
sys.path.insert(0, str(ROOT / "benchmarks"))
from preset_costs import baselines_trials, expected_seconds, stored_run  # noqa: E402  (... as this does)
from common import machine, write  # noqa: E402

from analysis import leaderboard  # noqa: E402
from cells import PAPER_CELLS, baseline, parse  # noqa: E402
from results import load, load_cells  # noqa: E402
from search.config import load_config  # noqa: E402
from tasks.trainer import code_version  # noqa: E402


def test_a_results_file_names_the_code_and_the_versions_it_measured(tmp_path):
    facts = machine()
    assert facts["code_version"] == code_version()
    assert {"jax", "jaxlib", "flax", "optax", "numpy", "torch"} <= set(facts["versions"])
    assert facts["versions"]["jax"] == facts["jax"]
    write({"machine": facts}, str(tmp_path / "bench"), "| a |")
    first = (tmp_path / "bench.md").read_text().splitlines()[0]
    assert first.endswith(f", code {facts['code_version']}.")


@pytest.mark.parametrize("cell, widths", [("gru", 6), ("gru_reset_after", 6), ("lstm", 8)])
def test_step_flops_counts_forward_and_both_gradients_of_every_matmul(cell, widths):
    hidden, vocab, tokens = 256, 2000, 1600
    # the cell's fused matmuls are `widths` H-wide blocks in all (nn.GRU's and nn.LSTM's too), and
    # the readout is V wide; each costs 2 FLOPs per multiply-add, three times (forward, two grads)
    assert step_flops(cell, hidden, vocab, tokens) == 3 * 2 * tokens * hidden * (widths * hidden + vocab)


def test_flop_floor_shares_and_the_share_the_target_needs():
    rates = {"ours": [9.0, 10.0, 11.0], "torch": [8.0, 8.0, 7.0]}  # steps/s: medians 10 and 8
    bound = flop_floor(rates, "ours", "torch", flops=5e9, ceiling=1e11, target=1.3)
    assert bound["floor_ms"] == pytest.approx(50.0)
    assert (bound["ours_ms"], bound["torch_ms"]) == pytest.approx((100.0, 125.0))
    assert (bound["ours_share"], bound["torch_share"]) == pytest.approx((0.5, 0.4))
    # 1.3x torch's steps/s is a step of 125 / 1.3 ms, which is 52% of the floor's rate
    assert bound["share_for_target"] == pytest.approx(0.52)


def test_recurrence_split_asks_for_the_cells_own_target():
    multi = "ours, 10 steps per call"
    rates = {multi: [5.0], f"{multi}, no recurrence": [10.0],  # 200 ms a step, 100 without recurrence
             "torch nn.LSTM": [4.0], "torch nn.LSTM, no recurrence": [8.0]}  # 250 and 125 ms
    split = recurrence_split(rates, multi, "LSTM", TORCH_TARGET["lstm"])
    assert (split["ours_recurrence_ms"], split["torch_recurrence_ms"]) == pytest.approx((100.0, 125.0))
    # 0.9x torch's steps/s is a step of 250 / 0.9 ms; 100 ms of it go to the shared part
    assert split["target"] == 0.9
    assert split["ours_recurrence_ms_for_target"] == pytest.approx(250 / 0.9 - 100)


def test_store_scale_writes_a_store_of_real_cells_that_analysis_reads(tmp_path):
    synthesize(tmp_path / "run", trials=400, cells=16)
    cells = load_cells(tmp_path / "run")
    assert len(cells) == 16 and cells["hash"].is_unique
    assert all(parse(text).hash == h for text, h in zip(cells["text"], cells["hash"]))
    assert set(cells["name"].dropna()) == set(PAPER_CELLS)
    frame = load(tmp_path / "run")
    assert list(frame["trial"]) == list(range(400))
    assert set(frame["task"].astype(str)) == {"arith", "xml", "ptb"}
    assert set(frame["cell_hash"].astype(str)) <= set(cells["hash"])
    assert frame.loc[frame["status"] == "diverged", "score"].isna().all()
    assert frame.loc[frame["status"] == "ok", "score"].between(0, 1).all()
    board = leaderboard(frame)
    assert board.loc[baseline("gru").hash, "jozefowicz"] == pytest.approx(1.0)


def test_preset_costs_counts_the_trials_a_baselines_run_makes():
    committed = load(ROOT / "docs" / "reproduction-quick" / "baselines", loss_curves=False)
    counts = baselines_trials(load_config(ROOT / "configs" / "baselines-quick.toml"))
    assert counts == committed["task"].astype(str).value_counts().to_dict()
    small = baselines_trials(load_config(ROOT / "configs" / "baselines-small.toml"))
    # ten cells, 8 settings on each of five tasks, the three dropout tasks' trained twice
    assert small == {"arith": 80, "xml": 80, "ptb": 160, "nottingham": 160, "piano": 160}
    capped = load_config(ROOT / "configs" / "baselines-small.toml", {"max_trials": 100})
    assert sum(baselines_trials(capped).values()) == 100


def test_preset_costs_takes_a_trial_over_the_grids_layer_counts():
    measured = [{"layers": n, "trial_seconds": s} for n, s in [(1, 10.0), (2, 30.0), (3, 40.0), (4, 80.0)]]
    assert expected_seconds(measured) == pytest.approx(40.0)  # all four: their mean
    assert expected_seconds([measured[0], measured[3]]) == pytest.approx(45.0)  # a line, at 2.5
    assert expected_seconds(measured[:1]) == pytest.approx(10.0)


def test_preset_costs_reads_a_stored_runs_preset_task_shares_and_trial_seconds():
    run = ROOT / "docs" / "reproduction-quick" / "search"
    preset, shares, seconds = stored_run(run)
    frame = load(run, loss_curves=False)
    assert preset == "quick"
    assert set(shares) == set(seconds) == set(frame["task"].astype(str))
    assert sum(shares.values()) == pytest.approx(1.0)
    ptb = frame[frame["task"] == "ptb"]
    assert seconds["ptb"] == pytest.approx((ptb["train_seconds"] + ptb["eval_seconds"]).mean())


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="extracts a revision with git")
def test_versus_revision_runs_the_base_revisions_own_compiler_and_trainer(tmp_path, monkeypatch):
    # the packages import their compiler and trainer lazily, naming the module in a string; the
    # base's names must lead to the base revision's files, not to the working tree's
    monkeypatch.setattr(sys, "path", [str(ROOT / "benchmarks"), *sys.path])
    before = set(sys.modules)
    from versus_revision import import_revision

    try:
        base = import_revision("HEAD", tmp_path)
        for lazy in (base["cells"].compile_cell, base["tasks"].TrialSpec):
            assert pathlib.Path(inspect.getfile(lazy)).is_relative_to(tmp_path)
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]
