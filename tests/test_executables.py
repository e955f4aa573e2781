"""The executable store: programs loaded untraced compute exactly what the compiled ones do, keys
change with what decides a program, and what cannot be stored or loaded falls back to compiling."""

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks.trainer as trainer
from tasks import HParams, TrialSpec
from tasks.executables import (CacheSize, ExecutableStore, cache_size, clear_cache, describe_cpu,
                               trim_cache)
from tasks.model import zero_carry

TINY = {"steps": 20, "hidden": 16, "batch": 8, "steps_per_call": 10, "eval_sequences": 16}


def programs(cell: str, task: str, has_dropout: bool, store: ExecutableStore, monkeypatch):
    """Two fresh `Program`s of one combination (the first compiles, the second may load), with the
    arguments of a train and an eval call."""
    monkeypatch.setattr(trainer, "_cache", trainer._CompilationCache(store.directory, store, None))
    spec = TrialSpec.from_preset(cell, task, "quick", HParams(), 0, TINY | {"seq_len": 12})
    task, budget = spec.make_task(), spec.budget
    seq_len, k = task.sequence_length(budget.seq_len), budget.steps_per_call
    def make():
        return trainer.Program(spec.graph(), task, 1, budget.hidden, budget.batch, seq_len, k,
                               has_dropout)

    first, second = make(), make()
    params = first.init(jax.random.key(0), np.float32(1.0))
    carry = zero_carry(1, budget.batch, budget.hidden)
    stream = task.train_batches(budget.batch, seq_len, 0)
    chunk = trainer._stack([next(stream) for _ in range(k)])
    rate = np.float32(0.25 if has_dropout else 0.0)
    train_args = (params, carry, chunk, np.float32(0.5), np.float32(5.0), rate, jax.random.key(1))
    return first, second, train_args, (params, carry, chunk)


