"""The trainer: (cell, task, hyperparameters, seed, budget) -> one honest result row.

    result = train_trial(TrialSpec.from_preset("lstm", "arith", "quick", HParams(lr=1.0)))
    result.row()   # a flat JSON-ready dict: spec, metrics, status, timings, provenance

Speed comes from compiling ONE program per (cell, task, layers, H, batch, sequence length, steps per
call, dropout or not): the learning rate, clip, init scale and dropout rate are traced arguments,
so every hyperparameter setting reuses it, and each call runs `steps_per_call` SGD steps in a
`lax.scan`.
Programs are compiled ahead of time (so compile seconds are measured exactly) and cached.

The loss follows the paper's protocol (paper.md section 10): the negative log-likelihood is SUMMED
over the scored time steps of a sequence and AVERAGED over the batch; gradients are clipped to the
global norm `clip` and applied with plain SGD. A non-finite training loss stops the trial with
status `diverged`; an exception in the trial is status `error` with its message.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import pathlib
import platform
import subprocess
import time
import traceback
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cells import BASELINES, CellError, Graph, baseline, compile_cell, parse
from tasks.executables import (CODE_PACKAGES, ExecutableStore, cpu_model, package_versions,
                               persistent_cache_hits, source_digest, trim_cache)
from tasks.hparams import Budget, HParams, check_types, preset
from tasks.model import RNNModel, argmax_hits, step_losses, zero_carry
from tasks.registry import STATS, Task, is_builtin, make_task
from tasks.synthetic import Batch
from tasks.usercode import class_source


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """Everything that determines a trial.

    Attributes:
      cell: a baseline name or cell text.
      task: a task name.
      hparams: the sampled hyperparameters.
      budget: steps and sizes.
      seed: seeds the initialisation, dropout and the training data of synthetic tasks.
      task_options: the task's options as sorted (name, value) pairs.
    """

    cell: str
    task: str
    hparams: HParams = HParams()
    budget: Budget = Budget(steps=100, hidden=32, batch=32)
    seed: int = 0
    task_options: tuple[tuple[str, object], ...] = ()

    @classmethod
    def from_preset(
        cls,
        cell: str,
        task: str,
        preset_name: str = "quick",
        hparams: HParams | None = None,
        seed: int = 0,
        budget_overrides: dict | None = None,
        task_options: dict | None = None,
    ) -> "TrialSpec":
        """A spec with the budget and task options of a preset, then the given overrides."""
        chosen = preset(preset_name, task)
        budget = dataclasses.replace(chosen.budget, **(budget_overrides or {}))
        options = {**chosen.task_options, **(task_options or {})}
        hparams = hparams or chosen.hparams or HParams()
        return cls(cell, task, hparams, budget, seed, tuple(sorted(options.items())))

    @classmethod
    def from_row(cls, row: dict) -> "TrialSpec":
        """The spec of a stored trial row (`TrialResult.row`): what trains it again.

        Raises:
          KeyError: the row lacks a field the spec needs (its name is the message).
        """
        return cls(
            row["cell"] if row.get("cell") in BASELINES else row["cell_text"], row["task"],
            HParams(**{name: row[name] for name in HParams._fields}),
            Budget(**{f.name: row[f"budget_{f.name}"] for f in dataclasses.fields(Budget)}),
            row["seed"], tuple(sorted((row.get("task_options") or {}).items())),
        )  # fmt: skip

    def graph(self) -> Graph:
        if self.cell in BASELINES:
            return baseline(self.cell)
        if "=" not in self.cell:  # a mistyped name, which would read as a line of cell text
            raise ValueError(f"'{self.cell}' is neither a baseline cell ({', '.join(BASELINES)}) "
                             "nor cell text")  # fmt: skip
        return parse(self.cell)

    def make_task(self) -> Task:
        return make_task(self.task, **dict(self.task_options))

    def program_shape(self) -> tuple:
        """What trials must share to be trained as one program (`train_settings`)."""
        return (self.cell, self.task, self.task_options, self.budget, self.hparams.layers,
                self.hparams.dropout > 0)  # fmt: skip

    def program(self, task: Task) -> "Program":
        """The cached `Program` this trial trains with (`task` is `self.make_task()`)."""
        budget = self.budget
        return program(self.graph(), task, self.hparams.layers, budget.hidden, budget.batch,
                       task.sequence_length(budget.seq_len), budget.steps_per_call,
                       self.hparams.dropout > 0)  # fmt: skip

    def validate(self) -> None:
        """Raises ValueError/CellError naming the first problem."""
        check_types(self)
        self.graph()
        task = self.make_task()
        self.hparams.validate()
        self.budget.validate()
        task.sequence_length(self.budget.seq_len)


@dataclasses.dataclass
class TrialResult:
    """The outcome of one trial (see `row()` for the stored form)."""

    spec: TrialSpec
    status: str  # "ok", "diverged" or "error"
    valid: dict[str, float] = dataclasses.field(default_factory=dict)
    test: dict[str, float] = dataclasses.field(default_factory=dict)
    score: float | None = None  # the task's higher-is-better score on validation
    steps_done: int = 0
    train_loss: float | None = None  # mean NLL per scored step over the last call
    loss_curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    eval_seconds: float = 0.0
    error: str | None = None
    sequence_length: int | None = None  # steps per training sequence, as the task fixed it
    provenance: dict = dataclasses.field(default_factory=dict)

    def row(self) -> dict:
        """A flat JSON-ready dict: non-finite numbers become None (JSON has no NaN)."""
        spec = self.spec
        graph = None
        try:
            graph = spec.graph()
        except (CellError, ValueError):
            pass
        row = {
            "cell": spec.cell if spec.cell in BASELINES else None,
            "cell_text": graph.text() if graph else spec.cell,
            "task": spec.task,
            "task_options": dict(spec.task_options),
            "seed": spec.seed,
            "sequence_length": self.sequence_length,
            **{k: v for k, v in spec.hparams._asdict().items()},
            **{f"budget_{k}": v for k, v in dataclasses.asdict(spec.budget).items()},
            "status": self.status,
            "score": self.score,
            "steps_done": self.steps_done,
            "train_loss": self.train_loss,
            **{f"valid_{k}": v for k, v in self.valid.items()},
            **{f"test_{k}": v for k, v in self.test.items()},
            "train_seconds": round(self.train_seconds, 3),
            "compile_seconds": round(self.compile_seconds, 3),
            "eval_seconds": round(self.eval_seconds, 3),
            "steps_per_second": round(self.steps_done / self.train_seconds, 2)
            if self.train_seconds > 0 else None,
            "loss_curve": self.loss_curve,
            "error": self.error,
            **self.provenance,
        }  # fmt: skip
        return _json_safe(row)


def _json_safe(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------------------- the program
# On a CPU, programs are compiled with LLVM at -O1 instead of XLA's -O3, except train programs
# from H = 128 on. Evaluation at -O1 runs 1.6-1.9x faster on arith and xml (the same on ptb and jsb);
# train steps below H = 128 run as fast at -O1 and compile 20-30% faster, while at H = 128 and 200
# they were about 5% slower (benchmarks/README.md, "Compilation").
O3_TRAIN_FROM_HIDDEN = 128


def compiler_options(name: str, hidden: int) -> dict | None:
    """XLA options for program `name` ("train", "eval", or their K-settings forms) at width H."""
    if jax.default_backend() != "cpu" or (name.startswith("train") and hidden >= O3_TRAIN_FROM_HIDDEN):
        return None
    return {"xla_backend_optimization_level": 1}


# Leaves with fewer elements than this have their squares summed together: XLA's CPU backend gives a
# small sum-of-squares 3-4 LLVM-compiled kernels (a tree reduction) at about 8-30 ms of compile
# each, while from 4,096 elements on it hands the sum to its YNNPACK library (under 1 ms).
_SMALL_LEAF = 4096


def global_norm(tree) -> jax.Array:
    """The L2 norm of all leaves together (`optax.tree.norm`), in fewer compiled kernels.

    Args:
      tree: a pytree of float arrays.

    Returns:
      The norm, a scalar.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    squares = [jnp.sum(leaf * leaf) for leaf in leaves if leaf.size >= _SMALL_LEAF]
    small = [leaf.ravel() for leaf in leaves if leaf.size < _SMALL_LEAF]
    if small:
        together = jnp.concatenate(small)
        squares.append(jnp.sum(together * together))
    return jnp.sqrt(sum(squares))


