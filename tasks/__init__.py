"""Tasks of Jozefowicz et al. (2015), the model around a cell, and the jitted trainer; a task of your
own is a `Task` subclass named "MODULE:CLASS" (`task_class`)."""

import importlib

from tasks.datasets import DataError
from tasks.hparams import GRID, PRESETS, Budget, HParams, preset, sample_settings
from tasks.registry import (MUSIC_TASKS, SEARCH_TASKS, TASKS, Generated, Task, make_task,
                            task_class)
from tasks.synthetic import Batch

# the trainer (jax, flax, optax) is imported on first use: the tasks' names, data and settings,
# which the analysis reads, need none of it
_TRAINER = ("TrialResult", "TrialSpec", "train_settings", "train_trial", "use_compilation_cache")


def __getattr__(name: str):
    if name in _TRAINER:
        return getattr(importlib.import_module("tasks.trainer"), name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, for a notebook's tab completion, without importing them
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "GRID",
    "MUSIC_TASKS",
    "PRESETS",
    "SEARCH_TASKS",
    "TASKS",
    "Batch",
    "Budget",
    "DataError",
    "Generated",
    "HParams",
    "Task",
    "TrialResult",
    "TrialSpec",
    "make_task",
    "preset",
    "sample_settings",
    "task_class",
    "train_settings",
    "train_trial",
    "use_compilation_cache",
]
