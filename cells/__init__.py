"""The cell language: parse recurrent-cell equations, render them, compile them to JAX."""

from cells.baselines import BASELINES, PAPER_CELLS, baseline
from cells.compile import CompiledCell, compile_cell
from cells.graph import CellError, CellSyntaxError, CellValidationError, Graph, Node
from cells.nasbench import from_nasbench_nlp, load_nasbench_weights
from cells.parse import parse

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