def clip_by_global_norm(max_norm) -> optax.GradientTransformation:
    """`optax.clip_by_global_norm`, with the norm from `global_norm`.

    Args:
      max_norm: the largest global norm an update may have (may be traced).

    Returns:
      The transformation (stateless).
    """

    def update(updates, state, params=None):
        norm = global_norm(updates)
        within = norm < max_norm
        clipped = jax.tree_util.tree_map(
            lambda t: jax.lax.select(within, t, (t / norm) * max_norm), updates
        )
        return clipped, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class Program:
    """The init, train and eval functions of one (cell, task, shape) combination (train and eval
    compiled ahead of time on first use)."""

    def __init__(self, graph: Graph, task: Task, layers: int, hidden: int, batch: int,
                 seq_len: int, steps_per_call: int, has_dropout: bool = False):  # fmt: skip
        cell = compile_cell(graph)
        self.graph, self.task, self.layers, self.hidden, self.batch = graph, task, layers, hidden, batch
        self.seq_len, self.steps_per_call, self.has_dropout = seq_len, steps_per_call, has_dropout
        tokens = task.tokens

        def build(key, init_scale):
            return RNNModel(cell, n_inputs=task.n_inputs, n_outputs=task.n_outputs, tokens=tokens,
                            layers=layers, hidden=hidden, init_scale=init_scale,
                            rngs=nnx.Rngs(params=key))  # fmt: skip

        graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(jax.random.key(0), 1.0)))

        def init(key, init_scale):
            return nnx.state(build(key, init_scale), nnx.Param)

        # Run eagerly: its few ops are compiled once per shape and process and then shared by
        # every cell, where a jitted init cost 0.4-0.9 s of XLA compile per new cell.
        self.init = init

        def forward(params, carry, batch: Batch, dropout, key):
            model = nnx.merge(graphdef, params)
            zeros = zero_carry(layers, batch.mask.shape[0], hidden)
            carry = jax.tree_util.tree_map(lambda z, c: jnp.where(batch.reset, z, c), zeros, carry)
            carry, logits = model(carry, batch.inputs, dropout, key)
            return carry, logits

        def loss_fn(params, carry, batch, rate, key):
            # without dropout the network has no dropout code at all (and may fold its embedding)
            carry, logits = forward(params, carry, batch, rate if has_dropout else None, key)
            targets, mask, _ = _time_major(batch)
            nll = step_losses(logits, targets, tokens) * mask
            objective = nll.sum() / mask.shape[1]  # summed over time, mean over batch
            return objective, (carry, nll.sum() / jnp.maximum(mask.sum(), 1.0))

        def train(params, carry, batches: Batch, lr, clip, rate, key):
            tx = optax.chain(clip_by_global_norm(clip), optax.sgd(lr))
            opt_state = tx.init(params)  # SGD without momentum: the state is empty

            def one_step(state, inputs):
                params, carry = state
                batch, k = inputs
                grads, (carry, loss) = jax.grad(loss_fn, has_aux=True)(
                    params, carry, batch, rate, k
                )
                updates, _ = tx.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                return (params, jax.lax.stop_gradient(carry)), loss

            keys = jax.random.split(key, steps_per_call)
            (params, carry), losses = jax.lax.scan(one_step, (params, carry), (batches, keys))
            return params, carry, losses

        def evaluate_one(carry, batch: Batch, params):
            carry, logits = forward(params, carry, batch, None, jax.random.key(0))
            targets, mask, aux_mask = _time_major(batch)
            nll = step_losses(logits, targets, tokens) * mask
            stats = {name: jnp.float32(0.0) for name in STATS}
            stats["nll"], stats["count"] = nll.sum(), mask.sum()
            if tokens:
                hit = argmax_hits(logits, targets).astype(jnp.float32)
                scored = mask.sum(0) > 0  # per sequence: time is axis 0
                stats["correct"] = (hit * mask).sum()
                stats["aux_correct"] = (hit * aux_mask).sum()
                stats["aux_count"] = aux_mask.sum()
                exact = ((hit * mask).sum(0) == mask.sum(0)) & scored
                stats["seq_exact"] = exact.sum().astype(jnp.float32)
                stats["seqs"] = scored.sum().astype(jnp.float32)
            return carry, stats

        def evaluate(params, carry, batches: Batch):
            # the `STATS` as one running vector: stacking and summing each stat apart cost XLA a
            # kernel each, and each kernel 8-30 ms of compile
            def one(state, batch):
                carry, totals = state
                carry, stats = evaluate_one(carry, batch, params)
                return (carry, totals + jnp.stack([stats[name] for name in STATS])), None

            (carry, totals), _ = jax.lax.scan(one, (carry, jnp.zeros(len(STATS))), batches)
            return carry, totals

        self._functions = {"train": train, "eval": evaluate,
                           # K settings as lanes of one program (`train_settings`)
                           "train_k": jax.vmap(train),
                           "eval_k": jax.vmap(evaluate, in_axes=(0, 0, None))}  # fmt: skip
        # each function's outputs as a tree of its arguments' parts: loading a stored program
        # needs their structure, which is otherwise only known by tracing
        self._outputs = {"train": lambda params, carry, *_: (params, carry, 0),
                         "eval": lambda params, carry, *_: (carry, 0)}  # fmt: skip
        self._outputs |= {"train_k": self._outputs["train"], "eval_k": self._outputs["eval"]}
        self._compiled: dict[str, Callable] = {}
        # seconds spent turning each function ("train", "eval", ...) into a program, by phase:
        # "load" where the program came whole from the executable store (`use_compilation_cache`);
        # otherwise looking it up there ("lookup"), tracing to a jaxpr, lowering to StableHLO,
        # XLA's compile (or reading it from JAX's persistent cache) and, after a compile, storing
        # it ("store") and, every `TRIM_EVERY` compiles of a capped cache, trimming it ("trim")
        self.compile_phases: dict[str, dict[str, float]] = {}

    @property
    def compile_seconds(self) -> float:
        """Seconds spent so far compiling this program's functions, all functions and phases."""
        return sum(sum(phases.values()) for phases in self.compile_phases.values())

    def call(self, name: str, *args):
        """Calls function `name`, compiling it ahead of time on first use (timed)."""
        if name not in self._compiled:
            self._compiled[name] = self._compile(name, args)
        return self._compiled[name](*args)

    def _compile(self, name: str, args: tuple) -> jax.stages.Compiled:
        options = compiler_options(name, self.hidden)
        store, phases = _cache.store if _cache else None, {}
        start = time.perf_counter()
        if store is not None:
            key = store.key(self._description(name, options), args)
            out_tree = jax.tree_util.tree_structure(self._outputs[name](*args))
            compiled = store.load(key, args, out_tree)
            if compiled is not None:
                self.compile_phases[name] = {"load": time.perf_counter() - start}
                return compiled
            phases["lookup"], start = time.perf_counter() - start, time.perf_counter()
        traced = jax.jit(self._functions[name]).trace(*args)
        phases["trace"], start = time.perf_counter() - start, time.perf_counter()
        lowered = traced.lower()
        phases["lower"], start = time.perf_counter() - start, time.perf_counter()
        cache_hits = persistent_cache_hits()
        compiled = lowered.compile(compiler_options=options)
        phases["compile"], start = time.perf_counter() - start, time.perf_counter()
        if _cache is not None and persistent_cache_hits() == cache_hits:  # a fresh compile
            if store is not None:
                store.save(key, compiled, args)
                phases["store"], start = time.perf_counter() - start, time.perf_counter()
            if _cache.compiled():
                phases["trim"] = time.perf_counter() - start
        self.compile_phases[name] = phases
        return compiled

    def _description(self, name: str, options: dict | None) -> dict:
        """What decides function `name`'s program, besides its arguments' types and the
        environment (`tasks.executables`)."""
        description = {"function": name, "cell": self.graph.text(), "task": repr(self.task),
                       "layers": self.layers, "hidden": self.hidden, "batch": self.batch,
                       "seq_len": self.seq_len, "steps_per_call": self.steps_per_call,
                       "compiler_options": options}  # fmt: skip
        if not is_builtin(self.task):  # its source is not in the store's key: the file's digest
            description["task_source"] = class_source(type(self.task))["sha256"]
        # evaluation never drops out, so a dropout trial loads the program its twin without
        # dropout stored (or stores the one that twin will load) instead of compiling it again
        if name.startswith("train"):
            description["has_dropout"] = self.has_dropout
        return description


