"""NAS-Bench-NLP cell recipes (Klyuchnikov et al. 2020) to and from cellsearch cells.

A recipe is a JSON object `node -> {"op": OP, "input": [names]}` over the inputs `x`, `h_prev_0`,
`h_prev_1` with outputs `h_new_0` (and `h_new_1`). The mapping:

| NAS-Bench-NLP | cellsearch |
|---|---|
| `x`, `h_prev_0`, `h_prev_1` | `x`, `h`, `c` |
| `h_new_0`, `h_new_1` | `h_new`, `c_new` |
| `linear` with inputs a, b, ... | `W(a) + W(b) + ...` (the recipe's one bias sits on the first `W`) |
| `blend(a, b, c)` | `a * b + (1 - a) * c` |
| `elementwise_prod`, `elementwise_sum` | `*`, `+` |
| `activation_tanh`, `activation_sigm`, `activation_leaky_relu` | `tanh`, `sigmoid`, `leaky_relu` (slope 0.01) |

Every cellsearch `W` has its own bias, so an imported k-input linear has k - 1 extra bias vectors
(initialised at 0): the same functions, (k - 1) * H more parameters. `load_nasbench_weights` puts a
trained NAS-Bench-NLP linear's bias on the first `W` and zeros on the others, which gives the same
outputs. Recipe node names become cellsearch names where they can (`f_act` stays `f_act`).
"""

from __future__ import annotations

import itertools
import keyword
import re
from typing import Mapping

import numpy as np

from cells.graph import CONST, LINEAR, SOURCES, UNARY, CellError, CellValidationError, Graph, Node

INPUTS = {"x": "x", "h_prev_0": "h", "h_prev_1": "c"}
OUTPUTS = {"h_new_0": "h_new", "h_new_1": "c_new"}
ACTIVATIONS = {"activation_tanh": "tanh", "activation_sigm": "sigmoid",
               "activation_leaky_relu": "leaky_relu"}  # fmt: skip
ELEMENTWISE = {"elementwise_prod": "mul", "elementwise_sum": "add"}
OPS = ("linear", "blend", *ELEMENTWISE, *ACTIVATIONS)
_ARITY = {"linear": (1, None), "blend": (3, 3), **{op: (2, None) for op in ELEMENTWISE},
          **{op: (1, 1) for op in ACTIVATIONS}}  # fmt: skip
_RESERVED = {"x", "h", "c", "h_new", "c_new", LINEAR, CONST, *UNARY}


def our_name(name: str) -> str:
    """The cellsearch name of a recipe node: outputs and inputs mapped, others made identifiers."""
    if name in OUTPUTS:
        return OUTPUTS[name]
    if name in INPUTS:
        return INPUTS[name]
    clean = re.sub(r"\W", "_", name)
    if not clean.isidentifier() or keyword.iskeyword(clean) or clean in _RESERVED or re.fullmatch(r"u\d+", clean):
        clean = f"n_{clean}"
    return clean


def _check(recipe, source: str) -> None:
    def fail(message: str, node: str | None = None):
        raise CellValidationError(message, source=source, subject=node)

    if not isinstance(recipe, Mapping) or not recipe:
        fail("a recipe is a non-empty JSON object of node -> {\"op\": ..., \"input\": [...]}")
    for name, spec in recipe.items():
        if name in INPUTS or re.fullmatch(r"h_prev_\d+", name):
            fail(f"node '{name}' redefines an input", name)
        if re.fullmatch(r"h_new_\d+", name) and name not in OUTPUTS:
            fail(f"node '{name}': cellsearch cells have at most two hidden-state slots "
                 "(h_new_0 -> h_new, h_new_1 -> c_new)", name)  # fmt: skip
        if not isinstance(spec, Mapping) or not isinstance(spec.get("op"), str) \
                or not isinstance(spec.get("input"), list) or not all(isinstance(i, str) for i in spec["input"]):  # fmt: skip
            fail(f"node '{name}' must be {{\"op\": str, \"input\": [names]}}", name)
        op, inputs = spec["op"], spec["input"]
        if op not in OPS:
            fail(f"node '{name}': unknown op '{op}' (known: {', '.join(OPS)})", name)
        low, high = _ARITY[op]
        if len(inputs) < low or (high is not None and len(inputs) > high):
            wanted = f"{low}" if low == high else f"at least {low}"
            fail(f"node '{name}': {op} takes {wanted} inputs, got {len(inputs)}", name)
        for source_name in inputs:
            if re.fullmatch(r"h_prev_\d+", source_name) and source_name not in INPUTS:
                fail(f"node '{name}' reads '{source_name}': cellsearch cells have at most two "
                     "hidden-state slots (h_prev_0 -> h, h_prev_1 -> c)", name)  # fmt: skip
            if source_name not in recipe and source_name not in INPUTS:
                fail(f"node '{name}' reads '{source_name}', which is neither a node nor an input "
                     "(x, h_prev_0, h_prev_1)", name)  # fmt: skip
    if "h_new_0" not in recipe:
        fail("the recipe has no output h_new_0")


