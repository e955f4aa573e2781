"""The immutable cell graph: nodes, canonical order, validation and rendering.

A cell maps (x_t, h_{t-1}, c_{t-1}) to (h_t, c_t). Every value has the hidden width H. The graph is
a DAG of `Node`s in topological order; the order of independent values is the order they were
written in, so `text()` reads like its source. Two graphs are equal when they have the same
equations in the same order (`cells.hashing` identifies cells up to renaming and reordering). Text in the cell language is turned into a `Graph` by `cells.parse`.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
import re
from typing import Iterable, Iterator

SOURCES = ("x", "h", "c")
SINKS = ("h_new", "c_new")
CONST = "one"
LINEAR = "W"
UNARY = ("tanh", "sigmoid", "relu", "leaky_relu", "identity")  # leaky_relu: slope 0.01 (PyTorch's)
LEAKY_SLOPE = 0.01
BINARY = {"add": "+", "sub": "-", "mul": "*"}
OPS = (LINEAR, *UNARY)  # the callables of the text language
BIAS_LIMIT = 100.0  # |bias=| above this saturates every gate; treated as a typo


class CellError(ValueError):
    """A cell that cannot be used; the message is one line and names line, name or token."""

    def __init__(
        self,
        message: str,
        line: int | None = None,
        source: str | None = None,
        subject: str | None = None,
    ):
        self.message = message
        self.line = line
        self.source = source
        self.subject = subject  # the name the message is about, so a parser can add its line
        where = f"line {line}: " if line is not None else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{where}{message}")


class CellSyntaxError(CellError):
    """Text that is not in the cell language (bad Python, or Python outside the language)."""


class CellValidationError(CellError):
    """Well-formed text whose graph is not a usable cell (undefined, unused or missing values)."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One value of the cell.

    Attributes:
      op: a source (`x`, `h`, `c`), `one` (the constant 1), `W`, a unary activation or a binary op
        (`add`, `sub`, `mul`).
      inputs: indices of the operand nodes, in operand order.
      bias: initial bias of a `W` node (its `bias=`); 0 for other ops.
      name: the assigned name, if any (`h_new`/`c_new` for sinks, the source name for sources).
    """

    op: str
    inputs: tuple[int, ...] = ()
    bias: float = 0.0
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Graph:
    """An immutable recurrent cell in canonical node order.

    Build one with `cells.parse(text)` or `Graph.build(nodes, h_new, c_new)`. Equality is
    structural equality of the equations including names; see `cells.hashing` for identity up to
    renaming and commutation.
    """

    nodes: tuple[Node, ...]
    h_new: int
    c_new: int | None = None

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, nodes: Iterable[Node], h_new: int, c_new: int | None = None) -> "Graph":
        """Returns the canonical graph of the values reachable from the sinks.

        Nodes that no sink reads are dropped, the constant and the sources are shared, every
        non-trivial value read more than once gets a name (so that `text()` never duplicates a
        `W`), and the sinks are named `h_new` and `c_new`. Raises CellValidationError when the result
        is not a usable cell (see `validate`).
        """
        nodes = list(nodes)
        if c_new is not None and c_new == h_new:
            raise CellValidationError("h_new and c_new are the same value; give each its own op")
        for sink, index in (("h_new", h_new), ("c_new", c_new)):
            if index is not None and (nodes[index].op in SOURCES or nodes[index].op == CONST):
                raise CellValidationError(f"{sink} must be computed by an op", subject=sink)
        shared: dict[str, int] = {}  # source/const op -> first index, so each appears once

        def canon(i: int) -> int:
            node = nodes[i]
            if node.op in SOURCES or node.op == CONST:
                return shared.setdefault(node.op, i)
            return i

        reachable: set[int] = set()
        stack = [canon(i) for i in (h_new, c_new) if i is not None]
        while stack:
            i = stack.pop()
            if i not in reachable:
                reachable.add(i)
                stack.extend(canon(j) for j in nodes[i].inputs)
        inputs_of = {i: tuple(canon(j) for j in nodes[i].inputs) for i in reachable}
        fanout = dict.fromkeys(reachable, 0)
        for i in reachable:
            for j in inputs_of[i]:
                fanout[j] += 1
        sinks = {canon(h_new): "h_new"} | ({canon(c_new): "c_new"} if c_new is not None else {})
        trivial = {i for i in reachable if nodes[i].op in SOURCES or nodes[i].op == CONST}
        names = {}
        for i in reachable - trivial:
            name = sinks.get(i) or (nodes[i].name if nodes[i].name not in SINKS else None)
            names[i] = name if name or fanout[i] < 2 else ""  # "": shared, named below
        names = {i: name for i, name in names.items() if name is not None}
        try:
            order = _text_order(inputs_of, trivial, names, rank={op: r for r, op in enumerate(
                (*SOURCES, CONST))}, ops={i: nodes[i].op for i in reachable})  # fmt: skip
        except RecursionError:  # an unnamed cycle: only code that builds nodes by hand can make one
            raise CellValidationError("the graph has a cycle") from None
        position = {old: new for new, old in enumerate(order)}
        taken, counter, remapped = set(names.values()), 0, []
        for old in order:
            node = nodes[old]
            name = node.op if node.op in SOURCES else names.get(old)
            if name == "":
                counter += 1
                while f"u{counter}" in taken:
                    counter += 1
                name = f"u{counter}"
            inputs = tuple(position[j] for j in inputs_of[old])
            remapped.append(dataclasses.replace(node, inputs=inputs, name=name))
        h_idx = position[canon(h_new)]
        c_idx = position[canon(c_new)] if c_new is not None else None
        graph = cls(tuple(remapped), h_idx, c_idx)
        graph.validate()
        return graph

    # ---------------------------------------------------------------------------------- structure
    def ancestors(self, index: int) -> set[int]:
        """Indices of every node that `index` reads, directly or not (itself excluded)."""
        return ancestors(self.nodes, index)

    def sinks(self) -> list[int]:
        return [self.h_new] + ([self.c_new] if self.c_new is not None else [])

    def index_of(self, name: str) -> int:
        for i, node in enumerate(self.nodes):
            if node.name == name:
                return i
        raise KeyError(name)

    def uses(self, source: str) -> bool:
        return any(node.op == source for node in self.nodes)

    def linear_nodes(self) -> list[int]:
        """Indices of the `W` nodes, in canonical order."""
        return [i for i, node in enumerate(self.nodes) if node.op == LINEAR]

    @functools.cached_property
    def hash(self) -> str:
        """Canonical structural hash, invariant to names, order and commutation (cells.hashing)."""
        from cells.hashing import structural_hash

        return structural_hash(self)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Functional fingerprint: outputs on fixed random inputs and parameters (cells.hashing)."""
        from cells.hashing import fingerprint

        return fingerprint(self)

    def to_nasbench_nlp(self) -> dict:
        """This cell as a NAS-Bench-NLP recipe (`cells.nasbench`); CellValidationError if it has
        no equivalent there."""
        from cells.nasbench import to_nasbench_nlp

        return to_nasbench_nlp(self)

    def num_params(self, hidden: int) -> int:
        """Trainable parameters of one layer of this cell: an H×H matrix and H biases per `W`."""
        return len(self.linear_nodes()) * (hidden * hidden + hidden)

    def validate(self) -> None:
        """Raises CellValidationError naming the problem if this graph is not a usable cell."""
        for source in ("x", "h"):
            if not self.uses(source):
                raise CellValidationError(
                    f"the cell ignores its input '{source}': neither h_new nor c_new depends on it",
                    subject="h_new",
                )
        if self.uses("c") and self.c_new is None:
            raise CellValidationError(
                "the cell reads 'c' but never assigns c_new, so c would stay zero", subject="c"
            )
        if self.c_new is not None and not self.uses("c"):
            raise CellValidationError(
                "c_new is assigned but 'c' is never read, so the memory cell carries nothing",
                subject="c_new",
            )
        for i in sorted(self._constant_nodes()):
            if self.nodes[i].op != CONST:
                name = self.nodes[i].name
                what = name or f"'{self.expression(i)}'"
                raise CellValidationError(
                    f"{what} is constant: it reads neither x, h nor c", subject=name
                )
        for node in self.nodes:
            if node.op == LINEAR and not (
                math.isfinite(node.bias) and abs(node.bias) <= BIAS_LIMIT
            ):
                raise CellValidationError(f"bias={node.bias!r} is outside [-100, 100]")

    def _constant_nodes(self) -> set[int]:
        constant: set[int] = set()
        for i, node in enumerate(self.nodes):
            if node.op == CONST or (node.inputs and all(j in constant for j in node.inputs)):
                constant.add(i)
        return constant

    # ---------------------------------------------------------------------------------- rendering
    def assignments(self) -> Iterator[tuple[str, int]]:
        """(name, index) of every named computed value, in canonical order."""
        for i, node in enumerate(self.nodes):
            if node.name is not None and node.op not in SOURCES:
                yield node.name, i

    def expression(self, index: int) -> str:
        """The right-hand side that defines node `index`, named operands kept as names."""
        return _render(self.nodes, index, top=True)

    def text(self) -> str:
        """Canonical equations, one assignment per line; `parse(g.text()) == g`."""
        return "\n".join(f"{name} = {self.expression(i)}" for name, i in self.assignments()) + "\n"

    def latex(self) -> str:
        """The equations as a LaTeX `aligned` block; `W_k`, `b_k` is the k-th `W` in text order."""
        labels = {i: k + 1 for k, i in enumerate(self.linear_nodes())}
        lines = [
            rf"{_latex_name(name)} &= {_latex(self, i, labels, top=True)}"
            for name, i in self.assignments()
        ]
        return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"

    def linear_labels(self) -> dict[int, str]:
        """A readable, unique label for each `W` node, used to address its parameters.

        The label is `owner.arg`: the name of the assignment the `W` appears in, and its operand as
        written (`i.x`, `i.h` for the paper's W_xi, W_hi; `cand.r*h` for the GRU's W(r * h)).
        A repeated label gets `~2`, `~3`, ... in canonical order.
        """
        owner = self._owners()
        labels: dict[int, str] = {}
        counts: dict[str, int] = {}
        for i in self.linear_nodes():
            arg = _render(self.nodes, self.nodes[i].inputs[0]).replace(" ", "")
            base = f"{owner[i]}.{arg}"
            counts[base] = counts.get(base, 0) + 1
            labels[i] = base if counts[base] == 1 else f"{base}~{counts[base]}"
        return labels

    def node_labels(self) -> dict[int, str]:
        """A short readable label per node: its name, its W label, or `op in owner`."""
        owner = self._owners()
        labels = {i: f"{node.op} in {owner.get(i, '?')}" for i, node in enumerate(self.nodes)}
        labels.update({i: f"W {label}" for i, label in self.linear_labels().items()})
        labels.update({i: node.name for i, node in enumerate(self.nodes) if node.name})
        return labels

    def _owners(self) -> dict[int, str]:
        """Name of the assignment each unnamed node is written in."""
        owner: dict[int, str] = {}
        for name, i in self.assignments():
            stack = [i]
            while stack:
                j = stack.pop()
                owner[j] = name
                stack.extend(k for k in self.nodes[j].inputs if self.nodes[k].name is None)
        return owner