# fresh compiles between two trims of a capped cache (each trim lists the directory)
TRIM_EVERY = 256


@dataclasses.dataclass
class _CompilationCache:
    """The directory `use_compilation_cache` set up for this process."""

    directory: pathlib.Path
    store: ExecutableStore | None
    max_bytes: int | None
    compiles: int = 0

    def compiled(self) -> bool:
        """Counts a fresh compile (written to the caches); every `TRIM_EVERY`th trims the
        directory. Returns whether it did."""
        self.compiles += 1
        if self.max_bytes is None or self.compiles % TRIM_EVERY:
            return False
        trim_cache(self.directory, self.max_bytes)
        return True


_cache: _CompilationCache | None = None


def use_compilation_cache(
    directory: str | os.PathLike, executables: bool = True, max_bytes: int | None = None
) -> None:
    """Keeps this process's compiled programs in `directory`, for the processes after it.

    Two caches: JAX's persistent compilation cache, keyed by the lowered program, and in
    `directory/executables` the store that loads a program without tracing it (0.04 s instead of
    0.12-0.14 s for a train program on a CPU; `tasks.executables`). Ray workers use both.

    Args:
      directory: a directory this process may write (created if missing).
      executables: whether to use the executable store too (False: JAX's cache alone, as
        `benchmarks/compile_and_screen.py` compares).
      max_bytes: if given, the directory is trimmed to this size now and after every
        `TRIM_EVERY` programs this process compiles, least recently used files first
        (`tasks.executables.trim_cache`); None lets it grow.
    """
    global _cache
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    directory = pathlib.Path(directory)
    store = ExecutableStore(directory / "executables") if executables else None
    _cache = _CompilationCache(directory, store, max_bytes)
    if max_bytes is not None:
        trim_cache(directory, max_bytes)