def from_nasbench_nlp(recipe: Mapping, source: str = "recipe") -> Graph:
    """Builds the cell of a NAS-Bench-NLP recipe (see the module docstring for the mapping).

    Args:
      recipe: `node -> {"op": ..., "input": [...]}` as in NAS-Bench-NLP's JSON files.
      source: named in error messages (e.g. "recipes.json:3").

    Raises:
      CellValidationError: unknown op, wrong arity, a dangling input, a cycle, more than two
        hidden-state slots, or a cell that is not usable (e.g. ignores x); the message names the node.
    """
    _check(recipe, source)
    nodes = [Node("x", name="x"), Node("h", name="h"), Node("c", name="c"), Node(CONST)]
    index = {"x": 0, "h_prev_0": 1, "h_prev_1": 2}
    one = 3
    visiting: set[str] = set()

    def add(node: Node) -> int:
        nodes.append(node)
        return len(nodes) - 1

    def fold(op: str, values: list[int]) -> int:
        out = values[0]
        for value in values[1:]:
            out = add(Node(op, (out, value)))
        return out

    def build(name: str) -> int:
        if name in index:
            return index[name]
        if name in visiting:
            raise CellValidationError(f"node '{name}' is part of a cycle", source=source, subject=name)
        visiting.add(name)
        spec = recipe[name]
        inputs = [build(i) for i in spec["input"]]
        op = spec["op"]
        if op == "linear":
            out = fold("add", [add(Node(LINEAR, (i,))) for i in inputs])
        elif op == "blend":
            gate, first, second = inputs
            rest = add(Node("sub", (one, gate)))
            out = add(Node("add", (add(Node("mul", (gate, first))), add(Node("mul", (rest, second))))))
        elif op in ELEMENTWISE:
            out = fold(ELEMENTWISE[op], inputs)
        else:
            out = add(Node(ACTIVATIONS[op], (inputs[0],)))
        nodes[out] = Node(nodes[out].op, nodes[out].inputs, nodes[out].bias, our_name(name))
        visiting.discard(name)
        index[name] = out
        return out

    try:
        h_new = build("h_new_0")
        c_new = build("h_new_1") if "h_new_1" in recipe else None
        return Graph.build(nodes, h_new, c_new)
    except CellError as error:
        if error.source:
            raise
        raise CellValidationError(error.message, source=source, subject=error.subject) from None


