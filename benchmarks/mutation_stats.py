"""What the mutation operator produces: validity, uniqueness and speed over N draws per parent.

    python benchmarks/mutation_stats.py                   # 1,000 draws each of lstm and gru

One draw is one application of the operator without retries (`mutation_attempt`): it is valid when
the child validates, differs from its parent, compiles and is finite on the fingerprint inputs.
Uniqueness counts distinct structural hashes and distinct fingerprints among the valid children.
Time per draw includes validation, hashing and the fingerprint evaluation.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, write  # noqa: E402

from cells import baseline  # noqa: E402
from search.mutation import mutation_attempt  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/mutation_stats")
    args = parser.parse_args(argv)
    results = {"machine": machine(), "n": args.n, "seed": args.seed, "cells": {}}
    lines = ["| parent | draws | valid | unique by hash | unique by fingerprint | ms per draw |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name in args.cells:
        parent = baseline(name)
        rng = np.random.default_rng(args.seed)
        start = time.perf_counter()
        children = [mutation_attempt(parent, rng) for _ in range(args.n)]
        for child in children:  # hashing is lazy: include it in the timing
            if child is not None:
                child.hash, child.fingerprint
        seconds = time.perf_counter() - start
        valid = [c for c in children if c is not None]
        stats = {
            "valid": len(valid) / args.n,
            "unique_hash": len({c.hash for c in valid}) / args.n,
            "unique_fingerprint": len({c.fingerprint for c in valid}) / args.n,
            "ms_per_draw": 1000 * seconds / args.n,
        }
        results["cells"][name] = stats
        lines.append(f"| {name} | {args.n} | {stats['valid']:.1%} | {stats['unique_hash']:.1%} | "
                     f"{stats['unique_fingerprint']:.1%} | {stats['ms_per_draw']:.2f} |")  # fmt: skip
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