@functools.lru_cache(maxsize=32)
def program(graph: Graph, task: Task, layers: int, hidden: int, batch: int, seq_len: int,
            steps_per_call: int, has_dropout: bool = False) -> Program:  # fmt: skip
    """The cached `Program` for one combination.

    The learning rate, clip, init scale and dropout rate are not part of the key; only whether
    there is dropout at all is.
    """
    return Program(graph, task, layers, hidden, batch, seq_len, steps_per_call, has_dropout)


# ------------------------------------------------------------------------------- the trial
def train_trial(
    spec: TrialSpec, progress: Callable[[int, float], None] | None = None
) -> TrialResult:
    """Trains and evaluates one trial; never raises for a bad trial (status `error` instead).

    Args:
      spec: the trial.
      progress: called as progress(steps_done, train_loss) after each jitted call.

    Returns:
      The `TrialResult`; `score` is the task's validation score (None unless status is `ok`).
    """
    result = TrialResult(spec, status="ok")
    try:
        spec.validate()
        task = spec.make_task()
        result.provenance = provenance(task)
        _run(spec, task, result, progress)
    except Exception as error:  # a trial's failure is a result, not a crash of the search
        result.status = "error"
        result.error = f"{type(error).__name__}: {error}".splitlines()[0][:500]
        result.provenance.setdefault("traceback", traceback.format_exc(limit=8)[-2000:])
    return result