def to_nasbench_nlp(graph: Graph) -> dict:
    """The NAS-Bench-NLP recipe of a cell; CellValidationError names what it cannot express.

    NAS-Bench-NLP has no `-` (except inside `blend`), no `relu` or `identity`, no constant other
    than blend's 1, and no initial biases (`W(., bias=1)`). A sum of `W` terms each read only there
    becomes one `linear`; `a * b + (1 - a) * c` becomes `blend(a, b, c)`.
    """
    nodes = graph.nodes
    fanout = [0] * len(nodes)
    for node in nodes:
        for j in node.inputs:
            fanout[j] += 1
    labels = graph.node_labels()
    names: dict[int, str] = {}
    recipe: dict[str, dict] = {}
    counter = itertools.count()

    def refuse(i: int, why: str):
        raise CellValidationError(f"'{labels[i]}': {why}; NAS-Bench-NLP cannot express this cell",
                                  subject=nodes[i].name)  # fmt: skip

    def linear_terms(i: int, root: bool = True) -> list[int] | None:
        node = nodes[i]
        if node.op == LINEAR and (root or fanout[i] == 1):
            return [i]
        if node.op == "add" and (root or (fanout[i] == 1 and node.name is None)):
            left, right = (linear_terms(j, root=False) for j in node.inputs)
            if left is not None and right is not None:
                return left + right
        return None

    def blend(i: int) -> tuple[int, int, int] | None:
        node = nodes[i]
        if node.op != "add":
            return None
        for first, second in (node.inputs, node.inputs[::-1]):
            if nodes[first].op != "mul" or nodes[second].op != "mul":
                continue
            for rest, other in (nodes[second].inputs, nodes[second].inputs[::-1]):
                minus = nodes[rest]
                if minus.op == "sub" and nodes[minus.inputs[0]].op == CONST:
                    gate = minus.inputs[1]
                    a, b = nodes[first].inputs
                    if gate in (a, b):
                        return gate, b if a == gate else a, other
        return None

    def emit(i: int) -> str:
        if i in names:
            return names[i]
        node = nodes[i]
        if node.op in SOURCES:
            return {"x": "x", "h": "h_prev_0", "c": "h_prev_1"}[node.op]
        terms, mix = linear_terms(i), blend(i)
        if terms is not None:
            for t in terms:
                if nodes[t].bias != 0:
                    refuse(t, f"W with bias={nodes[t].bias:g} (an initial bias)")
            spec = {"op": "linear", "input": [emit(nodes[t].inputs[0]) for t in terms]}
        elif mix is not None:
            spec = {"op": "blend", "input": [emit(j) for j in mix]}
        elif node.op in ("add", "mul"):
            op = "elementwise_sum" if node.op == "add" else "elementwise_prod"
            spec = {"op": op, "input": [emit(j) for j in node.inputs]}
        elif node.op in ("tanh", "sigmoid", "leaky_relu"):
            spec = {"op": f"activation_{'sigm' if node.op == 'sigmoid' else node.op}",
                    "input": [emit(node.inputs[0])]}  # fmt: skip
        elif node.op == CONST:
            refuse(i, "the constant 1 outside a blend")
        else:
            refuse(i, f"op '{node.op}'" + (" outside a blend" if node.op == "sub" else ""))
        if i == graph.h_new:
            name = "h_new_0"
        elif i == graph.c_new:
            name = "h_new_1"
        else:
            name = node.name or f"node_{next(counter)}"
        names[i] = name
        recipe[name] = spec
        return name

    emit(graph.h_new)
    if graph.c_new is not None:
        emit(graph.c_new)
    return recipe


def nasbench_linear_labels(recipe: Mapping) -> dict[str, list[str]]:
    """recipe linear node -> the labels (`CompiledCell.linears`) of its `W`s, in input order."""
    out = {}
    for name, spec in recipe.items():
        if spec["op"] == "linear":
            labels, seen = [], {}
            for inp in spec["input"]:
                base = f"{our_name(name)}.{our_name(inp)}"
                seen[base] = seen.get(base, 0) + 1
                labels.append(base if seen[base] == 1 else f"{base}~{seen[base]}")
            out[name] = labels
    return out


def load_nasbench_weights(cell, params, recipe: Mapping, weights: Mapping) -> dict:
    """Copies a trained NAS-Bench-NLP cell's linear layers into cellsearch parameters.

    NAS-Bench-NLP keeps one `MultiLinear` per linear node: a PyTorch-layout weight
    (out = H, in = sum of the input widths) over the node's inputs concatenated in `input` order,
    and one bias (H,). cellsearch keeps one `W` per input with kernels in (in, out) layout. So the
    k-th input's kernel is `weight[:, k*H:(k+1)*H].T`, the first `W` gets the bias and the others
    zeros.

    Args:
      cell: `compile_cell(from_nasbench_nlp(recipe))`.
      params: parameters of `cell` (e.g. from `cell.init`); returned updated, not modified.
      recipe: the recipe.
      weights: linear node -> {"weight": (H, k*H) array, or a list of k (H, H) arrays in input
        order, "bias": (H,)}. Numpy arrays or anything `np.asarray` takes (torch tensors via
        `.detach().numpy()`).

    Returns:
      The new parameters.
    """
    for node, labels in nasbench_linear_labels(recipe).items():
        if node not in weights:
            raise KeyError(f"no weights for linear node '{node}'")
        weight, bias = weights[node]["weight"], np.asarray(weights[node]["bias"], np.float32)
        blocks = [np.asarray(w, np.float32) for w in weight] if isinstance(weight, (list, tuple)) \
            else np.split(np.asarray(weight, np.float32), len(labels), axis=1)  # fmt: skip
        for k, (label, block) in enumerate(zip(labels, blocks)):
            params = cell.set_linear(params, label, kernel=block.T,
                                     bias=bias if k == 0 else np.zeros_like(bias))  # fmt: skip
    return params