def _text_order(inputs_of, trivial, names, rank, ops) -> list[int]:
    """The node order in which `text()` writes a graph.

    Sources and the constant come first; then each named value (an assignment), after the named
    values it reads and otherwise in the order the nodes were given (so text written top to bottom
    keeps its order), preceded by the unnamed nodes of its expression in left-to-right post-order.
    """

    def unnamed_subtree(i: int) -> list[int]:
        out = []
        for j in inputs_of[i]:
            if j not in trivial and j not in names:
                out += unnamed_subtree(j)
        return out + [i]

    def named_inputs(i: int) -> set[int]:
        found = set()
        for j in unnamed_subtree(i)[:-1] + [i]:
            found |= {k for k in inputs_of[j] if k in names}
        return found

    waiting = {i: named_inputs(i) for i in names}
    readers: dict[int, list[int]] = {}
    for i, needed in waiting.items():
        for j in needed:
            readers.setdefault(j, []).append(i)
    ready = [i for i, needed in waiting.items() if not needed]
    heapq.heapify(ready)
    order = sorted(trivial, key=lambda i: rank[ops[i]])
    while ready:
        i = heapq.heappop(ready)
        order += unnamed_subtree(i)
        for k in readers.get(i, ()):
            waiting[k].discard(i)
            if not waiting[k]:
                heapq.heappush(ready, k)
    if len(order) != len(inputs_of):
        raise CellValidationError("the graph has a cycle")
    return order


