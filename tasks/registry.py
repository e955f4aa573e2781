"""The task registry: what each task feeds the network, how it is scored.

`TASKS` maps a name to a task class; `make_task(name, **options)` builds one, and `task_class(name)`
also finds a task of your own, a `Task` subclass named "MODULE:CLASS" (see `task_class`). A task produces
batches (`train_batches`, `eval_batches`), turns summed evaluation statistics into named metrics,
and defines ONE higher-is-better `score` that the search compares (documented on each class):

| task | score |
|---|---|
| memorize, arith | per-character accuracy on the answer |
| xml | next-character accuracy on every character |
| ptb | exp(-NLL per word) = 1 / perplexity |
| jsb, nottingham, musedata, piano | exp(-NLL per frame) |
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from typing import ClassVar, Iterator

import numpy as np

from tasks import datasets
from tasks.hparams import Budget, check_types
from tasks.synthetic import (
    ArithOptions,
    Batch,
    MemorizeOptions,
    XmlOptions,
    arith_batch,
    memorize_batch,
    xml_batch,
)
from tasks.usercode import named_class

# a fixed seed per evaluation split: every trial of a synthetic task is scored on the same data
EVAL_SEEDS = {"valid": 10_001, "test": 10_002}
STATS = ("nll", "count", "correct", "aux_correct", "aux_count", "seq_exact", "seqs")


def _sequence_accuracy(totals: dict[str, float]) -> dict[str, float]:
    return {"sequence_accuracy": totals["seq_exact"] / max(totals["seqs"], 1.0)}


class Task:
    """Base class; subclasses are frozen dataclasses whose fields are the task's options."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    tokens: ClassVar[bool] = True  # inputs are token ids (else 88-key frames, sigmoid outputs)
    score_name: ClassVar[str] = "accuracy"
    # a task of your own: its budget at each preset it runs at (the built-in tasks' are in
    # `tasks.PRESETS`), e.g. {"quick": Budget(steps=300, hidden=32, batch=32)}
    budgets: ClassVar[dict[str, Budget]] = {}

    @property
    def n_inputs(self) -> int:
        raise NotImplementedError

    @property
    def n_outputs(self) -> int:
        return self.n_inputs

    def sequence_length(self, seq_len: int) -> int:
        """Steps per training sequence; fixed by the task's options for prompt/answer tasks."""
        if seq_len < 1:
            raise ValueError(f"task {self.name} needs seq_len >= 1 (the BPTT length), got {seq_len}")
        return seq_len

    def train_batches(self, batch: int, seq_len: int, seed: int) -> Iterator[Batch]:
        raise NotImplementedError

    def eval_batches(self, split: str, batch: int, seq_len: int, sequences: int) -> Iterator[Batch]:
        raise NotImplementedError

    def data_checksum(self) -> str:
        """Identifies the data: sha256 of the files, or the generator version and options."""
        raise NotImplementedError

    def metrics(self, totals: dict[str, float]) -> dict[str, float]:
        count = max(totals["count"], 1.0)
        return {"nll": totals["nll"] / count, "accuracy": totals["correct"] / count}

    def score(self, metrics: dict[str, float]) -> float:
        return metrics[self.score_name]


class Generated(Task):
    """A synthetic task: batches come from `generate(rng, n, seq_len)` with a seeded generator.

    Training data follows the trial's seed; validation and test sets use fixed seeds, so every
    trial is scored on the same sequences. `generator_version` changes whenever the same seed
    gives other data; it is part of `data_checksum`, so rows say which data they saw.
    """

    generator_version: ClassVar[int] = 1

    @property
    def n_inputs(self) -> int:
        return len(self.alphabet)

    def data_checksum(self) -> str:
        fields = ",".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        digest = hashlib.sha256(fields.encode()).hexdigest()[:16]
        return f"synthetic:{self.name}:v{self.generator_version}:{digest}"

    def generate(self, rng: np.random.Generator, n: int, seq_len: int) -> Batch:
        raise NotImplementedError

    def train_batches(self, batch, seq_len, seed):
        rng = np.random.default_rng(seed)
        while True:
            yield self.generate(rng, batch, seq_len)

    def eval_batches(self, split, batch, seq_len, sequences):
        rng = np.random.default_rng(EVAL_SEEDS[split])
        for start in range(0, sequences, batch):
            yield self.generate(rng, min(batch, sequences - start), seq_len)


