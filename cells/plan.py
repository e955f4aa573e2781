"""Which matmuls a cell's step runs, worked out from its graph alone (no JAX: `cellsearch show`).

All `W` nodes that read the same value share ONE matmul on concatenated weights, and identical pure
sub-expressions are one value; `cells.compile` turns this plan into JAX functions.
"""

from __future__ import annotations

import dataclasses

from cells.graph import LINEAR, Graph


@dataclasses.dataclass(frozen=True)
class Linear:
    """Where one `W` node's parameters live: column block `block` of fused matmul `group`."""

    label: str
    group: str
    block: int
    bias: float


@dataclasses.dataclass(frozen=True)
class Matmul:
    """One fused matmul: the value it reads and the `W` nodes it serves, in block order."""

    key: str
    operand: int
    nodes: tuple[int, ...]


def plan_matmuls(graph: Graph) -> tuple[tuple[Matmul, ...], dict[str, Linear], tuple[int, ...]]:
    """The fused matmuls of `graph`'s step.

    Args:
      graph: a validated cell graph.

    Returns:
      (the matmuls in evaluation order, label -> where each `W` node's parameters live, and for
      each node the node whose value it shares).
    """
    value_of = _common_subexpressions(graph)
    labels = graph.linear_labels()
    by_operand: dict[int, list[int]] = {}
    for i in graph.linear_nodes():
        by_operand.setdefault(value_of[graph.nodes[i].inputs[0]], []).append(i)
    matmuls, linears, keys = [], {}, set()
    for operand, nodes in by_operand.items():
        key = graph.nodes[operand].name or graph.expression(operand).replace(" ", "")
        base, n = key, 1
        while key in keys:
            n += 1
            key = f"{base}~{n}"
        keys.add(key)
        matmuls.append(Matmul(key, operand, tuple(nodes)))
        for block, i in enumerate(nodes):
            linears[labels[i]] = Linear(labels[i], key, block, graph.nodes[i].bias)
    return tuple(matmuls), linears, tuple(value_of)


def _common_subexpressions(graph: Graph) -> list[int]:
    """For each node, the first node that computes the same value (W nodes are never merged)."""
    first: dict[tuple, int] = {}
    value_of: list[int] = []
    for i, node in enumerate(graph.nodes):
        inputs = tuple(value_of[j] for j in node.inputs)
        if node.op in ("add", "mul"):
            inputs = tuple(sorted(inputs))
        key = ("W", i) if node.op == LINEAR else (node.op, inputs)
        value_of.append(first.setdefault(key, i))
    return value_of
