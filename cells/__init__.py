"""The cell language: parse recurrent-cell equations, render them, compile them to JAX."""

import importlib

from cells.baselines import BASELINES, PAPER_CELLS, baseline
from cells.graph import CellError, CellSyntaxError, CellValidationError, Graph, Node
from cells.nasbench import from_nasbench_nlp, load_nasbench_weights
from cells.parse import parse

# imported on first use: reading, rendering, hashing and mutating cells need no JAX, whose import
# takes about 0.5 s (see analysis/__init__.py)
_LAZY = {"CompiledCell": "cells.compile", "compile_cell": "cells.compile"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cells' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, for a notebook's tab completion, without importing them
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BASELINES",
    "PAPER_CELLS",
    "CellError",
    "CellSyntaxError",
    "CellValidationError",
    "CompiledCell",
    "Graph",
    "Node",
    "baseline",
    "compile_cell",
    "from_nasbench_nlp",
    "load_nasbench_weights",
    "parse",
]