def _run(spec: TrialSpec, task: Task, result: TrialResult, progress) -> None:
    budget, hp = spec.budget, spec.hparams
    seq_len = result.sequence_length = task.sequence_length(budget.seq_len)
    k = budget.steps_per_call
    prog = spec.program(task)
    compile_before = prog.compile_seconds
    f32 = np.float32
    key_init, key_train = jax.random.split(jax.random.key(spec.seed))
    start = time.perf_counter()
    params = prog.init(key_init, f32(hp.init_scale))
    carry = zero_carry(hp.layers, budget.batch, budget.hidden)
    batches = task.train_batches(budget.batch, seq_len, spec.seed)
    chunk = _stack([next(batches) for _ in range(k)])
    step = 0
    while step < budget.steps:
        lr = budget.lr_at(hp.lr, step)
        params, carry, losses = prog.call(
            "train", params, carry, chunk, f32(lr), f32(hp.clip), f32(hp.dropout),
            jax.random.fold_in(key_train, step),
        )  # fmt: skip
        if step + k < budget.steps:  # prepare the next chunk while the device computes
            chunk = _stack([next(batches) for _ in range(k)])
        if not _record_losses(result, np.asarray(losses), step):
            break
        step += k
        if progress:
            progress(step, result.train_loss)
    result.train_seconds = time.perf_counter() - start - (prog.compile_seconds - compile_before)
    if result.status == "ok":
        eval_start, compile_start = time.perf_counter(), prog.compile_seconds
        metrics = {split: _evaluate(prog, task, params, budget, seq_len, split)
                   for split in ("valid", "test")}  # fmt: skip
        _score(result, task, metrics["valid"], metrics["test"])
        result.eval_seconds = (
            time.perf_counter() - eval_start - (prog.compile_seconds - compile_start)
        )
    result.compile_seconds = prog.compile_seconds - compile_before


