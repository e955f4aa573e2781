"""The mutation operator, random cells and dedup: each transform alone, then properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cells import BASELINES, baseline, compile_cell, parse
from search.mutation import TRANSFORMS, Deduper, _Draft, mutate, random_cell

SMALL = "a = tanh(W(x) + W(h))\nh_new = a * h\n"


def apply(transform: str, node: str, seed: int = 0) -> tuple[str, str]:
    graph = parse(SMALL)
    draft = _Draft.of(graph)
    i = graph.index_of(node)
    applies, run = TRANSFORMS[transform]
    assert applies(draft, i)
    description = run(draft, i, np.random.default_rng(seed))
    return description, draft.build().text()


# Each transform on its own, on SMALL, with the generator seeded at 0: the expected child spelled out.
CASES = [
    ("swap_activation", "a", "swap_activation a: tanh -> W(bias=0.9)",
     "a = W(W(x) + W(h), bias=0.9)\nh_new = a * h\n"),
    ("swap_binary", "h_new", "swap_binary h_new: * -> -",
     "a = tanh(W(x) + W(h))\nh_new = a - h\n"),
    ("insert_activation", "h_new", "insert_activation W(bias=1) before operand 1 of h_new",
     "a = tanh(W(x) + W(h))\nh_new = a * W(h, bias=1)\n"),
    ("remove", "a", "remove a",
     "h_new = (W(x) + W(h)) * h\n"),
    ("replace_with_ancestor", "a", "replace_with_ancestor a -> add in a",
     "h_new = (W(x) + W(h)) * h\n"),
    ("add_ancestor", "h_new", "add_ancestor h_new + a",
     "a = tanh(W(x) + W(h))\nh_new = a * h + a\n"),
    ("multiply_ancestor", "a", "multiply_ancestor a * add in a",
     "u1 = W(x) + W(h)\na = tanh(u1)\nh_new = a * u1 * h\n"),
]  # fmt: skip


@pytest.mark.parametrize("transform, node, description, text", CASES, ids=[c[0] for c in CASES])
def test_each_transform_alone(transform, node, description, text):
    assert apply(transform, node) == (description, text)


def test_transforms_apply_only_where_the_paper_says():
    graph = parse(SMALL)
    draft = _Draft.of(graph)
    a, h_new = graph.index_of("a"), graph.index_of("h_new")
    assert not TRANSFORMS["swap_binary"][0](draft, a)  # a is an activation
    assert not TRANSFORMS["swap_activation"][0](draft, h_new)  # h_new is a product
    assert not TRANSFORMS["remove"][0](draft, h_new)  # two operands, and a sink
    assert set(TRANSFORMS) == {"swap_activation", "swap_binary", "insert_activation", "remove",
                               "replace_with_ancestor", "add_ancestor", "multiply_ancestor"}  # fmt: skip


def test_mutation_is_deterministic_per_seed():
    def children(seed):
        rng = np.random.default_rng(seed)
        return [mutate(baseline("gru"), rng) for _ in range(10)]

    assert children(5) == children(5)
    assert [m.graph.hash for m in children(5)] != [m.graph.hash for m in children(6)]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(BASELINES)), st.integers(0, 10**6), st.integers(1, 4))
def test_every_mutant_validates_compiles_and_runs_finite(name, seed, chain):
    rng = np.random.default_rng(seed)
    graph = baseline(name)
    for _ in range(chain):
        child = mutate(graph, rng)
        assert child.parent == graph.hash and child.graph.hash != graph.hash
        assert child.transforms
        graph = child.graph
        assert parse(graph.text()) == graph
    cell = compile_cell(graph)
    params = cell.init(jax.random.key(seed % 1000), 4)
    x = jax.random.normal(jax.random.key(1), (2, 4))
    h, c = cell.step(params, cell.initial_carry((2,), 4), x)
    h, c = cell.step(params, (h, c), x)
    assert jnp.all(jnp.isfinite(h)) and jnp.all(jnp.isfinite(c))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 10), st.sampled_from([None, True, False]))
def test_random_cells_are_valid(seed, size, memory):
    graph = random_cell(np.random.default_rng(seed), size, memory)
    assert parse(graph.text()) == graph
    if memory is not None:
        assert (graph.c_new is not None) == memory
    assert graph.uses("x") and graph.uses("h")
    assert random_cell(np.random.default_rng(seed), size, memory) == graph


def test_deduper_rejects_repeats_by_structure_and_by_function():
    seen = Deduper()
    assert seen.add(baseline("lstm"))
    assert not seen.add(parse(baseline("lstm").text().replace("c * f", "f * c")))
    assert not seen.add(parse(baseline("lstm").text().replace("tanh(c_new)", "tanh(identity(c_new))")))
    assert seen.add(baseline("lstm_b"))
    assert (seen.accepted, seen.rejected_hash, seen.rejected_fingerprint) == (2, 1, 1)
    assert seen.report() == "2 new, 1 rejected as the same structure, 1 as the same function"
