"""NAS-Bench-NLP interop: importing its recipes, exporting ours, loading its PyTorch weights, and
sampling its search space by its generator rules."""

import collections
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cells import CellValidationError, baseline, compile_cell, from_nasbench_nlp, load_nasbench_weights, parse
from cells.nasbench import nasbench_linear_labels, to_nasbench_nlp
from searchkit import cellsearch
from search.nasbench import FAN_IN_WEIGHTS, OP_WEIGHTS, draw, draw_violations, recipe_violations, sample_recipe

EXAMPLES = pathlib.Path(__file__).parent / "data" / "nasbench_recipes_example.json"
RECIPES = json.loads(EXAMPLES.read_text())


@pytest.mark.parametrize("index", range(len(RECIPES)))
def test_every_example_recipe_imports_renders_compiles_and_runs(index):
    graph = from_nasbench_nlp(RECIPES[index])
    assert parse(graph.text()).hash == graph.hash and graph.latex()
    cell = compile_cell(graph)
    params = cell.init(jax.random.key(0), hidden=8)
    h, c = cell.step(params, cell.initial_carry((3,), 8), jnp.ones((3, 8)))
    assert h.shape == (3, 8) and bool(jnp.all(jnp.isfinite(h)))


def test_the_three_baselines_import_to_our_cells():
    # NAS-Bench-NLP's LSTM prints the output gate with tanh, like the paper: our lstm_paper_tanh_o.
    # Its GRU is blend(z, h_prev_0, tanh(W x + W (r * h))) = z * h + (1 - z) * cand: our `gru`
    # (reset before the matmul, z keeping the OLD state), written in the same blend order.
    tanh_rnn, lstm, gru = (from_nasbench_nlp(r) for r in RECIPES[:3])
    assert tanh_rnn.fingerprint == baseline("tanh").fingerprint
    assert lstm.fingerprint == baseline("lstm_paper_tanh_o").fingerprint
    assert gru.fingerprint == baseline("gru").fingerprint
    assert gru.hash == baseline("gru").hash  # the same structure, not only the same function


@pytest.mark.parametrize("index", range(len(RECIPES)))
def test_export_of_an_import_is_the_same_cell(index):
    graph = from_nasbench_nlp(RECIPES[index])
    again = from_nasbench_nlp(to_nasbench_nlp(graph))
    assert again.hash == graph.hash


@pytest.mark.parametrize("name", ["tanh", "lstm", "lstm_paper_tanh_o", "gru", "lstm_f", "lstm_i", "lstm_o"])
def test_our_baselines_export_and_come_back(name):
    recipe = baseline(name).to_nasbench_nlp()
    assert from_nasbench_nlp(recipe).hash == baseline(name).hash


def test_a_k_input_linear_is_a_sum_of_k_w_terms():
    recipe = {"a": {"op": "linear", "input": ["x", "h_prev_0", "x"]},
              "h_new_0": {"op": "activation_leaky_relu", "input": ["a"]}}  # fmt: skip
    graph = from_nasbench_nlp(recipe)
    assert graph.text() == "a = W(x) + W(h) + W(x)\nh_new = leaky_relu(a)\n"
    assert nasbench_linear_labels(recipe) == {"a": ["a.x", "a.h", "a.x~2"]}
    assert set(compile_cell(graph).linears) == {"a.x", "a.h", "a.x~2"}


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({}, "non-empty JSON object"),
        ({"h_new_0": {"op": "conv", "input": ["x"]}}, "node 'h_new_0': unknown op 'conv'"),
        ({"h_new_0": {"op": "linear", "input": ["x", "ghost"]}}, "node 'h_new_0' reads 'ghost', which is neither"),
        ({"a": {"op": "linear", "input": ["x", "h_prev_2"]}, "h_new_0": {"op": "activation_tanh", "input": ["a"]}},
         "node 'a' reads 'h_prev_2': cellsearch cells have at most two hidden-state slots"),
        ({"h_new_2": {"op": "linear", "input": ["x", "h_prev_0"]},
          "h_new_0": {"op": "linear", "input": ["x", "h_prev_0"]}}, "node 'h_new_2': cellsearch cells have at most two"),
        ({"a": {"op": "elementwise_sum", "input": ["b", "x"]}, "b": {"op": "activation_tanh", "input": ["a"]},
          "h_new_0": {"op": "linear", "input": ["a", "h_prev_0"]}}, "is part of a cycle"),
        ({"h_new_0": {"op": "blend", "input": ["x", "h_prev_0"]}}, "node 'h_new_0': blend takes 3 inputs, got 2"),
        ({"a": {"op": "linear", "input": ["x"]}}, "no output h_new_0"),
        ({"h_new_0": {"op": "linear", "input": ["x"]}}, "ignores its input 'h'"),
        ({"h_new_0": "linear"}, "node 'h_new_0' must be"),
    ],
)  # fmt: skip
def test_bad_recipes_are_one_line_errors_naming_the_node(recipe, message):
    with pytest.raises(CellValidationError) as error:
        from_nasbench_nlp(recipe, "recipes.json:4")
    text = str(error.value)
    assert message in text and text.startswith("recipes.json:4: ") and "\n" not in text