def _record_losses(result: TrialResult, losses: np.ndarray, step: int) -> bool:
    """Books one call's per-step losses (from `step` on); False once a loss is not finite."""
    finite = np.isfinite(losses)
    if not finite.all():
        first_bad = int(np.argmin(finite))
        if first_bad:  # keep what was measured before the loss stopped being finite
            result.train_loss = float(losses[:first_bad].mean())
            result.loss_curve.append((step + first_bad, round(result.train_loss, 5)))
        result.steps_done, result.status = step + first_bad, "diverged"
        return False
    result.steps_done = step + len(losses)
    result.train_loss = float(losses.mean())
    result.loss_curve.append((result.steps_done, round(result.train_loss, 5)))
    return True


def _score(result: TrialResult, task: Task, valid: dict, test: dict) -> None:
    result.valid, result.test = valid, test
    if not all(math.isfinite(v) for v in valid.values()):
        result.status = "diverged"
    else:
        result.score = float(task.score(valid))


def _evaluate(prog: Program, task: Task, params, budget: Budget, seq_len: int, split: str,
              lanes: int | None = None) -> dict | list[dict]:  # fmt: skip
    """The task's metrics on a split (`task.metrics` of `_eval_totals`).

    With `lanes`, `params` holds that many settings (`train_settings`) and a list of metric dicts
    comes back, one per setting.
    """
    summed = _eval_totals(prog, task, params, budget, seq_len, split, lanes)
    if lanes is None:
        return task.metrics({name: float(v) for name, v in summed.items()})
    return [task.metrics({name: float(v[i]) for name, v in summed.items()}) for i in range(lanes)]


