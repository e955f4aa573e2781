"""Hyperparameters: the paper's grids, a sampler without repeats, and the budget presets.

A trial's hyperparameters (`HParams`) are what the paper samples per trial. Its `Budget` (steps,
sizes) comes from a preset: `quick` (minutes on 2 CPU cores, for CI and first contact), `small`
(hours on a workstation), `paper` (a cluster), or `zaremba_small` (the PTB recipe of Zaremba et al.
2014, to check the trainer against published numbers). Every choice below has its reason beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import numbers
from typing import NamedTuple

import numpy as np


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


# what each declared field type accepts (numpy scalars too: settings can come back from pandas)
_ACCEPTS = {
    "int": lambda v: isinstance(v, numbers.Integral) and not _is_bool(v),
    "float": lambda v: isinstance(v, numbers.Real) and not _is_bool(v),
    "bool": _is_bool,
    "str": lambda v: isinstance(v, str),
}


def check_types(obj) -> None:
    """Raises ValueError naming the first field whose value is not of its declared type.

    Values from `--set`, a config file or a table arrive as whatever TOML or pandas made of them;
    without this, `hidden = 32.5` failed inside the trial and `steps = true` trained one step.

    Args:
      obj: a dataclass or NamedTuple whose fields are declared `int`, `float` (an int is accepted),
        `bool` or `str`, optionally `| None`; fields of other types are not checked.
    """
    if dataclasses.is_dataclass(obj):
        declared = [(f.name, f.type) for f in dataclasses.fields(obj)]
    else:
        declared = list(type(obj).__annotations__.items())
    for name, kind in declared:
        # a string under `from __future__ import annotations`, which a NamedTuple makes a ForwardRef
        text = getattr(kind, "__forward_arg__", str(kind))
        parts = [p.strip() for p in (kind.__name__ if isinstance(kind, type) else text).split("|")]
        kinds = [p for p in parts if p != "None"]
        value = getattr(obj, name)
        if len(kinds) != 1 or kinds[0] not in _ACCEPTS or (value is None and "None" in parts):
            continue
        if not _ACCEPTS[kinds[0]](value):
            raise ValueError(f"{name} must be {kinds[0]}, got {type(value).__name__} {value!r}")


# The paper's grids (paper.md section 5; S13 lists the same values).
GRID: dict[str, tuple] = {
    "init_scale": (0.3, 0.7, 1.0, 1.4, 2.0, 2.8),
    "lr": (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
    "clip": (1.0, 2.5, 5.0, 10.0, 20.0),
    "layers": (1, 2, 3, 4),
}


class HParams(NamedTuple):
    """The sampled hyperparameters of one trial."""

    lr: float = 1.0
    clip: float = 5.0
    init_scale: float = 1.0  # weights start uniform in [-s/sqrt(H), s/sqrt(H)]
    layers: int = 1
    dropout: float = 0.0  # on non-recurrent connections only (Zaremba et al. 2014)

    def validate(self) -> None:
        check_types(self)
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.clip > 0, f"clip must be > 0, got {self.clip}"),
            (self.init_scale > 0, f"init_scale must be > 0, got {self.init_scale}"),
            (1 <= self.layers <= 16, f"layers must be in [1, 16], got {self.layers}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def sample_settings(
    key: tuple, count: int, start: int = 0, grid: dict[str, tuple] | None = None
) -> list[HParams]:
    """Draws `count` distinct settings from the grid for one (cell, task, seed), without repeats.

    The settings are a fixed random permutation of the whole grid, seeded by `key` (e.g.
    `(cell_hash, task, seed)`): the first call takes settings [0, count), a later call with
    `start=count` continues the same permutation, so no setting is ever drawn twice for that key.

    Args:
      key: strings and ints identifying the (cell, task, seed).
      count: how many settings.
      start: how many were drawn before.
      grid: the grid; default `GRID`.

    Returns:
      Up to `count` `HParams` (fewer when the grid is exhausted).
    """
    grid = GRID if grid is None else grid
    for name in grid:
        if name not in HParams._fields:
            raise ValueError(f"unknown hyperparameter '{name}' in grid (known: {HParams._fields})")
        if not grid[name]:
            raise ValueError(f"the grid of '{name}' is empty")
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    seed = int.from_bytes(hashlib.sha256(repr(tuple(key)).encode()).digest()[:8], "little")
    order = np.random.default_rng(seed).permutation(len(combos))
    return [HParams(**dict(zip(names, combos[i]))) for i in order[start : start + count]]


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much a trial trains and at what size."""

    steps: int  # optimisation steps
    hidden: int  # H: the width of every value of the cell and of the embedding
    batch: int
    seq_len: int = 0  # BPTT length (ptb, xml, music); 0 for memorize and arith, which fix their own
    steps_per_call: int = 10  # optimisation steps per jitted call: keeps Python out of the loop
    # (the trainer runs whole calls: `steps` rounds up to a multiple, and the learning rate
    # schedule takes effect at the first call at or after its step)
    eval_sequences: int = 1000  # synthetic: generated; music: first N per split; ptb: first N
    # chunks of batch x seq_len tokens (0 = the whole split, for music and ptb)
    lr_decay: float = 1.0  # multiply the learning rate by this ...
    lr_decay_start: int = 0  # ... from this step on ...
    lr_decay_every: int = 0  # ... every this many steps (0: never)

    def lr_at(self, lr: float, step: int) -> float:
        """The learning rate in force at `step`."""
        if self.lr_decay_every <= 0 or step < self.lr_decay_start:
            return lr
        return lr * self.lr_decay ** (1 + (step - self.lr_decay_start) // self.lr_decay_every)

    def uneven_calls(self) -> str:
        """What of this budget falls inside a call, where the trainer runs whole calls of
        `steps_per_call` steps and sets the learning rate once per call ("" if nothing does): a
        valid budget, but one that does not train as written."""
        k = self.steps_per_call
        schedule = ["lr_decay_start", "lr_decay_every"] if self.lr_decay_every > 0 else []
        uneven = [name for name in ["steps", *schedule] if getattr(self, name) % k]
        if not uneven:
            return ""
        does = []
        if "steps" in uneven:
            does.append(f"trains {-(-self.steps // k) * k} steps")
        if set(uneven) & set(schedule):
            does.append("changes the learning rate on the first call at or after each step the "
                        "schedule names")
        named = " and ".join(f"{name} {getattr(self, name)}" for name in uneven)
        verb = "is not a multiple" if len(uneven) == 1 else "are not multiples"
        return (f"{named} {verb} of steps_per_call {k}: the trainer runs whole calls, so it "
                + " and ".join(does))

    def validate(self) -> None:
        check_types(self)
        if self.seq_len < 0:
            raise ValueError(f"seq_len must be >= 0, got {self.seq_len}")
        for name in ("steps", "hidden", "batch", "steps_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_sequences < 0:
            raise ValueError(f"eval_sequences must be >= 0, got {self.eval_sequences}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")


class Preset(NamedTuple):
    budget: Budget
    task_options: dict  # options of the task at this preset
    hparams: HParams | None = None  # fixed hyperparameters (zaremba_small), else sampled/default


# Zaremba et al. (2014) "small": 2 x 200, BPTT 20, batch 20, lr 1 halved every epoch after epoch 4,
# 13 epochs, uniform init 0.1, clip 5, no dropout. One epoch of PTB train at batch 20 x 20 steps is
# 2,324 steps. Our init is U[-s/sqrt(H), s/sqrt(H)], so s = 0.1 * sqrt(200) gives U[-0.1, 0.1].
PTB_EPOCH_STEPS = 2324
# The trainer runs whole calls of `steps_per_call` steps and sets the learning rate once per call,
# so the budgets that count epochs run 28 steps per call, which divides an epoch (2,324 = 83 x 28):
# exactly 13 epochs, and each halving on an epoch's first step (at 20 they ran 8 steps more and
# halved up to 16 steps late).
PTB_STEPS_PER_CALL = 28
ZAREMBA_SMALL = Preset(
    Budget(
        steps=13 * PTB_EPOCH_STEPS, hidden=200, batch=20, seq_len=20, steps_per_call=PTB_STEPS_PER_CALL,
        eval_sequences=0, lr_decay=0.5, lr_decay_start=4 * PTB_EPOCH_STEPS, lr_decay_every=PTB_EPOCH_STEPS,
    ),
    {},
    HParams(lr=1.0, clip=5.0, init_scale=0.1 * 200**0.5, layers=2, dropout=0.0),
)  # fmt: skip

PRESETS: dict[str, dict[str, Preset]] = {
    # quick: every trial a few seconds on one core, small enough that a whole reproduction of
    # baselines + search fits in 15 minutes on 2 cores. Hidden 32 keeps compile and steps cheap.
    "quick": {
        # an LSTM reaches about 0.9 per-symbol accuracy at lr 1 in 2,000 steps; 1,500 screens
        "memorize": Preset(Budget(steps=1500, hidden=32, batch=32, eval_sequences=512), {}),
        # 3-digit numbers so that something is learnt in a few hundred steps
        "arith": Preset(Budget(steps=300, hidden=32, batch=32, eval_sequences=512),
                        {"max_digits": 3}),
        "xml": Preset(Budget(steps=300, hidden=32, batch=32, seq_len=40, eval_sequences=256),
                      {"name_max": 4}),
        # BPTT 20 and batch 20 as Zaremba; evaluation on the first 20,000 tokens of each split
        "ptb": Preset(Budget(steps=200, hidden=32, batch=20, seq_len=20, eval_sequences=50), {}),
        **{name: Preset(Budget(steps=200, hidden=32, batch=16, seq_len=50, eval_sequences=40), {})
           for name in ("jsb", "nottingham", "musedata", "piano")},
    },
    # small: a workstation-hours search; the paper's task formats at modest sizes
    "small": {
        "memorize": Preset(Budget(steps=1000, hidden=64, batch=32), {}),
        "arith": Preset(Budget(steps=3000, hidden=64, batch=32), {"max_digits": 5}),
        "xml": Preset(Budget(steps=3000, hidden=64, batch=32, seq_len=60), {}),
        "ptb": Preset(Budget(steps=3 * PTB_EPOCH_STEPS, hidden=100, batch=20, seq_len=20,
                             steps_per_call=PTB_STEPS_PER_CALL, eval_sequences=0), {}),
        **{name: Preset(Budget(steps=2000, hidden=64, batch=16, seq_len=100, eval_sequences=0), {})
           for name in ("jsb", "nottingham", "musedata", "piano")},
    },
    # paper: the paper's task formats (8-digit arithmetic) and sizes in the range it describes; the
    # exact parameter budgets of the paper are unknown (paper.md section 5)
    "paper": {
        "memorize": Preset(Budget(steps=2000, hidden=64, batch=32), {}),
        "arith": Preset(Budget(steps=20000, hidden=128, batch=32), {}),
        "xml": Preset(Budget(steps=20000, hidden=128, batch=32, seq_len=100), {}),
        "ptb": Preset(Budget(steps=13 * PTB_EPOCH_STEPS, hidden=200, batch=20, seq_len=20,
                             steps_per_call=PTB_STEPS_PER_CALL, eval_sequences=0, lr_decay=0.5,
                             lr_decay_start=4 * PTB_EPOCH_STEPS,
                             lr_decay_every=PTB_EPOCH_STEPS), {}),
        **{name: Preset(Budget(steps=10000, hidden=128, batch=16, seq_len=100, eval_sequences=0), {})
           for name in ("jsb", "nottingham", "musedata", "piano")},
    },
    "zaremba_small": {"ptb": ZAREMBA_SMALL},
}  # fmt: skip


def preset(name: str, task: str) -> Preset:
    """The preset `name` for `task` (for a task of your own, "MODULE:CLASS", its class's
    `budgets[name]`); raises ValueError naming what is unknown."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    if ":" in task:
        from tasks.registry import task_class  # (the registry imports this module)

        budgets = task_class(task).budgets
        if name not in budgets:
            raise ValueError(f"task {task} has no budget for preset '{name}' (its class's budgets: "
                             f"{', '.join(budgets) or 'none'})")  # fmt: skip
        return Preset(budgets[name], {})
    if task not in PRESETS[name]:
        raise ValueError(f"preset '{name}' has no budget for task '{task}' "
                         f"(it covers: {', '.join(PRESETS[name])})")  # fmt: skip
    return PRESETS[name][task]
