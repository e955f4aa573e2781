"""What the benchmarks compute besides timings: versus_frameworks.py's FLOP floor, and the store
store_scale.py writes (the timing itself is not tested)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
from versus_frameworks import flop_floor, step_flops  # noqa: E402, I001
from store_scale import synthesize  # noqa: E402  (last: it takes benchmarks/ off sys.path again)

from analysis import leaderboard  # noqa: E402
from cells import PAPER_CELLS, baseline, parse  # noqa: E402
from results import load, load_cells  # noqa: E402


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
