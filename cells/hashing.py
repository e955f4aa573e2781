"""Identity of cells: a canonical structural hash and a functional fingerprint.

`structural_hash(graph)` (also `graph.hash`) is equal for graphs that differ only in the names of
intermediate values, in the order of independent assignments, or in the order of the operands of
`+` and `*`; it changes when the operands of `-` are swapped, when a `bias=` differs, when an op
differs, or when a value is shared instead of recomputed (two `W(x)` nodes are two parameter sets).

Scheme `v1` (the version is the hash's prefix, so stored hashes stay meaningful when it changes):
1. Colour refinement: every node starts with the colour (op, bias); each round a node's colour
   becomes a digest of its colour, its operands' colours (sorted for `+` and `*`, in order for `-`)
   and the sorted colours of its readers with their role, until the partition is stable.
2. A depth-first walk from `h_new`, then `c_new`, visits operands in canonical order (by colour for
   `+` and `*`) and numbers nodes on first visit.
3. The hash is the first 16 hex digits of sha256 over the numbered node list: "v1-0123abcd...".

`fingerprint(graph)` evaluates the cell in float64 numpy on fixed random inputs with parameters that
depend only on each `W`'s canonical identity (the structure of its operand and its rank among `W`s
with the same operand), rounds the outputs to 1e-6 and hashes them: "fp1-...". Cells with the same
fingerprint are treated as the same function. It catches what the hash catches, plus rewrites that
leave the operand of every `W` unchanged: `identity(a)` or `1 * a` for `a`, a pure sub-expression
(`tanh(h)`) written twice instead of shared, re-bracketed sums, `a - (b - c)` for `a - b + c`. It
cannot catch
equivalences that need a re-parametrisation (`W(x) + W(x)` is one `W(x)` with summed weights,
`W(W(x))` is a linear map of x) or that hold only for some parameter values, and two different
functions collide only if they agree to 1e-6 on all its random inputs.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cells.graph import BINARY, CONST, LEAKY_SLOPE, LINEAR, SOURCES, Graph

HASH_VERSION = "v1"
FINGERPRINT_VERSION = "fp1"
_COMMUTATIVE = ("add", "mul")


def _digest(*parts) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def node_colours(graph: Graph) -> list[str]:
    """Stable colour-refinement colours of the nodes (equal for nodes in symmetric positions)."""
    nodes = graph.nodes
    sink_role = {graph.h_new: "h_new"} | ({graph.c_new: "c_new"} if graph.c_new is not None else {})
    readers: list[list[tuple[int, str]]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for position, j in enumerate(node.inputs):
            role = "arg" if node.op in _COMMUTATIVE or len(node.inputs) == 1 else f"arg{position}"
            readers[j].append((i, role))
    colours = [_digest(n.op, n.bias, sink_role.get(i)) for i, n in enumerate(nodes)]
    classes = len(set(colours))
    for _ in range(len(nodes)):
        new = []
        for i, node in enumerate(nodes):
            operands = [colours[j] for j in node.inputs]
            if node.op in _COMMUTATIVE:
                operands.sort()
            context = sorted((colours[r], role) for r, role in readers[i])
            new.append(_digest(colours[i], operands, context))
        colours = new
        if len(set(colours)) == classes:
            break
        classes = len(set(colours))
    return colours


def canonical_order(graph: Graph) -> list[int]:
    """Node indices in canonical depth-first order from the sinks (operands before readers)."""
    colours = node_colours(graph)
    order: list[int] = []
    seen: set[int] = set()

    def operands(i: int) -> list[int]:
        node = graph.nodes[i]
        inputs = list(node.inputs)
        return sorted(inputs, key=lambda j: colours[j]) if node.op in _COMMUTATIVE else inputs

    for root in graph.sinks():
        stack = [(root, False)]
        while stack:
            i, expanded = stack.pop()
            if i in seen:
                continue
            if expanded:
                seen.add(i)
                order.append(i)
                continue
            stack.append((i, True))
            stack.extend((j, False) for j in reversed(operands(i)) if j not in seen)
    return order


def structural_hash(graph: Graph) -> str:
    """The canonical structural hash, e.g. 'v1-3f2a...' (see the module docstring)."""
    order = canonical_order(graph)
    number = {old: new for new, old in enumerate(order)}
    colours = node_colours(graph)
    rows = []
    for i in order:
        node = graph.nodes[i]
        inputs = [number[j] for j in node.inputs]
        if node.op in _COMMUTATIVE:
            inputs = [number[j] for j in sorted(node.inputs, key=lambda j: (colours[j], number[j]))]
        rows.append((node.op, node.bias if node.op == LINEAR else 0.0, tuple(inputs)))
    sinks = (number[graph.h_new], number[graph.c_new] if graph.c_new is not None else None)
    return f"{HASH_VERSION}-" + _digest(HASH_VERSION, rows, sinks)[:16]


# --------------------------------------------------------------------------------- fingerprint
_HIDDEN, _BATCH = 8, 4
_UNARY = {
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "relu": lambda a: np.maximum(a, 0.0),
    "leaky_relu": lambda a: np.where(a > 0, a, LEAKY_SLOPE * a),
    "identity": lambda a: a,
}
_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply}


def _subtree_labels(graph: Graph) -> list[str]:
    """Merkle labels of the expression under each node (names, order and sharing ignored)."""
    labels: list[str] = []
    for node in graph.nodes:
        children = [labels[j] for j in node.inputs]
        if node.op in _COMMUTATIVE:
            children.sort()
        labels.append(_digest(node.op, node.bias if node.op == LINEAR else 0.0, children))
    return labels


def evaluate(graph: Graph, inputs: dict[str, np.ndarray], params: dict[int, tuple]) -> tuple:
    """Evaluates the cell in numpy; params maps each W node index to (kernel, bias)."""
    values: list = []
    for i, node in enumerate(graph.nodes):
        if node.op in SOURCES:
            values.append(inputs[node.op])
        elif node.op == CONST:
            values.append(1.0)
        elif node.op == LINEAR:
            kernel, bias = params[i]
            values.append(values[node.inputs[0]] @ kernel + bias)
        elif node.op in _UNARY:
            values.append(_UNARY[node.op](values[node.inputs[0]]))
        else:
            assert node.op in BINARY
            values.append(_OPS[node.op](values[node.inputs[0]], values[node.inputs[1]]))
    c_new = values[graph.c_new] if graph.c_new is not None else None
    return values[graph.h_new], c_new


def fingerprint_params(graph: Graph) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Parameters for each W node derived from its canonical identity, not from its index."""
    labels = _subtree_labels(graph)
    rank: dict[str, int] = {}
    params = {}
    for i in canonical_order(graph):
        node = graph.nodes[i]
        if node.op != LINEAR:
            continue
        operand = labels[node.inputs[0]]
        rank[operand] = rank.get(operand, -1) + 1
        seed = int(_digest("W", operand, rank[operand])[:16], 16)
        rng = np.random.default_rng(seed)
        limit = 1.5 / np.sqrt(_HIDDEN)
        kernel = rng.uniform(-limit, limit, (_HIDDEN, _HIDDEN))
        params[i] = (kernel, rng.uniform(-0.5, 0.5, _HIDDEN) + node.bias)
    return params


def fingerprint_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20150707)
    return {name: rng.normal(0.0, 1.0, (_BATCH, _HIDDEN)) for name in SOURCES}


def fingerprint(graph: Graph) -> str:
    """The functional fingerprint, e.g. 'fp1-9c0e...' (see the module docstring)."""
    with np.errstate(all="ignore"):
        h_new, c_new = evaluate(graph, fingerprint_inputs(), fingerprint_params(graph))
    parts = []
    for value in (h_new, c_new):
        if value is None:
            parts.append(None)
        else:
            value = np.broadcast_to(np.asarray(value, np.float64), (_BATCH, _HIDDEN))
            rounded = np.where(np.isfinite(value), np.round(value * 1e6), np.inf)
            parts.append(rounded.tolist())
    return f"{FINGERPRINT_VERSION}-" + _digest(FINGERPRINT_VERSION, parts)[:16]
