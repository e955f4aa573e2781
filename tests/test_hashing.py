"""Cell identity: the canonical structural hash and the functional fingerprint."""

import dataclasses
import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cells import BASELINES, Graph, baseline, parse
from cells.graph import SINKS, SOURCES
from search.mutation import mutate, random_cell

LSTM_RESPELLED = """\
out_gate = sigmoid(W(h) + W(x))
forget = sigmoid(W(h) + W(x))
gate_in = sigmoid(W(x) + W(h))
candidate = tanh(W(h) + W(x))
c_new = gate_in * candidate + c * forget
h_new = out_gate * tanh(c_new)
"""


def test_hash_is_versioned_and_short():
    assert re.fullmatch(r"v1-[0-9a-f]{16}", baseline("lstm").hash)
    assert re.fullmatch(r"fp1-[0-9a-f]{16}", baseline("lstm").fingerprint)


def test_two_spellings_of_the_lstm_are_one_cell():
    other = parse(LSTM_RESPELLED)
    assert other != baseline("lstm")  # different text ...
    assert other.hash == baseline("lstm").hash  # ... same structure
    assert other.fingerprint == baseline("lstm").fingerprint


def test_every_pair_of_baselines_differs_in_hash_and_fingerprint():
    graphs = [baseline(name) for name in BASELINES]
    assert len({g.hash for g in graphs}) == len(graphs)
    assert len({g.fingerprint for g in graphs}) == len(graphs)


@pytest.mark.parametrize("ablation", ["lstm_f", "lstm_i", "lstm_o", "lstm_b", "lstm_paper_tanh_o"])
def test_lstm_and_each_ablation_differ(ablation):
    assert baseline(ablation).hash != baseline("lstm").hash
    assert baseline(ablation).fingerprint != baseline("lstm").fingerprint


def test_hash_respects_subtraction_order_bias_and_activation():
    base = parse("z = sigmoid(W(x) + W(h))\nh_new = tanh(W(x) - W(h)) * z")
    assert parse("z = sigmoid(W(x) + W(h))\nh_new = tanh(W(h) - W(x)) * z").hash != base.hash
    assert parse("z = sigmoid(W(x) + W(h))\nh_new = tanh(W(x) - W(h, bias=1)) * z").hash != base.hash
    assert parse("z = tanh(W(x) + W(h))\nh_new = tanh(W(x) - W(h)) * z").hash != base.hash
    assert parse("z = sigmoid(W(h) + W(x))\nh_new = z * tanh(W(x) - W(h))").hash == base.hash


def test_sharing_a_w_is_not_the_same_as_two_ws():
    shared = parse("u = W(x)\nh_new = tanh(u * u + W(h))")
    separate = parse("h_new = tanh(W(x) * W(x) + W(h))")
    assert shared.hash != separate.hash
    assert shared.fingerprint != separate.fingerprint


def test_fingerprint_catches_rewrites_the_hash_cannot():
    base = parse("z = sigmoid(W(x) + W(h))\nh_new = z * h + (1 - z) * tanh(W(x))")
    rewrites = [
        "z = sigmoid(identity(W(x) + W(h)))\nh_new = z * h + (1 - z) * tanh(W(x))",
        "z = sigmoid(W(x) + W(h))\nh_new = 1 * (z * h) + (1 - z) * tanh(W(x))",
        "z = sigmoid(W(x) + W(h))\nh_new = z * h - (z - 1) * tanh(W(x))",
    ]
    for text in rewrites:
        other = parse(text)
        assert other.hash != base.hash and other.fingerprint == base.fingerprint, text
    recomputed = parse("h_new = tanh(W(tanh(h)) + W(x)) * tanh(h)")
    shared = parse("t = tanh(h)\nh_new = tanh(W(t) + W(x)) * t")
    assert recomputed.fingerprint == shared.fingerprint


# ---------------------------------------------------------------- properties over random cells
def renamed(graph: Graph) -> str:
    text = graph.text()
    for k, (name, _) in enumerate(graph.assignments()):
        if name not in SINKS:
            text = re.sub(rf"\b{name}\b", f"renamed_{k}", text)
    return text


def permuted(graph: Graph, rng: np.random.Generator) -> Graph:
    """The same graph with nodes listed in another order and commutative operands swapped."""
    perm = rng.permutation(len(graph.nodes))
    position = {old: new for new, old in enumerate(perm)}
    nodes = []
    for old in perm:
        node = graph.nodes[old]
        inputs = tuple(position[j] for j in node.inputs)
        if node.op in ("add", "mul") and rng.random() < 0.5:
            inputs = inputs[::-1]
        nodes.append(dataclasses.replace(node, inputs=inputs))
    c_new = position[graph.c_new] if graph.c_new is not None else None
    return Graph.build(nodes, position[graph.h_new], c_new)


def cells_from(seed: int, mutations: int) -> Graph:
    rng = np.random.default_rng(seed)
    graph = random_cell(rng, size=int(rng.integers(3, 9))) if seed % 3 else baseline(
        list(BASELINES)[seed % len(BASELINES)]
    )
    for _ in range(mutations):
        graph = mutate(graph, rng).graph
    return graph


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 3))
def test_hash_is_invariant_to_names_order_and_commutation(seed, mutations):
    graph = cells_from(seed, mutations)
    assert parse(graph.text()) == graph
    again = parse(renamed(graph))
    assert again.hash == graph.hash and again.fingerprint == graph.fingerprint
    shuffled = permuted(graph, np.random.default_rng(seed))
    assert shuffled.hash == graph.hash and shuffled.fingerprint == graph.fingerprint


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 3))
def test_hash_sees_subtraction_order_and_bias(seed, mutations):
    graph = cells_from(seed, mutations)
    rng = np.random.default_rng(seed)
    subs = [i for i, n in enumerate(graph.nodes) if n.op == "sub" and n.inputs[0] != n.inputs[1]]
    if subs:
        i = subs[rng.integers(len(subs))]
        nodes = list(graph.nodes)
        nodes[i] = dataclasses.replace(nodes[i], inputs=nodes[i].inputs[::-1])
        assert Graph.build(nodes, graph.h_new, graph.c_new).hash != graph.hash
    linears = graph.linear_nodes()
    if linears:
        i = linears[rng.integers(len(linears))]
        nodes = list(graph.nodes)
        nodes[i] = dataclasses.replace(nodes[i], bias=nodes[i].bias + 0.5)
        # the hash must see it; the fingerprint may not (a W whose output a saturated relu or an
        # `a - a` cancels computes the same function at every input)
        assert Graph.build(nodes, graph.h_new, graph.c_new).hash != graph.hash


def test_sources_are_never_renamed():
    for graph in (baseline(name) for name in BASELINES):
        assert {n.name for n in graph.nodes if n.op in SOURCES} <= set(SOURCES)
        assert not any(a == b for a, b in itertools.pairwise(n.name for n in graph.nodes if n.name))
