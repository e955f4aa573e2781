"""The mutation operator of Jozefowicz et al. (2015), random cells, and deduplication.

`mutate(graph, rng)` draws p ~ U[0, 1] and, for each computed node with probability p, applies one
transform chosen uniformly among those that apply to it:

| transform | effect |
|---|---|
| `swap_activation` | an activation (tanh, sigmoid, relu, identity, or a `W(., bias=a)`, a in {0, 1, 0.9, 1.1}: the paper's Linear(a, .); optionally leaky_relu) becomes another |
| `swap_binary` | `+`, `-`, `*` becomes another of them |
| `insert_activation` | a random activation is put between the node and one of its operands |
| `remove` | a node with one operand and one reader is removed (the reader reads its operand) |
| `replace_with_ancestor` | the node's readers read one of its ancestors instead |
| `add_ancestor` | the node becomes `node + ancestor` |
| `multiply_ancestor` | the node becomes `node * ancestor` |

The result is pruned of values no sink reads and validated; a result that is invalid, no different
from its parent (same structural hash), too large, or not finite on the fingerprint inputs is
rejected and the mutation drawn again. Every random decision comes from the `numpy.random.Generator`
passed in: the same generator state gives the same children.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from cells import CellValidationError, Graph
from cells.graph import BINARY, CONST, LINEAR, SOURCES, UNARY, Node, ancestors
from cells.hashing import evaluate, fingerprint_inputs, fingerprint_params

# The paper's activation set: four nonlinearities and Linear(a, .) for four initial biases.
ACTIVATIONS: tuple[tuple[str, float], ...] = (
    ("tanh", 0.0), ("sigmoid", 0.0), ("relu", 0.0), ("identity", 0.0),
    (LINEAR, 0.0), (LINEAR, 1.0), (LINEAR, 0.9), (LINEAR, 1.1),
)  # fmt: skip
# ... plus NAS-Bench-NLP's leaky_relu, for searches over its op set (config `leaky_relu = true`)
ACTIVATIONS_WITH_LEAKY_RELU = (*ACTIVATIONS, ("leaky_relu", 0.0))
MAX_NODES = 120  # a cell beyond this is rejected: mutation chains must not bloat without bound


class Mutant(NamedTuple):
    """A child cell and how it was made."""

    graph: Graph
    parent: str  # structural hash of the parent
    transforms: tuple[str, ...]  # e.g. ("swap_activation f: sigmoid -> relu",)


@dataclasses.dataclass
class _Draft:
    """A mutable copy of a graph's nodes while transforms are applied."""

    nodes: list[Node]
    sinks: dict[str, int]  # "h_new"/"c_new" -> node index
    has_memory: bool
    labels: dict[int, str]  # the parent's node labels, for describing transforms
    activations: tuple[tuple[str, float], ...] = ACTIVATIONS  # what activation transforms draw from

    @classmethod
    def of(cls, graph: Graph) -> "_Draft":
        sinks = {"h_new": graph.h_new}
        if graph.c_new is not None:
            sinks["c_new"] = graph.c_new
        return cls(list(graph.nodes), sinks, graph.c_new is not None, graph.node_labels())

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def readers(self, i: int) -> list[int]:
        return [k for k, node in enumerate(self.nodes) if i in node.inputs]

    def fanout(self, i: int) -> int:
        slots = sum(node.inputs.count(i) for node in self.nodes)
        return slots + sum(1 for s in self.sinks.values() if s == i)

    def redirect(self, old: int, new: int, except_node: int | None = None) -> None:
        """Every reader of `old` (and a sink on it) reads `new` instead."""
        for k, node in enumerate(self.nodes):
            if k != except_node and old in node.inputs:
                inputs = tuple(new if j == old else j for j in node.inputs)
                self.nodes[k] = dataclasses.replace(node, inputs=inputs)
        for sink, index in self.sinks.items():
            if index == old:
                self.sinks[sink] = new

    def ancestor_choices(self, i: int) -> list[int]:
        allowed = {"x", "h"} | ({"c"} if self.has_memory else set())
        return sorted(
            j for j in ancestors(self.nodes, i)
            if self.nodes[j].op != CONST and (self.nodes[j].op not in SOURCES or self.nodes[j].op in allowed)
        )  # fmt: skip

    def label(self, i: int) -> str:
        return self.labels.get(i) or f"new {self.nodes[i].op}"

    def build(self) -> Graph:
        return Graph.build(self.nodes, self.sinks["h_new"], self.sinks.get("c_new"))


def _activation_text(op: str, bias: float) -> str:
    return f"W(bias={bias:g})" if op == LINEAR else op