@pytest.mark.parametrize(
    "text, message",
    [
        ("h_new = relu(W(x) + W(h))", "op 'relu'"),
        ("h_new = tanh(W(x) - W(h))", "op 'sub' outside a blend"),
        ("h_new = tanh(W(x) + W(h, bias=1))", "bias=1 (an initial bias)"),
        ("h_new = identity(W(x)) * tanh(W(h))", "op 'identity'"),
    ],
)
def test_export_refuses_what_nasbench_cannot_express(text, message):
    with pytest.raises(CellValidationError, match="NAS-Bench-NLP cannot express this cell") as error:
        parse(text).to_nasbench_nlp()
    assert message in str(error.value)


def test_leaky_relu_is_a_first_class_op():
    graph = parse("h_new = leaky_relu(W(x) + W(h))")
    assert graph.text() == "h_new = leaky_relu(W(x) + W(h))\n" and r"\mathrm{lrelu}" in graph.latex()
    assert graph.hash != parse("h_new = relu(W(x) + W(h))").hash
    cell = compile_cell(graph)
    params = cell.init(jax.random.key(0), hidden=4)
    params = cell.set_linear(params, "h_new.x", kernel=-jnp.eye(4), bias=jnp.zeros(4))
    params = cell.set_linear(params, "h_new.h", kernel=jnp.zeros((4, 4)), bias=jnp.zeros(4))
    h, _ = cell.step(params, cell.initial_carry((), 4), jnp.array([1.0, -2.0, 0.5, 0.0]))
    np.testing.assert_allclose(h, [-0.01, 2.0, -0.005, 0.0], rtol=1e-6)


def test_mutation_draws_leaky_relu_only_when_asked():
    from search.mutation import ACTIVATIONS, ACTIVATIONS_WITH_LEAKY_RELU, mutate

    rng = np.random.default_rng(0)
    plain = {op for _ in range(200) for op in (n.op for n in mutate(baseline("gru"), rng).graph.nodes)}
    leaky = {op for _ in range(200)
             for op in (n.op for n in mutate(baseline("gru"), rng, activations=ACTIVATIONS_WITH_LEAKY_RELU).graph.nodes)}  # fmt: skip
    assert "leaky_relu" not in plain and "leaky_relu" in leaky
    assert ("leaky_relu", 0.0) not in ACTIVATIONS


# --------------------------------------------------------------------------- PyTorch weights
def test_trained_pytorch_weights_give_the_same_outputs():
    torch = pytest.importorskip("torch")  # the `bench` extra
    for recipe in RECIPES:
        hidden = 6
        reference = TorchRecipeCell(torch, recipe, hidden)
        cell = compile_cell(from_nasbench_nlp(recipe))
        params = load_nasbench_weights(cell, cell.init(jax.random.key(1), hidden), recipe, {
            name: {"weight": layer.weight.detach().numpy(), "bias": layer.bias.detach().numpy()}
            for name, layer in reference.linears.items()
        })  # fmt: skip
        rng = np.random.default_rng(0)
        x, h, c = (rng.normal(size=(5, hidden)).astype(np.float32) for _ in range(3))
        expected = reference(*(torch.from_numpy(a) for a in (x, h, c)))
        ours = cell.step(params, (jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))
        np.testing.assert_allclose(ours[0], expected[0].detach().numpy(), rtol=1e-5, atol=1e-6)
        if "h_new_1" in recipe:
            np.testing.assert_allclose(ours[1], expected[1].detach().numpy(), rtol=1e-5, atol=1e-6)