@dataclasses.dataclass(frozen=True)
class Memorize(MemorizeOptions, Generated):
    """Read 5 symbols of 26, then reproduce them in order (the paper's screening task).

    Score: per-symbol accuracy of the reproduction. Also reported: `sequence_accuracy` (all 5 right).
    """

    name: ClassVar[str] = "memorize"
    summary: ClassVar[str] = "read 5 symbols of 26, reproduce them in order"

    def sequence_length(self, seq_len: int) -> int:
        return self.length

    def generate(self, rng, n, seq_len):
        return memorize_batch(rng, n, self)

    def metrics(self, totals):
        return {**super().metrics(totals), **_sequence_accuracy(totals)}


@dataclasses.dataclass(frozen=True)
class Arith(ArithOptions, Generated):
    """Add or subtract two numbers read character by character among distractors.

    Score: per-character accuracy on the answer (its end token included). Also reported:
    `sequence_accuracy` (the whole answer right).
    """

    name: ClassVar[str] = "arith"
    generator_version: ClassVar[int] = 2  # 2: drawn for the whole batch at once; a uniform cap
    summary: ClassVar[str] = "a+b or a-b with distractor characters, answer after '='"

    def sequence_length(self, seq_len: int) -> int:
        return self.length

    def generate(self, rng, n, seq_len):
        return arith_batch(rng, n, self)

    def metrics(self, totals):
        return {**super().metrics(totals), **_sequence_accuracy(totals)}


@dataclasses.dataclass(frozen=True)
class Xml(XmlOptions, Generated):
    """Predict the next character of a stream of random nested XML tags.

    Score: next-character accuracy over all characters. Also reported: `closing_accuracy`, the
    accuracy on closing-tag names and their `>`, the characters that need memory of open tags.
    """

    name: ClassVar[str] = "xml"
    generator_version: ClassVar[int] = 2  # 2: random numbers drawn in blocks (same distribution)
    summary: ClassVar[str] = "next character of random nested tags"

    def generate(self, rng, n, seq_len):
        return xml_batch(rng, n, seq_len, self)

    def metrics(self, totals):
        out = super().metrics(totals)
        out["closing_accuracy"] = totals["aux_correct"] / max(totals["aux_count"], 1.0)
        return out


@dataclasses.dataclass(frozen=True)
class Ptb(Task):
    """Penn Treebank word-level language model (10k words, `<eos>` per line).

    Truncated backpropagation through time with the state carried between consecutive batches
    (Zaremba et al. 2014): the training text is cut into `batch` parallel streams. Evaluation runs
    over the whole split the same way. Score: exp(-NLL per word) = 1/perplexity. Also reported:
    `perplexity`, `nll` (nats per word) and next-word `accuracy`.
    """

    name: ClassVar[str] = "ptb"
    summary: ClassVar[str] = "Penn Treebank word-level language model"
    score_name: ClassVar[str] = "inverse_perplexity"

    @property
    def n_inputs(self) -> int:
        return len(datasets.load_ptb().vocab)

    def train_batches(self, batch, seq_len, seed):
        # the order is Zaremba's: deterministic; the seed changes the initialisation and dropout
        while True:
            yield from _stream_batches(datasets.load_ptb().splits["train"], batch, seq_len)

    def eval_batches(self, split, batch, seq_len, sequences):
        """The split as `batch` streams; `sequences` > 0 stops after that many chunks."""
        chunks = _stream_batches(datasets.load_ptb().splits[split], batch, seq_len)
        yield from itertools.islice(chunks, sequences or None)

    def data_checksum(self) -> str:
        return _combined(f"ptb.{split}.txt" for split in datasets.SPLITS)

    def metrics(self, totals):
        out = super().metrics(totals)
        out["perplexity"] = math.exp(out["nll"]) if out["nll"] < 700 else math.inf
        out["inverse_perplexity"] = math.exp(-out["nll"])
        return out


def _stream_batches(ids: np.ndarray, batch: int, seq_len: int) -> Iterator[Batch]:
    """Cuts a token stream into `batch` rows and walks them `seq_len` tokens at a time."""
    per_row = (len(ids) - 1) // batch
    inputs = ids[: batch * per_row].reshape(batch, per_row)
    targets = ids[1 : batch * per_row + 1].reshape(batch, per_row)
    for start in range(0, per_row, seq_len):
        x = inputs[:, start : start + seq_len]
        y = targets[:, start : start + seq_len]
        mask = np.ones(x.shape, np.float32)
        if x.shape[1] < seq_len:  # the last, shorter chunk: pad and leave unscored
            pad = ((0, 0), (0, seq_len - x.shape[1]))
            x, y, mask = np.pad(x, pad), np.pad(y, pad), np.pad(mask, pad)
        yield Batch(x, y, mask, np.zeros_like(mask), reset=start == 0)


