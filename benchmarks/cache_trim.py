"""What keeping the compiled-programs cache under its size costs: seconds per `trim_cache`.

    python benchmarks/cache_trim.py                      # 6,000 and 60,000 files
    python benchmarks/cache_trim.py --files 200000 --rounds 3

Each worker trims its node's cache (`tasks.use_compilation_cache(dir, max_bytes=...)`) when it
starts and after every `tasks.trainer.TRIM_EVERY` programs it compiles; a trim lists every file
under the directory, so its cost grows with the number of files, not their bytes. A 10 GB cache (the
default `CELLSEARCH_CACHE_MAX_GB`) holds about 60,000 files: half JAX's cache entries, half the
executable store's, 30-100 KB each at the quick preset. Here the files are 1 KB stand-ins, laid out
and named the same way (JAX's at the top, the store's in `executables/`), each with its own last-use
time, in a temporary directory on the same file system as the real cache. Two measurements per size,
over rounds: a trim that keeps everything (the usual case: the cache is under its cap) and one that
deletes the 1% least recently used. The last column spreads a no-op trim over `TRIM_EVERY` compiles.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, summary, write  # noqa: E402


def fill(directory: pathlib.Path, files: int, size: int = 1000) -> int:
    """Writes `files` files of `size` bytes, a second apart in last use; returns their bytes."""
    (directory / "executables").mkdir(parents=True, exist_ok=True)
    oldest = time.time() - 86400 - files
    for i in range(files):
        path = directory / "executables" / f"{i:07d}.xla" if i % 2 else directory / f"{i:07d}-cache"
        path.write_bytes(b"x" * size)
        os.utime(path, (oldest + i, oldest + i))
    return files * size


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, nargs="+", default=[6000, 60000])
    parser.add_argument("--rounds", type=int, default=5)
    results_dir = pathlib.Path(__file__).parent / "results"
    parser.add_argument("--out", default=str(results_dir / "cache_trim"))
    args = parser.parse_args(argv)

    from search.executor import CACHE_DIR
    from tasks.executables import trim_cache
    from tasks.trainer import TRIM_EVERY

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "trim_every": TRIM_EVERY, "sizes": []}
    for files in args.files:
        keep, delete = [], []
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="trim-bench-") as tmp:
            directory = pathlib.Path(tmp)
            total = fill(directory, files)
            for _ in range(args.rounds):
                start = time.perf_counter()
                removed = trim_cache(directory, total)
                keep.append(time.perf_counter() - start)
                assert removed.files == 0
                start = time.perf_counter()
                removed = trim_cache(directory, total - files // 100 * 1000)
                delete.append(time.perf_counter() - start)
                assert removed.files == files // 100
                total = fill(directory, files)  # the deleted files back, as they were
        results["sizes"].append({"files": files, "keep_seconds": summary(keep),
                                 "delete_1pct_seconds": summary(delete)})  # fmt: skip

    rows = ["| files | trim keeping all, s: min | median | max | trim deleting 1%, s: median | "
            f"no-op trim per compile (1 in {TRIM_EVERY}), ms |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for size in results["sizes"]:
        keep, delete = size["keep_seconds"], size["delete_1pct_seconds"]
        rows.append(f"| {size['files']:,} | {keep['min']:.3f} | {keep['median']:.3f} | "
                    f"{keep['max']:.3f} | {delete['median']:.3f} | "
                    f"{1e3 * keep['median'] / TRIM_EVERY:.2f} |")  # fmt: skip
    write(results, args.out, "\n".join(rows))


if __name__ == "__main__":
    main()