def _is_activation(node: Node) -> bool:
    return node.op in UNARY or node.op == LINEAR


# Each transform: (applies(draft, i) -> bool, apply(draft, i, rng) -> description).
def _swap_activation(d: _Draft, i: int, rng: np.random.Generator) -> str:
    node = d.nodes[i]
    current = (node.op, node.bias if node.op == LINEAR else 0.0)
    options = [a for a in d.activations if a != current]
    op, bias = options[rng.integers(len(options))]
    label = d.label(i)
    d.nodes[i] = dataclasses.replace(node, op=op, bias=bias)
    return f"swap_activation {label}: {_activation_text(*current)} -> {_activation_text(op, bias)}"


def _swap_binary(d: _Draft, i: int, rng: np.random.Generator) -> str:
    node = d.nodes[i]
    options = [op for op in BINARY if op != node.op]
    op = options[rng.integers(len(options))]
    label = d.label(i)
    d.nodes[i] = dataclasses.replace(node, op=op)
    return f"swap_binary {label}: {BINARY[node.op]} -> {BINARY[op]}"


def _insert_activation(d: _Draft, i: int, rng: np.random.Generator) -> str:
    node = d.nodes[i]
    slot = int(rng.integers(len(node.inputs)))
    op, bias = d.activations[rng.integers(len(d.activations))]
    new = d.add(Node(op, (node.inputs[slot],), bias))
    inputs = list(node.inputs)
    inputs[slot] = new
    d.nodes[i] = dataclasses.replace(node, inputs=tuple(inputs))
    return f"insert_activation {_activation_text(op, bias)} before operand {slot} of {d.label(i)}"


def _remove(d: _Draft, i: int, rng: np.random.Generator) -> str:
    label = d.label(i)
    d.redirect(i, d.nodes[i].inputs[0])
    return f"remove {label}"


def _replace_with_ancestor(d: _Draft, i: int, rng: np.random.Generator) -> str:
    choices = d.ancestor_choices(i)
    j = choices[rng.integers(len(choices))]
    label = d.label(i)
    d.redirect(i, j)
    return f"replace_with_ancestor {label} -> {d.label(j)}"


def _combine_with_ancestor(op: str) -> Callable:
    def apply(d: _Draft, i: int, rng: np.random.Generator) -> str:
        choices = d.ancestor_choices(i)
        j = choices[rng.integers(len(choices))]
        new = d.add(Node(op, (i, j)))
        d.redirect(i, new, except_node=new)
        name = "add_ancestor" if op == "add" else "multiply_ancestor"
        return f"{name} {d.label(i)} {BINARY[op]} {d.label(j)}"

    return apply


TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "swap_activation": (lambda d, i: _is_activation(d.nodes[i]), _swap_activation),
    "swap_binary": (lambda d, i: d.nodes[i].op in BINARY, _swap_binary),
    "insert_activation": (lambda d, i: True, _insert_activation),
    "remove": (
        lambda d, i: _is_activation(d.nodes[i])
        and d.fanout(i) == 1
        and i not in d.sinks.values()
        and d.nodes[d.nodes[i].inputs[0]].op != CONST,
        _remove,
    ),
    "replace_with_ancestor": (lambda d, i: bool(d.ancestor_choices(i)), _replace_with_ancestor),
    "add_ancestor": (lambda d, i: bool(d.ancestor_choices(i)), _combine_with_ancestor("add")),
    "multiply_ancestor": (lambda d, i: bool(d.ancestor_choices(i)), _combine_with_ancestor("mul")),
}


def _mutate_once(graph: Graph, rng: np.random.Generator, activations=ACTIVATIONS) -> tuple[_Draft, list[str]]:
    draft = dataclasses.replace(_Draft.of(graph), activations=activations)
    p = rng.random()
    computed = [i for i, n in enumerate(graph.nodes) if n.op not in SOURCES and n.op != CONST]
    chosen = [i for i in computed if rng.random() < p]
    if not chosen:  # a mutation changes at least one node
        chosen = [computed[rng.integers(len(computed))]]
    done = []
    for i in chosen:
        applicable = [name for name, (applies, _) in TRANSFORMS.items() if applies(draft, i)]
        name = applicable[rng.integers(len(applicable))]
        done.append(TRANSFORMS[name][1](draft, i, rng))
    return draft, done


def usable(graph: Graph, max_nodes: int = MAX_NODES) -> bool:
    """Whether a valid graph is small enough, compiles, and gives finite outputs."""
    if len(graph.nodes) > max_nodes:
        return False
    from cells import compile_cell  # imports jax: here, so that `status` and strategies need none

    compile_cell(graph)
    with np.errstate(all="ignore"):
        h_new, c_new = evaluate(graph, fingerprint_inputs(), fingerprint_params(graph))
    return all(v is None or np.all(np.isfinite(v)) for v in (h_new, c_new))