class TorchRecipeCell:
    """A small PyTorch transcription of NAS-Bench-NLP's recipe semantics (its CustomRNNCell):
    a linear node is ONE nn.Linear over its inputs concatenated in `input` order."""

    def __init__(self, torch, recipe, hidden):
        self.torch, self.recipe = torch, recipe
        torch.manual_seed(0)
        self.linears = {name: torch.nn.Linear(hidden * len(spec["input"]), hidden)
                        for name, spec in recipe.items() if spec["op"] == "linear"}  # fmt: skip

    def __call__(self, x, h, c):
        torch = self.torch
        values = {"x": x, "h_prev_0": h, "h_prev_1": c}
        acts = {"activation_tanh": torch.tanh, "activation_sigm": torch.sigmoid,
                "activation_leaky_relu": torch.nn.functional.leaky_relu}  # fmt: skip

        def value(name):
            if name not in values:
                spec = self.recipe[name]
                ins = [value(i) for i in spec["input"]]
                op = spec["op"]
                if op == "linear":
                    out = self.linears[name](torch.cat(ins, dim=-1))
                elif op == "blend":
                    out = ins[0] * ins[1] + (1 - ins[0]) * ins[2]
                elif op == "elementwise_prod":
                    out = ins[0] * ins[1]
                elif op == "elementwise_sum":
                    out = ins[0] + ins[1]
                else:
                    out = acts[op](ins[0])
                values[name] = out
            return values[name]

        return value("h_new_0"), value("h_new_1") if "h_new_1" in self.recipe else c


# ---------------------------------------------------------------- NAS-Bench-NLP's search space
def test_1000_generator_draws_obey_every_rule():
    rng = np.random.default_rng(0)
    ops, fan_in, draws = collections.Counter(), collections.Counter(), 0
    while draws < 1000:
        raw = draw(rng, memory=draws % 4 == 0)
        if raw is None:
            continue
        draws += 1
        assert draw_violations(raw) == [], raw
        for spec in raw.values():
            ops[spec["op"]] += 1
            if spec["op"] == "linear":
                fan_in[len(spec["input"])] += 1
    vertices = sum(ops[op] for op in OP_WEIGHTS)
    assert vertices == 7000
    for op, weight in OP_WEIGHTS.items():  # 3:1:1:1, within sampling error
        assert abs(ops[op] / vertices - weight / 6) < 0.02, (op, ops[op])
    linears = sum(fan_in.values())
    assert abs(fan_in[2] / linears - FAN_IN_WEIGHTS[2] / 5) < 0.03


def test_1000_sampled_cells_are_pruned_use_every_input_and_build():
    rng = np.random.default_rng(1)
    for k in range(1000):
        recipe = sample_recipe(rng, memory=k % 3 == 0)
        assert recipe_violations(recipe) == [], recipe
        assert ("h_new_1" in recipe) == (k % 3 == 0)
        if k % 50 == 0:
            graph = from_nasbench_nlp(recipe)
            assert from_nasbench_nlp(graph.to_nasbench_nlp()).hash == graph.hash



def test_cli_show_and_convert_both_ways(tmp_path):
    shown = cellsearch("show", "--nasbench", f"{EXAMPLES}:2")
    assert shown.returncode == 0 and baseline("gru").hash in shown.stdout
    assert "h_new = z_act * h + (1 - z_act) * h_tilde_act" in shown.stdout
    every = cellsearch("show", "--nasbench", EXAMPLES)
    assert every.stdout.count("# ") == len(RECIPES)
    out = tmp_path / "cells.json"
    assert cellsearch("convert", "--to", "nasbench", "gru", "tanh", "--out", out).returncode == 0
    recipes = json.loads(out.read_text())
    assert [from_nasbench_nlp(r).hash for r in recipes] == [baseline("gru").hash, baseline("tanh").hash]
    back = cellsearch("convert", "--to", "cell", f"{out}:0")
    assert back.returncode == 0 and parse(back.stdout.split("\n", 1)[1]).hash == baseline("gru").hash


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "--nasbench", "missing.json"], "cannot read missing.json"),
        (["show", "--nasbench", f"{EXAMPLES}:10"], "holds 10 recipes; index 10 is out of range"),
        (["convert", "--to", "nasbench", "lstm_b"], "lstm_b: 'W f.h': W with bias=1"),
        (["convert", "--to", "cell", __file__], "not a JSON file"),
    ],
)
def test_cli_interop_errors_are_one_line(args, message):
    result = cellsearch(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
