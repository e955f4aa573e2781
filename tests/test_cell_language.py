"""The cell language: parsing, canonical text, rendering, and one-line errors for bad cells."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cells import (
    BASELINES,
    CellSyntaxError,
    CellValidationError,
    Graph,
    baseline,
    parse,
)
from cells.graph import Node


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_text_round_trips(name):
    graph = baseline(name)
    assert parse(graph.text()) == graph
    assert parse(graph.text()).text() == graph.text()


def test_text_keeps_the_authors_order_and_drops_comments():
    text = "# a comment\nr = sigmoid(W(x) + W(h))  # trailing\n\nh_new = tanh(W(r * h) + W(x))\n"
    assert parse(text).text() == "r = sigmoid(W(x) + W(h))\nh_new = tanh(W(r * h) + W(x))\n"


def test_lstm_text_is_the_papers_equations():
    assert baseline("lstm").text() == (
        "i = tanh(W(x) + W(h))\n"
        "j = sigmoid(W(x) + W(h))\n"
        "f = sigmoid(W(x) + W(h))\n"
        "o = sigmoid(W(x) + W(h))\n"
        "c_new = c * f + i * j\n"
        "h_new = tanh(c_new) * o\n"
    )


def test_lstm_b_differs_only_in_the_forget_bias():
    assert baseline("lstm_b").text() == baseline("lstm").text().replace(
        "f = sigmoid(W(x) + W(h))", "f = sigmoid(W(x) + W(h, bias=1))"
    )


def test_graph_is_immutable_and_hashable():
    graph = baseline("gru")
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.h_new = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.nodes[0].op = "h"
    assert {graph: 1}[parse(graph.text())] == 1


@pytest.mark.parametrize(
    "name, n_linear", [("tanh", 2), ("lstm", 8), ("lstm_f", 6), ("gru", 6), ("mut1", 4),
                       ("mut2", 5), ("mut3", 6)],
)  # fmt: skip
def test_num_params_counts_one_matrix_and_bias_per_w(name, n_linear):
    assert baseline(name).num_params(10) == n_linear * (10 * 10 + 10)
    assert len(baseline(name).linear_nodes()) == n_linear


def test_parentheses_are_kept_where_they_change_the_tree():
    text = (
        "a = sigmoid(W(x) - (W(h) - W(x)))\n"
        "b = tanh(W(h) * (a + W(x)))\n"
        "h_new = a - b - a * (b * a)\n"
    )
    graph = parse(text)
    assert graph.text() == text
    assert parse(graph.text()) == graph
    # parentheses that change nothing are dropped; the graph is the same
    assert parse(text.replace("a - b - a", "((a - b)) - (a)")) == graph


def test_shared_unnamed_values_get_names_so_text_never_duplicates_a_w():
    # A graph built by code (as mutation will) where one W feeds two operands.
    nodes = [Node("x", name="x"), Node("h", name="h"), Node("W", (0,)), Node("W", (1,)),
             Node("add", (2, 3)), Node("tanh", (4,)), Node("mul", (5, 5))]  # fmt: skip
    graph = Graph.build(nodes, h_new=6)
    assert graph.text() == "u1 = tanh(W(x) + W(h))\nh_new = u1 * u1\n"
    assert parse(graph.text()) == graph


def test_build_drops_values_no_sink_reads():
    nodes = [Node("x", name="x"), Node("h", name="h"), Node("W", (0,)), Node("W", (1,)),
             Node("add", (2, 3)), Node("tanh", (0,), name="dead"), Node("tanh", (4,))]  # fmt: skip
    assert Graph.build(nodes, h_new=6).text() == "h_new = tanh(W(x) + W(h))\n"


def test_bias_forms():
    graph = parse("h_new = tanh(W(x, bias=-0.5) + W(h, bias=+1.1) + W(x, bias=2))")
    assert graph.text() == "h_new = tanh(W(x, bias=-0.5) + W(h, bias=1.1) + W(x, bias=2))\n"
    assert [graph.nodes[i].bias for i in graph.linear_nodes()] == [-0.5, 1.1, 2.0]


def test_linear_labels_name_the_papers_matrices():
    assert list(baseline("lstm").linear_labels().values()) == [
        "i.x", "i.h", "j.x", "j.h", "f.x", "f.h", "o.x", "o.h",
    ]  # fmt: skip
    assert list(baseline("gru").linear_labels().values()) == [
        "r.x", "r.h", "z.x", "z.h", "cand.x", "cand.r*h",
    ]  # fmt: skip
    repeated = parse("h_new = tanh(W(x) + W(h) + W(x))").linear_labels()
    assert list(repeated.values()) == ["h_new.x", "h_new.h", "h_new.x~2"]


def test_latex_typesets_every_assignment():
    latex = baseline("lstm_b").latex()
    assert latex.startswith("\\begin{aligned}") and latex.endswith("\\end{aligned}")
    assert latex.count("&=") == 6
    assert latex.count("\\left(") == latex.count("\\right)")
    assert "c_t &= c_{t-1} \\odot f + i \\odot j" in latex
    assert "h_t &= \\tanh\\left(c_t\\right) \\odot o" in latex
    assert "\\sigma" in latex and "x_t" in latex and "h_{t-1}" in latex


# ------------------------------------------------------------------------------ error messages
VALID_TAIL = "h_new = tanh(W(x) + W(h))\n"

ERRORS = [
    # (text, exception type, the exact one-line message)
    ("h_new = softmax(W(x) + W(h))", CellSyntaxError,
     "line 1: unknown op 'softmax' (ops: W, tanh, sigmoid, relu, leaky_relu, identity)"),
    ("h_new = tanh(W(x), W(h))", CellSyntaxError, "line 1: tanh takes 1 argument, got 2"),
    ("h_new = tanh(W(x) + W())", CellSyntaxError, "line 1: W takes 1 argument, got 0"),
    ("h_new = tanh(W(x) + W(q))", CellValidationError, "line 1: undefined name 'q'"),
    ("a = tanh(W(x))\na = tanh(W(h))\n" + VALID_TAIL, CellValidationError,
     "line 2: 'a' is assigned twice (first on line 1)"),
    ("a = tanh(W(x) + W(h))\n", CellValidationError,
     "missing 'h_new': a cell must assign h_new"),
    ("", CellValidationError, "missing 'h_new': a cell must assign h_new"),
    ("u = tanh(W(x))\n" + VALID_TAIL, CellValidationError,
     "line 1: 'u' is assigned but never used"),
    ("h_new = tanh(W(h) + W(h))", CellValidationError,
     "line 1: the cell ignores its input 'x': neither h_new nor c_new depends on it"),
    ("h_new = tanh(W(x))", CellValidationError,
     "line 1: the cell ignores its input 'h': neither h_new nor c_new depends on it"),
    ("h_new = tanh(W(x) + W(h, bias=z))", CellSyntaxError, "line 1: bias= must be a number, got 'z'"),
    ("h_new = tanh(W(x) + W(h, bias='1'))", CellSyntaxError,
     "line 1: bias= must be a number, got ''1''"),
    ("h_new = tanh(W(x) + W(h, bias=1e400))", CellValidationError,
     "line 1: bias=1e400 is outside [-100, 100]"),
    ("h_new = tanh(W(x) + W(h, bias=1000))", CellValidationError,
     "line 1: bias=1000 is outside [-100, 100]"),
    ("h_new = tanh(W(x) + W(h, scale=2))", CellSyntaxError,
     "line 1: W got an unknown keyword 'scale' (only bias=)"),
    ("h_new = tanh(W(x) + W(h), bias=1)", CellSyntaxError,
     "line 1: tanh takes no keyword arguments, got 'bias='"),
    ("h_new = jnp.tanh(W(x) + W(h))", CellSyntaxError,
     "line 1: attribute access 'jnp.tanh' is not allowed: ops are W, tanh, sigmoid, relu, leaky_relu, identity"),
    ("h_new = tanh(W(x) + W(h.T))", CellSyntaxError,
     "line 1: attribute access 'h.T' is not part of the cell language"),
    ("h_new = (lambda a: a)(W(x) + W(h))", CellSyntaxError,
     "line 1: lambda 'lambda a: a' is not allowed: ops are W, tanh, sigmoid, relu, leaky_relu, identity"),
    ("h_new = tanh(W(x) + W(h[0]))", CellSyntaxError,
     "line 1: subscript 'h[0]' is not part of the cell language"),
    ("import os\n" + VALID_TAIL, CellSyntaxError,
     "line 1: import statement is not allowed: write 'name = expression'"),
    ("from os import system\n" + VALID_TAIL, CellSyntaxError,
     "line 1: import statement is not allowed: write 'name = expression'"),
    ("h_new = __import__('os')", CellSyntaxError,
     "line 1: unknown op '__import__' (ops: W, tanh, sigmoid, relu, leaky_relu, identity)"),
    ("h_new = eval('1')", CellSyntaxError,
     "line 1: unknown op 'eval' (ops: W, tanh, sigmoid, relu, leaky_relu, identity)"),
    ("h_new = tanh(W(x) / W(h))", CellSyntaxError, "line 1: operator '/' is not allowed (use +, -, *)"),
    ("h_new = tanh(W(x) ** W(h))", CellSyntaxError, "line 1: operator '**' is not allowed (use +, -, *)"),
    ("h_new = tanh(W(x) @ W(h))", CellSyntaxError, "line 1: operator '@' is not allowed (use +, -, *)"),
    ("h_new = tanh(-W(x) + W(h))", CellSyntaxError,
     "line 1: unary '-' in '-W(x)' is not allowed (only binary +, -, *; write 1 - a for a complement)"),
    ("h_new = tanh(W(x) + 2 * W(h))", CellSyntaxError,
     "line 1: constant 2 is not allowed: 1 is the only constant (use bias= for offsets)"),
    ("h_new = tanh(W(x) + W(h)", CellSyntaxError, "line 1: invalid syntax near"),
    ("a = tanh(W(x)\n" + VALID_TAIL, CellSyntaxError, "line 1: invalid syntax near"),
    ("h_new = tanh(W(x) + W(h)) if x else h", CellSyntaxError,
     "line 1: conditional expression 'tanh(W(x) + W(h)) if x else h' is not part of the cell language"),
    ("tanh(W(x) + W(h))", CellSyntaxError,
     "line 1: expression without assignment is not allowed: write 'name = expression'"),
    ("h_new += tanh(W(x) + W(h))", CellSyntaxError,
     "line 1: augmented assignment (+=, -=, ...) is not allowed: write 'name = expression'"),
    ("a = h_new = tanh(W(x) + W(h))", CellSyntaxError,
     "line 1: chained assignment 'a = b = ...' is not allowed"),
    ("h_new, c_new = tanh(W(x)), tanh(W(h))", CellSyntaxError,
     "line 1: cannot assign to 'h_new, c_new': the left side must be a plain name"),
    ("x = tanh(W(h))\n" + VALID_TAIL, CellValidationError, "line 1: cannot assign to the input 'x'"),
    ("tanh = tanh(W(h))\n" + VALID_TAIL, CellValidationError,
     "line 1: cannot assign to 'tanh': it is the name of an op"),
    ("a = tanh(W(x) + W(h))\nh_new = a", CellValidationError,
     "line 2: 'h_new = a' only renames a value: an assignment must apply an op"),
    ("a = 1\n" + VALID_TAIL, CellValidationError, "line 1: 'a = 1' assigns a constant"),
    ("h_new = tanh(W(x) + W(h) + b)\nb = tanh(W(x))", CellValidationError,
     "line 1: 'b' is used before it is assigned (on line 2)"),
    ("h_new = tanh(W(x) + W(h) * tanh)", CellSyntaxError, "line 1: 'tanh' is an op: call it as tanh(...)"),
    ("k = tanh(1)\nh_new = tanh(W(x) + W(h)) * k", CellValidationError,
     "line 1: k is constant: it reads neither x, h nor c"),
    ("h_new = tanh(W(x) + W(h) + c)", CellValidationError,
     "line 1: the cell reads 'c' but never assigns c_new, so c would stay zero"),
    ("c_new = tanh(W(x))\nh_new = tanh(W(c_new) + W(h))", CellValidationError,
     "line 1: c_new is assigned but 'c' is never read, so the memory cell carries nothing"),
    ("h_new = tanh(W(x) + W(h) + 'abc')", CellSyntaxError,
     "line 1: constant 'abc' is not part of the cell language"),
]  # fmt: skip


@pytest.mark.parametrize("text, kind, message", ERRORS, ids=range(len(ERRORS)))
def test_bad_cell_gets_a_one_line_error(text, kind, message):
    with pytest.raises(kind) as caught:
        parse(text, source="cell.txt")
    text_of_error = str(caught.value)
    assert "\n" not in text_of_error
    assert text_of_error.startswith("cell.txt: " + message)


def test_absurdly_deep_nesting_is_a_clear_error():
    text = "h_new = " + "tanh(" * 5000 + "W(x) + W(h)" + ")" * 5000
    with pytest.raises(CellSyntaxError) as caught:
        parse(text)
    assert len(str(caught.value)) < 200 and "\n" not in str(caught.value)
    deep_but_fine = parse("h_new = " + "tanh(" * 150 + "W(x) + W(h)" + ")" * 150)
    assert parse(deep_but_fine.text()) == deep_but_fine


def test_error_line_numbers_count_comment_and_blank_lines():
    with pytest.raises(CellSyntaxError, match=r"^line 4: unknown op 'tnh'"):
        parse("# header\n\nr = sigmoid(W(x) + W(h))\nh_new = tnh(W(r * h) + W(x))\n")


# ------------------------------------------------------------------- property: random cells
UNARY = ["tanh", "sigmoid", "relu", "identity"]


@st.composite
def cell_texts(draw):
    """Random valid cell text: a chain of named values over x, h and earlier names."""
    n = draw(st.integers(1, 5))
    names, lines = ["x", "h"], []

    def expr(depth):
        choice = draw(st.integers(0, 4 if depth < 3 else 1))
        if choice == 0:
            return draw(st.sampled_from(names))
        if choice == 1:
            bias = draw(st.sampled_from([0, 1, 0.9, 1.1, -2]))
            arg = draw(st.sampled_from(names))
            return f"W({arg})" if bias == 0 else f"W({arg}, bias={bias})"
        if choice == 2:
            return f"{draw(st.sampled_from(UNARY))}({expr(depth + 1)})"
        op = draw(st.sampled_from(["+", "-", "*"]))
        left, right = expr(depth + 1), expr(depth + 1)
        return f"({left} {op} {right})" if choice == 3 else f"{left} {op} (1 - {right})"

    for k in range(n):
        name = f"v{k}"
        lines.append(f"{name} = tanh({expr(0)})")
        names.append(name)
    # h_new reads every value, x and h, so nothing is unused
    lines.append("h_new = " + " + ".join(f"W({v})" for v in names))
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(cell_texts())
def test_random_cells_round_trip(text):
    graph = parse(text)
    assert parse(graph.text()) == graph
    assert graph.num_params(3) == len(graph.linear_nodes()) * 12