def mutate(
    graph: Graph, rng: np.random.Generator, max_tries: int = 100, max_nodes: int = MAX_NODES,
    activations: tuple[tuple[str, float], ...] = ACTIVATIONS,
) -> Mutant:  # fmt: skip
    """Returns a valid child of `graph` that differs from it (see the module docstring).

    Args:
      graph: the parent.
      rng: the source of every random decision.
      max_tries: draws before giving up.
      max_nodes: larger children are rejected.
      activations: (op, bias) pairs the activation transforms draw from.

    Raises:
      RuntimeError: no valid child in `max_tries` draws (a parent with nothing to mutate).
    """
    for _ in range(max_tries):
        draft, done = _mutate_once(graph, rng, activations)
        try:
            child = draft.build()
        except CellValidationError:
            continue
        if child.hash != graph.hash and usable(child, max_nodes):
            return Mutant(child, graph.hash, tuple(done))
    raise RuntimeError(f"no valid mutant of {graph.hash} in {max_tries} tries")


def mutation_attempt(graph: Graph, rng: np.random.Generator) -> Graph | None:
    """One draw of the operator without retries: the child, or None if it was rejected."""
    draft, _ = _mutate_once(graph, rng)
    try:
        child = draft.build()
    except CellValidationError:
        return None
    return child if child.hash != graph.hash and usable(child) else None


# ------------------------------------------------------------------------------- random cells
def random_cell(
    rng: np.random.Generator, size: int = 6, memory: bool | None = None, max_tries: int = 200,
    activations: tuple[tuple[str, float], ...] = ACTIVATIONS,
) -> Graph:  # fmt: skip
    """A random valid cell with about `size` computed nodes.

    Each new node applies a random activation (of `activations`) or binary op to values made
    so far, preferring recent ones; `h_new` is the last value, `c_new` (with `memory`, by default
    drawn with probability 1/2) another one. Cells that ignore x or h, whose h_new does not read c
    (memory cells), or that do not validate are drawn again.
    """
    if memory is None:
        memory = bool(rng.random() < 0.5)
    for _ in range(max_tries):
        sources = ["x", "h"] + (["c"] if memory else [])
        nodes = [Node(s, name=s) for s in sources]

        def pick() -> int:
            weights = np.arange(1, len(nodes) + 1, dtype=float) ** 2
            return int(rng.choice(len(nodes), p=weights / weights.sum()))

        for _ in range(size):
            if rng.random() < 0.5:
                op, bias = activations[rng.integers(len(activations))]
                nodes.append(Node(op, (pick(),), bias))
            else:
                op = list(BINARY)[rng.integers(len(BINARY))]
                nodes.append(Node(op, (pick(), pick())))
        h_new = len(nodes) - 1
        c_new = None
        if memory:
            candidates = [i for i in range(len(sources), len(nodes) - 1)]
            if not candidates:
                continue
            c_new = candidates[rng.integers(len(candidates))]
        try:
            graph = Graph.build(nodes, h_new, c_new)
        except CellValidationError:
            continue
        reads_c = any(graph.nodes[j].op == "c" for j in graph.ancestors(graph.h_new))
        if (reads_c or not memory) and usable(graph):
            return graph
    raise RuntimeError(f"no valid random cell of size {size} in {max_tries} tries")


# ------------------------------------------------------------------------------------ dedup
@dataclasses.dataclass
class Deduper:
    """Remembers cells by structural hash and by fingerprint; rejects repeats and counts why."""

    hashes: set[str] = dataclasses.field(default_factory=set)
    fingerprints: set[str] = dataclasses.field(default_factory=set)
    accepted: int = 0
    rejected_hash: int = 0
    rejected_fingerprint: int = 0

    def add(self, graph: Graph) -> bool:
        """Records `graph`; True if it is new, False if its hash or fingerprint was seen."""
        if graph.hash in self.hashes:
            self.rejected_hash += 1
            return False
        if graph.fingerprint in self.fingerprints:
            self.hashes.add(graph.hash)
            self.rejected_fingerprint += 1
            return False
        self.hashes.add(graph.hash)
        self.fingerprints.add(graph.fingerprint)
        self.accepted += 1
        return True

    def report(self) -> str:
        return (f"{self.accepted} new, {self.rejected_hash} rejected as the same structure, "
                f"{self.rejected_fingerprint} as the same function")  # fmt: skip