def _eval_totals(prog: Program, task: Task, params, budget: Budget, seq_len: int, split: str,
                 lanes: int | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Sums the `STATS` of `task.eval_batches`, `steps_per_call` batches per jitted call."""
    carry = zero_carry(prog.layers, budget.batch, budget.hidden)
    if lanes is not None:
        carry = jax.tree_util.tree_map(lambda z: jnp.broadcast_to(z, (lanes, *z.shape)), carry)
    totals, group = [], []
    batches = task.eval_batches(split, budget.batch, seq_len, budget.eval_sequences)
    for batch in itertools.chain(batches, [None]):
        if batch is not None:
            group.append(_pad_rows(batch, budget.batch))
        if group and (len(group) == prog.steps_per_call or batch is None):
            # an unscored, state-keeping filler completes the last group without a new shape
            filler = Batch(*(np.zeros_like(a) for a in group[0][:4]), reset=False)
            group += [filler] * (prog.steps_per_call - len(group))
            name = "eval" if lanes is None else "eval_k"
            carry, stats = prog.call(name, params, carry, _stack(group))
            totals.append(np.asarray(stats, np.float64))
            group = []
    summed = np.sum(totals, axis=0)  # (len(STATS),), or (lanes, len(STATS))
    return {name: summed[..., i] for i, name in enumerate(STATS)}


# ---------------------------------------------------------------------- settings as one program
def train_settings(specs: Sequence[TrialSpec]) -> list[TrialResult]:
    """Trains K hyperparameter settings of one cell as ONE vmapped program (for GPUs).

    Each setting is a lane of the program: its own parameters, data stream (from its seed),
    learning rate, clip, init scale and dropout rate, so its row is what `train_trial` gives up
    to float rounding. A lane that diverges is recorded as diverged at its own step while the
    others go on. On a CPU this is slower than one trial after another (the vmapped backward scan;
    ../shared/docs/perf-notes.md); a GPU is where it pays (benchmarks/vmap_settings.py).

    Args:
      specs: trials sharing the cell, task, task options, budget, layer count and whether they
        use dropout.

    Returns:
      One `TrialResult` per spec, in order. `train_seconds` and `eval_seconds` are the whole
      group's (the lanes ran together); the row's `vmapped_settings` says K.
    """
    results = [TrialResult(spec, status="ok") for spec in specs]
    try:
        if not specs:
            return []
        for i, spec in enumerate(specs):
            if spec.program_shape() != specs[0].program_shape():
                raise ValueError(f"settings {i} and 0 differ in cell, task, budget, layers or "
                                 f"dropout use; train_settings needs them equal")  # fmt: skip
            spec.validate()
        task = specs[0].make_task()
        shared = {**provenance(task), "vmapped_settings": len(specs)}
        for result in results:
            result.provenance = dict(shared)
        _run_settings(specs, task, results)
    except Exception as error:  # as in train_trial: a failure is every lane's result
        for result in results:
            result.status, result.score = "error", None
            result.error = f"{type(error).__name__}: {error}".splitlines()[0][:500]
    return results


def _run_settings(specs: Sequence[TrialSpec], task: Task, results: list[TrialResult]) -> None:
    budget, layers, lanes = specs[0].budget, specs[0].hparams.layers, len(specs)
    seq_len = task.sequence_length(budget.seq_len)
    k = budget.steps_per_call
    prog = specs[0].program(task)
    compile_before = prog.compile_seconds
    lane = lambda values: np.asarray(values, np.float32)  # noqa: E731
    keys = [jax.random.split(jax.random.key(spec.seed)) for spec in specs]
    start = time.perf_counter()
    params = jax.vmap(prog.init)(jnp.stack([key[0] for key in keys]),
                                 lane([s.hparams.init_scale for s in specs]))  # fmt: skip
    carry = jax.tree_util.tree_map(lambda z: jnp.broadcast_to(z, (lanes, *z.shape)),
                                   zero_carry(layers, budget.batch, budget.hidden))  # fmt: skip
    streams = [task.train_batches(budget.batch, seq_len, spec.seed) for spec in specs]

    def next_chunk():
        return _stack([_stack([next(b) for _ in range(k)]) for b in streams])

    chunk, step, alive = next_chunk(), 0, [True] * lanes
    while step < budget.steps and any(alive):
        params, carry, losses = prog.call(
            "train_k", params, carry, chunk,
            lane([budget.lr_at(s.hparams.lr, step) for s in specs]),
            lane([s.hparams.clip for s in specs]), lane([s.hparams.dropout for s in specs]),
            jnp.stack([jax.random.fold_in(key[1], step) for key in keys]),
        )  # fmt: skip
        if step + k < budget.steps:
            chunk = next_chunk()
        losses = np.asarray(losses)
        for i, result in enumerate(results):
            alive[i] = alive[i] and _record_losses(result, losses[i], step)
        step += k
    train_seconds = time.perf_counter() - start - (prog.compile_seconds - compile_before)
    eval_start, compile_start = time.perf_counter(), prog.compile_seconds
    if any(alive):
        metrics = {split: _evaluate(prog, task, params, budget, seq_len, split, lanes)
                   for split in ("valid", "test")}  # fmt: skip
        for i, result in enumerate(results):
            if alive[i]:
                _score(result, task, metrics["valid"][i], metrics["test"][i])
    eval_seconds = time.perf_counter() - eval_start - (prog.compile_seconds - compile_start)
    for result in results:
        result.sequence_length = seq_len
        result.train_seconds, result.eval_seconds = train_seconds, eval_seconds
        result.compile_seconds = prog.compile_seconds - compile_before


def _time_major(batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The batch's targets, mask and aux mask with time first, like the model's logits.

    Swapping these small arrays costs far less than swapping the logits (and their gradient).
    """
    return jnp.swapaxes(batch.targets, 0, 1), batch.mask.T, batch.aux_mask.T


def _stack(batches: list[Batch]) -> Batch:
    return Batch(*(np.stack(parts) for parts in zip(*batches)))


def _pad_rows(batch: Batch, rows: int) -> Batch:
    """Pads a short final batch with unscored rows, so evaluation never changes shape."""
    missing = rows - batch.mask.shape[0]
    if missing == 0:
        return batch
    pad = lambda a: np.concatenate([a, np.zeros((missing, *a.shape[1:]), a.dtype)])  # noqa: E731
    return Batch(*(pad(a) for a in batch[:4]), reset=batch.reset)


# ------------------------------------------------------------------------------ provenance
@functools.cache
def code_version() -> str:
    """Which code a row comes from: the git commit of cellsearch's checkout (`+dirty` with changes).

    Installed from a wheel there is no checkout of cellsearch: `git` run there would find whatever
    repository holds the environment (a project's `.venv`) and name its commit. The version is
    then the package's, with a digest of its source (`cellsearch-0.1.0+src.1a2b3c4d5e6f`).
    """
    root = pathlib.Path(__file__).resolve().parents[1]

    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()  # fmt: skip

    try:
        if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() == root:
            dirty = git("status", "--porcelain", "--untracked-files=no")
            return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"cellsearch-{package_versions()['cellsearch']}+src.{code_digest()[:12]}"


@functools.cache
def code_digest() -> str:
    """A sha256 of all of cellsearch's Python source: equal exactly when two installs run the same
    code (a search's workers must; `search.executor` checks it)."""
    return source_digest(*CODE_PACKAGES)


def provenance(task: Task) -> dict:
    """What a row needs to be reproduced, besides its spec (and for a task of your own, whose
    code `code_version` does not cover, `task_source`: its class, file and the file's SHA-256)."""
    own = {} if is_builtin(task) else {"task_source": class_source(type(task))}
    return {
        "data_checksum": task.data_checksum(),
        "code_version": code_version(),
        "versions": {**package_versions(), "python": platform.python_version()},
        "device": jax.devices()[0].device_kind,
        # Both change the numbers on a GPU: TF32 matmuls by default, and reductions that differ
        # between two runs of one program unless --xla_gpu_deterministic_ops=true.
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
        "cpu_threads": cpu_threads(),
        "cpu_model": cpu_model(),
        **own,
    }


@functools.cache
def cpu_threads() -> int:
    """The cores this process may run on, as first asked (by its first trial's row): XLA's CPU backend
    splits work across that many threads, and the numbers depend on it. The same trial trained
    on 1 and on 2 cores ends apart (a GRU on arith at lr 2: score 0.211 and 0.143 after 300
    steps), while reruns on the same count are exact; a search's local workers run on 1."""
    return len(os.sched_getaffinity(0))
