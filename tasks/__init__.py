"""Tasks of Jozefowicz et al. (2015), the model around a cell, and the jitted trainer."""

from tasks.datasets import DataError
from tasks.hparams import GRID, PRESETS, Budget, HParams, preset, sample_settings
from tasks.registry import MUSIC_TASKS, SEARCH_TASKS, TASKS, Task, make_task
from tasks.trainer import (
    TrialResult,
    TrialSpec,
    train_settings,
    train_trial,
    use_compilation_cache,
)

__all__ = [
    "GRID",
    "MUSIC_TASKS",
    "PRESETS",
    "SEARCH_TASKS",
    "TASKS",
    "Budget",
    "DataError",
    "HParams",
    "Task",
    "TrialResult",
    "TrialSpec",
    "make_task",
    "preset",
    "sample_settings",
    "train_settings",
    "train_trial",
    "use_compilation_cache",
]