def assert_identical(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("cell, task, has_dropout", [("lstm", "arith", False), ("gru", "ptb", True),
                                                     ("mut1", "jsb", False)])  # fmt: skip
def test_a_loaded_program_computes_exactly_what_the_compiled_one_does(cell, task, has_dropout, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    store = ExecutableStore(tmp_path)
    first, second, train_args, eval_args = programs(cell, task, has_dropout, store, monkeypatch)
    compiled = [first.call("train", *train_args), first.call("eval", *eval_args)]
    assert set(first.compile_phases["train"]) == {"lookup", "trace", "lower", "compile", "store"}
    assert len(list(tmp_path.glob("*.xla"))) == 2
    loaded = [second.call("train", *train_args), second.call("eval", *eval_args)]
    assert set(second.compile_phases) == {"train", "eval"}
    assert all(set(phases) == {"load"} for phases in second.compile_phases.values())
    assert_identical(compiled, loaded)
    # and again with the outputs fed back, as the trainer calls it
    params, carry, _ = loaded[0]
    again = (params, carry, *train_args[2:])
    assert_identical(first.call("train", *again), second.call("train", *again))


def test_k_settings_programs_load_too(tmp_path, monkeypatch):
    first, second, (params, carry, chunk, lr, clip, rate, key), _ = programs(
        "gru", "arith", False, ExecutableStore(tmp_path), monkeypatch)  # fmt: skip
    lanes = lambda x: np.stack([x, x * 0.5])  # noqa: E731 -- 2 settings
    args = (jax.tree_util.tree_map(lambda p: jnp.stack([p, p]), params),
            jax.tree_util.tree_map(lambda c: jnp.stack([c, c]), carry),
            jax.tree_util.tree_map(lambda b: np.stack([b, b]), chunk), lanes(lr),
            lanes(clip), lanes(rate), jax.random.split(key, 2))  # fmt: skip
    compiled = first.call("train_k", *args)
    loaded = second.call("train_k", *args)
    assert set(second.compile_phases["train_k"]) == {"load"}
    assert_identical(compiled, loaded)


def test_evaluation_is_one_program_with_and_without_dropout(tmp_path, monkeypatch):
    store = ExecutableStore(tmp_path)
    plain, _, _, eval_args = programs("lstm", "arith", False, store, monkeypatch)
    dropout, _, train_args, _ = programs("lstm", "arith", True, store, monkeypatch)
    expected = plain.call("eval", *eval_args)
    assert_identical(dropout.call("eval", *eval_args), expected)
    assert set(dropout.compile_phases["eval"]) == {"load"}
    dropout.call("train", *train_args)  # its train program is its own: it drops out
    assert "compile" in dropout.compile_phases["train"]
    assert len(list(tmp_path.glob("*.xla"))) == 2


def test_the_key_changes_with_what_decides_the_program(tmp_path):
    store = ExecutableStore(tmp_path)
    args = (np.zeros((3, 4), np.float32), np.float32(1.0))
    base = store.key({"function": "train", "cell": "lstm"}, args)
    assert base == store.key({"function": "train", "cell": "lstm"}, args)
    assert base != store.key({"function": "train", "cell": "gru"}, args)
    assert base != store.key({"function": "train", "cell": "lstm"}, (np.zeros((3, 5), np.float32), args[1]))
    assert base != store.key({"function": "train", "cell": "lstm"}, (args[0].astype(np.int32), args[1]))
    assert base != store.key({"function": "train", "cell": "lstm"}, (args[0], 1.0))  # weakly typed
    assert base != store.key({"function": "train", "cell": "lstm"}, ((args[0],), args[1]))
    with jax.default_matmul_precision("highest"):
        assert base != store.key({"function": "train", "cell": "lstm"}, args)


def test_the_key_is_the_same_in_another_process():
    code = ("import numpy as np; from tasks.executables import ExecutableStore; "
            "print(ExecutableStore('.').key({'cell': 'lstm'}, (np.zeros(3, np.float32),)))")  # fmt: skip
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip() for _ in range(2)}  # fmt: skip
    assert len(keys) == 1 and len(keys.pop()) == 64


def test_a_damaged_file_is_a_miss_and_is_written_again(tmp_path, monkeypatch):
    store = ExecutableStore(tmp_path)
    first, second, train_args, _ = programs("lstm", "arith", False, store, monkeypatch)
    expected = first.call("train", *train_args)
    (path,) = tmp_path.glob("*.xla")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short
    assert_identical(second.call("train", *train_args), expected)
    assert "compile" in second.compile_phases["train"]  # compiled again, not loaded
    out_tree = jax.tree_util.tree_structure((train_args[0], train_args[1], 0))
    assert_identical(store.load(path.stem, train_args, out_tree)(*train_args), expected)


def test_programs_that_cannot_be_rebuilt_exactly_are_not_stored(tmp_path):
    store = ExecutableStore(tmp_path)
    x = np.ones(4, np.float32)

    def with_callback(x):
        jax.debug.print("{}", x.sum())  # an effect: the store does not rebuild those
        return x * 2

    callback = jax.jit(with_callback).trace(x).lower().compile()
    donating = jax.jit(lambda x: x * 2, donate_argnums=0).trace(x).lower().compile()
    plain = jax.jit(lambda x: x * 2).trace(x).lower().compile()
    assert not store.save("callback", callback, (x,))
    assert not store.save("donating", donating, (x,))
    assert store.save("plain", plain, (x,))
    assert sorted(p.stem for p in tmp_path.glob("*.xla")) == ["plain"]
    loaded = store.load("plain", (x,), plain.out_tree)
    assert np.array_equal(loaded(x), plain(x))


def trial_in_a_new_process(cache, executables: bool = True, max_bytes=None, trim_every: int = 256,
                           hidden: int = TINY["hidden"]) -> dict:  # fmt: skip
    """A gru/arith trial through `use_compilation_cache`, as a worker runs it, in a fresh process."""
    code = f"""
import json
import tasks.trainer
from tasks import HParams, TrialSpec, train_trial, use_compilation_cache
tasks.trainer.TRIM_EVERY = {trim_every}
use_compilation_cache({str(cache)!r}, executables={executables!r}, max_bytes={max_bytes!r})
budget = {TINY | {"hidden": hidden}!r}
spec = TrialSpec.from_preset("gru", "arith", "quick", HParams(lr=0.5), 3, budget)
result = train_trial(spec)
phases = spec.program(spec.make_task()).compile_phases
print(json.dumps({{"status": result.status, "error": result.error, "loss": result.train_loss,
                  "score": result.score, "phases": phases}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_programs_the_first_stored(tmp_path):
    cold, warm = trial_in_a_new_process(tmp_path), trial_in_a_new_process(tmp_path)
    assert (cold["loss"], cold["score"]) == (warm["loss"], warm["score"])
    assert "compile" in cold["phases"]["train"] and set(warm["phases"]["train"]) == {"load"}
    assert set(warm["phases"]["eval"]) == {"load"}
    assert len(list((tmp_path / "executables").glob("*.xla"))) == 2


def test_programs_read_from_jaxs_cache_are_not_stored(tmp_path):
    # XLA re-serialises an executable it read from JAX's cache without its code; stored, it would
    # load and then fail to run ("Function ... not found")
    first = trial_in_a_new_process(tmp_path, executables=False)  # fills JAX's cache only
    second = trial_in_a_new_process(tmp_path)  # misses the store, hits JAX's cache
    assert not list((tmp_path / "executables").glob("*.xla"))
    assert "store" not in second["phases"]["train"]
    third = trial_in_a_new_process(tmp_path)
    assert first["status"] == second["status"] == third["status"] == "ok", third["error"]
    assert first["loss"] == second["loss"] == third["loss"]


def aged(path, seconds: float) -> None:
    """Marks `path` as last used `seconds` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_trim_cache_deletes_the_least_recently_used_files_first(tmp_path):
    cache = tmp_path / "cache"
    (cache / "executables").mkdir(parents=True)
    sizes = {"jit_a-cache": 400, "executables/b.xla": 300, "jit_c-cache": 200,
             "executables/d.xla": 100}  # fmt: skip
    for age, (name, size) in enumerate(sizes.items()):
        (cache / name).write_bytes(b"x" * size)
        aged(cache / name, 3600 * (10 - age))  # a is the oldest
    (cache / "executables" / "new.xla").write_bytes(b"x" * 1000)  # just written: kept
    outside = tmp_path / "outside"
    outside.write_bytes(b"x" * 50)
    aged(outside, 86400)
    (cache / "link-cache").symlink_to(outside)  # neither counted nor followed
    for name in ("notes.txt", "executables/notes.txt", "executables/jit_e-cache"):  # not ours
        (cache / name).write_bytes(b"x" * 5000)
        aged(cache / name, 86400)
    assert cache_size(cache) == CacheSize(5, 2000)
    assert trim_cache(cache, 1400) == CacheSize(2, 700)  # a and b
    assert sorted(p.name for p in cache.rglob("*") if p.is_file() and not p.is_symlink()) == [
        "d.xla", "jit_c-cache", "jit_e-cache", "new.xla", "notes.txt", "notes.txt"]  # fmt: skip
    assert trim_cache(cache, 0) == CacheSize(2, 300)  # all but the file in use
    assert cache_size(cache) == CacheSize(1, 1000)
    assert clear_cache(cache) == CacheSize(1, 1000) and cache_size(cache) == CacheSize(0, 0)
    assert outside.exists() and (cache / "link-cache").is_symlink()
    assert len([p for p in cache.rglob("*") if p.is_file() and not p.is_symlink()]) == 3


def test_a_loaded_program_counts_as_used(tmp_path):
    store = ExecutableStore(tmp_path)
    x = np.ones(4, np.float32)
    compiled = jax.jit(lambda x: x + 1).trace(x).lower().compile()
    assert store.save("plain", compiled, (x,))
    aged(store.path("plain"), 3600)
    assert store.load("plain", (x,), compiled.out_tree) is not None
    assert time.time() - store.path("plain").stat().st_mtime < 60


def test_a_capped_cache_is_trimmed_when_a_process_starts_and_as_it_compiles(tmp_path):
    first = trial_in_a_new_process(tmp_path)  # uncapped: fills the cache
    programs = cache_size(tmp_path)
    junk = tmp_path / "junk-cache"
    junk.write_bytes(b"x" * 100_000)
    aged(junk, 2 * 86400)
    for path in tmp_path.rglob("*"):
        if path != junk:
            aged(path, 3600)
    # at start: down to the programs, the least recently used (the junk) first; they still load
    second = trial_in_a_new_process(tmp_path, max_bytes=programs.bytes)
    assert not junk.exists() and cache_size(tmp_path) == programs
    assert set(second["phases"]["train"]) == {"load"} and second["loss"] == first["loss"]
    # after each fresh compile (here every one): all but what was used in the last minute goes
    stored = list((tmp_path / "executables").glob("*.xla"))
    for path in tmp_path.rglob("*"):
        aged(path, 3600)
    third = trial_in_a_new_process(tmp_path, max_bytes=1, trim_every=1, hidden=12)
    assert "trim" in third["phases"]["train"] and third["status"] == "ok"
    assert stored and not any(path.exists() for path in stored)  # the first trial's programs
    left = [p.stat() for p in tmp_path.rglob("*") if p.is_file()]
    assert left and all(time.time() - max(s.st_mtime, s.st_atime) < 600 for s in left)


ZEN3 = ["model name\t: AMD EPYC\n", "cpu family\t: 25\n", "model\t\t: 1\n",
        "flags\t\t: fpu sse4_2 avx avx2 fma\n"] * 2  # two processors, alike
ZEN4 = ["model name\t: AMD EPYC\n", "cpu family\t: 25\n", "model\t\t: 17\n",
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw\n"]


@pytest.mark.parametrize("cpuinfo, described", [
    (ZEN3, "AMD EPYC (family 25 model 1, AVX2)"),
    (ZEN4, "AMD EPYC (family 25 model 17, AVX-512)"),
    (["model name\t: ARMv8 Processor rev 1 (v8l)\n"], "ARMv8 Processor rev 1 (v8l)"),
])  # fmt: skip
def test_rows_tell_cpus_apart_that_share_a_model_name(cpuinfo, described):
    """Two virtual machines that both say "AMD EPYC" compile for other vector widths, and their
    trials end apart; a row's `cpu_model` (and so `cellsearch rerun`'s "what changed") names that."""
    assert describe_cpu(cpuinfo) == described
