"""A cell's recurrence with `unroll`'s loops batch first and features first, side by side.

    python benchmarks/loop_layout.py                          # lstm, gru at H = 128, 256, 512
    python benchmarks/loop_layout.py --cells lstm --hidden 512 --rounds 16

`cells.scan.loops_feature_major` decides from H and the backend whether the loops hold each value
(B, H) or (H, B). This times one layer's `unroll` over a (T, B, H) sequence, the value and
gradient of a loss that reads every output, jitted, once with the choice forced each way; the two
programs alternate over rounds in one process. A paired ratio batch first / features first above 1
says features first is faster. Run it on a new kind of machine (a GPU too, where the package stays
batch first) to see where `cells.scan.FEATURES_FIRST_FROM_HIDDEN` belongs. It also reports how far
the two layouts' gradients differ (float32 rounding: both equal autodiff in the tests).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, summary, write  # noqa: E402

LAYOUTS = ("batch first", "features first")


def programs(cell_name: str, hidden: int, batch: int, seq: int) -> tuple[dict, tuple]:
    """The recurrence's jitted value-and-gradient, compiled once per layout, and its arguments."""
    import jax

    import cells.scan
    from cells import baseline, compile_cell

    cell = compile_cell(baseline(cell_name))
    keys = jax.random.split(jax.random.key(0), 4)
    params = cell.init(keys[0], hidden)
    xs = jax.random.normal(keys[1], (seq, batch, hidden))
    weights = jax.random.normal(keys[2], (seq, batch, hidden))
    carry = tuple(jax.random.normal(k, (batch, hidden)) * 0.5 for k in jax.random.split(keys[3]))

    def loss(params, xs, carry):
        (h, c), hs = cell.unroll(params, carry, xs)
        return (hs * weights).sum() + h.sum() + (c * 0.5).sum()

    chosen = cells.scan.loops_feature_major
    compiled = {}
    try:
        for layout in LAYOUTS:  # the choice is made while tracing, so compile under each
            cells.scan.loops_feature_major = lambda hidden, first=(layout == LAYOUTS[1]): first
            step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            compiled[layout] = step.lower(params, xs, carry).compile()
    finally:
        cells.scan.loops_feature_major = chosen
    return compiled, (params, xs, carry)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", default="benchmarks/results/loop_layout")
    args = parser.parse_args(argv)
    import jax
    import numpy as np

    from cells.scan import loops_feature_major

    results = {"machine": machine(), "batch": args.batch, "seq": args.seq, "rounds": args.rounds,
               "runs": {}}  # fmt: skip
    lines = ["| cell | H | ms batch first (min / median / max) | features first | "
             "batch first / features first (paired, median [min, max]) | gradients differ "
             "(max rel.) | the package picks |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for cell_name in args.cells:
        for hidden in args.hidden:
            compiled, call_args = programs(cell_name, hidden, args.batch, args.seq)
            outputs = {layout: compiled[layout](*call_args) for layout in LAYOUTS}
            leaves = [jax.tree_util.tree_leaves(outputs[layout]) for layout in LAYOUTS]
            differ = max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))
                         for a, b in zip(*leaves))  # fmt: skip
            times = {layout: [] for layout in LAYOUTS}
            for round_ in range(args.rounds):
                for layout in LAYOUTS if round_ % 2 == 0 else LAYOUTS[::-1]:
                    start = time.perf_counter()
                    jax.block_until_ready(compiled[layout](*call_args))
                    times[layout].append(1e3 * (time.perf_counter() - start))
            ratios = [b / f for b, f in zip(*(times[k] for k in LAYOUTS))]
            picks = LAYOUTS[int(loops_feature_major(hidden))]
            results["runs"][f"{cell_name}/{hidden}"] = {
                "ms": {k: summary(v) for k, v in times.items()}, "ratio": summary(ratios),
                "gradients_max_rel_diff": differ, "package_picks": picks}  # fmt: skip
            b, f = (summary(times[k]) for k in LAYOUTS)
            lines.append(f"| {cell_name} | {hidden} | {b['min']:.2f} / {b['median']:.2f} / "
                         f"{b['max']:.2f} | {f['min']:.2f} / {f['median']:.2f} / {f['max']:.2f} | "
                         f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}] "
                         f"| {differ:.1e} | {picks} |")  # fmt: skip
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
