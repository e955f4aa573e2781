"""Tiny search configs shared by the tests that run real searches (the Ray fixture is in conftest)."""

import contextlib
import pathlib

from search.config import load_config

QUICK = pathlib.Path(__file__).parents[1] / "configs" / "quick.toml"
TINY_BUDGET = (("steps", 10), ("hidden", 8), ("batch", 8), ("eval_sequences", 8))
TINY = {
    "settings_per_task": 1, "cells_per_round": 2, "jozefowicz.baseline_settings": 1,
    "jozefowicz.screen_threshold": 0.0, "jozefowicz.p_reevaluate": 0.3,
    "regularized_evolution.population": 3, "regularized_evolution.tournament": 2,
    "random.cell_size": 3, "baselines.cells": ["tanh", "lstm"],
    **{f"budget.{task}.{key}": value for task in ("arith", "xml", "ptb", "memorize", "nottingham")
       for key, value in TINY_BUDGET},
    "budget.ptb.eval_sequences": 1, "budget.xml.seq_len": 10, "budget.ptb.seq_len": 10,
    "budget.nottingham.seq_len": 10, "task_options.arith.max_digits": 2,
}  # fmt: skip


def tiny(**overrides):
    """configs/quick.toml shrunk to trials of a second or two."""
    return load_config(QUICK, TINY | overrides)


def borrowed(executor):
    """An executor factory that lends the session's Ray executor without closing it."""
    return lambda: contextlib.nullcontext(executor)