def _combined(names) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}:{datasets.checksum(name)}\n".encode())
    return "sha256:" + digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Music(Task):
    """Polyphonic music (Boulanger-Lewandowski et al. 2012): predict the 88 keys of the next frame.

    Each key is an independent sigmoid; the loss is the binary cross-entropy summed over the keys.
    A zero frame is put before each sequence so every frame is predicted. Training reads random
    windows of `seq_len` frames (state starts at zero); evaluation reads whole sequences in chunks of
    `seq_len` with the state carried. Score: exp(-NLL per frame). Also reported: `nll` (nats per
    frame, summed over the 88 keys, the number the literature reports).
    """

    tokens: ClassVar[bool] = False
    score_name: ClassVar[str] = "frame_likelihood"
    dataset: ClassVar[str]

    @property
    def n_inputs(self) -> int:
        return 88

    def _sequences(self, split: str) -> list[np.ndarray]:
        zero = np.zeros((1, 88), np.float32)
        return [np.concatenate([zero, s]) for s in datasets.load_music(self.dataset)[split]]

    def train_batches(self, batch, seq_len, seed):
        rng = np.random.default_rng(seed)
        sequences = self._sequences("train")
        lengths = np.array([len(s) - 1 for s in sequences], np.float64)
        while True:
            picks = rng.choice(len(sequences), size=batch, p=lengths / lengths.sum())
            windows = []
            for i in picks:
                start = int(rng.integers(0, max(len(sequences[i]) - seq_len - 1, 0) + 1))
                windows.append(sequences[i][start : start + seq_len + 1])
            yield _frame_batch(windows, seq_len)

    def eval_batches(self, split, batch, seq_len, sequences):
        chosen = self._sequences(split)[: sequences or None]
        chosen.sort(key=len)  # similar lengths together: less padding
        for start in range(0, len(chosen), batch):
            group = chosen[start : start + batch]
            steps = max(len(s) - 1 for s in group)
            chunks = -(-steps // seq_len)
            padded = _frame_batch(group, chunks * seq_len, rows=batch)
            for k in range(chunks):
                cut = slice(k * seq_len, (k + 1) * seq_len)
                arrays = (a[:, cut] for a in padded[:4])
                yield Batch(*arrays, reset=k == 0)

    def data_checksum(self) -> str:
        return _combined([f"{self.dataset}.npz"])

    def metrics(self, totals):
        nll = totals["nll"] / max(totals["count"], 1.0)
        return {"nll": nll, "frame_likelihood": math.exp(-nll)}


def _frame_batch(sequences: list[np.ndarray], length: int, rows: int | None = None) -> Batch:
    """Inputs frame t, target frame t+1, padded to `length` steps and `rows` rows."""
    rows = rows or len(sequences)
    inputs = np.zeros((rows, length, 88), np.float32)
    targets = np.zeros((rows, length, 88), np.float32)
    mask = np.zeros((rows, length), np.float32)
    for row, s in enumerate(sequences):
        steps = min(len(s) - 1, length)
        inputs[row, :steps] = s[:steps]
        targets[row, :steps] = s[1 : steps + 1]
        mask[row, :steps] = 1.0
    return Batch(inputs, targets, mask, np.zeros_like(mask))


def _music(name: str, dataset: str, title: str) -> type[Music]:
    cls = dataclasses.dataclass(frozen=True)(
        type(name.capitalize(), (Music,), {"__doc__": f"{title}. " + Music.__doc__})
    )
    cls.name, cls.dataset, cls.summary = name, dataset, title
    return cls


TASKS: dict[str, type[Task]] = {
    "memorize": Memorize,
    "arith": Arith,
    "xml": Xml,
    "ptb": Ptb,
    "jsb": _music("jsb", "jsb", "JSB Chorales (polyphonic music)"),
    "nottingham": _music("nottingham", "nottingham", "Nottingham folk tunes (polyphonic music)"),
    "musedata": _music("musedata", "musedata", "MuseData (polyphonic music)"),
    "piano": _music("piano", "piano", "Piano-midi.de (polyphonic music)"),
}
SEARCH_TASKS = ("arith", "xml", "ptb")  # the paper's search tasks
MUSIC_TASKS = ("jsb", "nottingham", "musedata", "piano")


def task_class(name: str, near=None) -> type[Task]:
    """The class of task `name`: a built-in's name, or "MODULE:CLASS" for a task of your own.

    A task of your own is a frozen dataclass deriving from `Task` (or `Generated`), whose fields
    are its options, with a `name` and its `budgets` per preset. Its module is imported by
    `tasks.usercode.import_class` (the current directory, then `near`, a config file's directory,
    are searched last); Ray workers, which train it, import it the same way. It must be a module
    file, not `__main__`: the workers import it by name.

    Raises:
      ValueError: one line naming the problem.
    """
    module_name, _, class_name = name.partition(":")
    if module_name == "__main__":
        raise ValueError(f"{name}: a task of your own must be in a module file, which the Ray "
                         "workers that train it import by name, not in __main__")  # fmt: skip
    cls = named_class(name, TASKS, Task, "tasks.Task", "task", near)
    if name in TASKS:
        return cls
    params = getattr(cls, "__dataclass_params__", None)
    if not dataclasses.is_dataclass(cls) or not params.frozen:
        raise ValueError(f"{name}: {class_name} must be a @dataclasses.dataclass(frozen=True) (its "
                         "fields are the task's options)")  # fmt: skip
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise ValueError(f"{name}: {class_name} needs a name (name = \"...\"), which its rows' data "
                         "checksum and messages use")  # fmt: skip
    budgets = cls.budgets
    if not isinstance(budgets, dict) or not all(isinstance(b, Budget) for b in budgets.values()):
        raise ValueError(f"{name}: {class_name}.budgets must map preset names to tasks.Budget, got "
                         f"{budgets!r}")  # fmt: skip
    return cls


def check_batches(spec) -> None:
    """For a trial of a task of your own, draws a training and a validation batch and checks their
    form, as `train` and a search's config do once before any trial: a wrong shape would fail
    every trial, and a token id out of range would train silently on another (a JAX gather
    clamps it). The built-in tasks are left alone: their tests check them.

    Args:
      spec: the `tasks.TrialSpec` (its task made with its options, its budget's batch and BPTT
        length).

    Raises:
      ValueError: one line naming the method and the first problem.
    """
    if spec.task in TASKS:
        return
    task, batch = spec.make_task(), spec.budget.batch
    steps = task.sequence_length(spec.budget.seq_len)
    draws = (("train_batches", lambda: task.train_batches(batch, steps, 0)),
             ("eval_batches", lambda: task.eval_batches("valid", batch, steps, 1)))  # fmt: skip
    for method, batches in draws:
        try:
            got = next(iter(batches()), None)
        except Exception as error:  # noqa: BLE001 - the user's code: any failure is one line
            raise ValueError(f"{method} raised {type(error).__name__}: {error}".splitlines()[0]) from None
        if got is None:
            raise ValueError(f"{method} gave no batch")
        if not isinstance(got, Batch):
            raise ValueError(f"{method} must give tasks.Batch, got {type(got).__name__}")
        rows = np.shape(got.mask)[0] if np.ndim(got.mask) == 2 else -1
        if method == "train_batches" and rows != batch or not 1 <= rows <= batch:
            raise ValueError(f"{method} gave a mask of shape {np.shape(got.mask)}: (rows, steps) "
                             f"with {batch if method == 'train_batches' else f'1 to {batch}'} "
                             f"rows (the budget's batch) and {steps} steps")  # fmt: skip
        for field, width in (("inputs", task.n_inputs), ("targets", task.n_outputs)):
            array = np.asarray(getattr(got, field))
            shape = (rows, steps) if task.tokens else (rows, steps, width)
            kind = "integer token ids" if task.tokens else "float frames"
            if array.shape != shape or (array.dtype.kind in "iu") != task.tokens:
                raise ValueError(f"{method} gave {field} of shape {array.shape} and dtype "
                                 f"{array.dtype}, not {kind} of shape {shape}")  # fmt: skip
            if task.tokens and array.size and not 0 <= array.min() <= array.max() < width:
                size = "n_inputs" if field == "inputs" else "n_outputs"
                raise ValueError(f"{method} gave {field} from {array.min()} to {array.max()}, "
                                 f"outside 0..{width - 1} ({size} is {width})")  # fmt: skip
        for field in ("mask", "aux_mask"):
            if np.shape(getattr(got, field)) != (rows, steps):
                raise ValueError(f"{method} gave {field} of shape {np.shape(getattr(got, field))}, "
                                 f"not {(rows, steps)} like the inputs' rows and steps")  # fmt: skip


def make_task(name: str, **options) -> Task:
    """Builds task `name` (`task_class`) with its options (see each class); raises ValueError
    naming the problem."""
    cls = task_class(name)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in options:
        if key not in known:
            hint = f" (options: {', '.join(sorted(known))})" if known else " (it has no options)"
            raise ValueError(f"unknown option '{key}' for task {name}{hint}")
    task = cls(**options)
    try:
        check_types(task)
        if hasattr(task, "validate"):
            task.validate()
    except ValueError as error:
        raise ValueError(f"task {name}: {error}") from None
    return task


def is_builtin(task: Task) -> bool:
    """Whether `task` is one of cellsearch's (else a task of your own, whose code a run records)."""
    return TASKS.get(task.name) is type(task)