def ancestors(nodes: tuple[Node, ...] | list[Node], index: int) -> set[int]:
    """Indices of every node that node `index` reads, directly or not (itself excluded)."""
    found: set[int] = set()
    stack = list(nodes[index].inputs)
    while stack:
        j = stack.pop()
        if j not in found:
            found.add(j)
            stack.extend(nodes[j].inputs)
    return found


_PRECEDENCE = {"add": 1, "sub": 1, "mul": 2}


def format_bias(value: float) -> str:
    """Shortest text that parses back to the same float (`1`, `0.9`, `-2.5`)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _render(nodes: tuple[Node, ...] | list[Node], index: int, top: bool = False) -> str:
    node = nodes[index]
    if node.name is not None and not top:
        return node.name
    if node.op in SOURCES:
        return node.op
    if node.op == CONST:
        return "1"
    if node.op == LINEAR:
        arg = _render(nodes, node.inputs[0])
        return f"W({arg})" if node.bias == 0 else f"W({arg}, bias={format_bias(node.bias)})"
    if node.op in UNARY:
        return f"{node.op}({_render(nodes, node.inputs[0])})"
    left, right = node.inputs
    return (
        f"{_operand(nodes, left, node.op, 'left')} {BINARY[node.op]} "
        f"{_operand(nodes, right, node.op, 'right')}"
    )


def _needs_parens(nodes, index: int, parent_op: str, side: str) -> bool:
    """Whether an operand needs parentheses to parse back to the same tree (ops are left-assoc)."""
    child = nodes[index]
    if child.name is not None or child.op not in BINARY:
        return False
    parent, mine = _PRECEDENCE[parent_op], _PRECEDENCE[child.op]
    return mine < parent or (side == "right" and mine == parent)


def _operand(nodes, index: int, parent_op: str, side: str) -> str:
    text = _render(nodes, index)
    return f"({text})" if _needs_parens(nodes, index, parent_op, side) else text


_LATEX_OPS = {"tanh": r"\tanh", "sigmoid": r"\sigma", "relu": r"\mathrm{relu}",
              "leaky_relu": r"\mathrm{lrelu}", "identity": ""}  # fmt: skip
_LATEX_NAMES = {"x": "x_t", "h": "h_{t-1}", "c": "c_{t-1}", "h_new": "h_t", "c_new": "c_t"}


def _latex_name(name: str) -> str:
    if name in _LATEX_NAMES:
        return _LATEX_NAMES[name]
    if len(name) == 1:
        return name
    match = re.fullmatch(r"([A-Za-z]+)(\d+)", name)
    if match:
        return f"{match[1]}_{{{match[2]}}}"
    return r"\mathit{" + name.replace("_", r"\_") + "}"


def _latex(graph: Graph, index: int, labels: dict[int, int], top: bool = False) -> str:
    node = graph.nodes[index]
    if node.name is not None and not top:
        return _latex_name(node.name)
    if node.op == CONST:
        return "1"
    if node.op == LINEAR:
        k = labels[index]
        arg = _latex(graph, node.inputs[0], labels)
        if graph.nodes[node.inputs[0]].name is None and graph.nodes[node.inputs[0]].op in BINARY:
            arg = rf"\left({arg}\right)"
        return rf"\left(W_{{{k}}} {arg} + b_{{{k}}}\right)"
    if node.op in UNARY:
        return rf"{_LATEX_OPS[node.op]}\left({_latex(graph, node.inputs[0], labels)}\right)"
    parts = []
    for side, j in zip(("left", "right"), node.inputs):
        text = _latex(graph, j, labels)
        if _needs_parens(graph.nodes, j, node.op, side):
            text = rf"\left({text}\right)"
        parts.append(text)
    symbol = {"add": "+", "sub": "-", "mul": r"\odot"}[node.op]
    return f"{parts[0]} {symbol} {parts[1]}"
