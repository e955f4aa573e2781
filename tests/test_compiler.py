"""The JAX compiler: numerical equivalence with flax and with the paper's equations, and fusion."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cells import BASELINES, baseline, compile_cell, parse

H, B, T = 16, 3, 30
RTOL, ATOL = 1e-5, 1e-6
sigmoid = jax.nn.sigmoid


def random_inputs(seed=0, steps=T):
    keys = jax.random.split(jax.random.key(seed), 3)
    xs = jax.random.normal(keys[0], (steps, B, H))
    h = jax.random.normal(keys[1], (B, H)) * 0.5
    c = jax.random.normal(keys[2], (B, H)) * 0.5
    return xs, h, c


def random_params(cell, seed=1):
    """Parameters with every bias random too, so bias placement is tested, not just kernels."""
    params = cell.init(jax.random.key(seed), H, init_scale=2.0)
    return jax.tree_util.tree_map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.key(seed + 7), a.shape), params
    )


def close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------ against flax
# paper notation -> flax gate letter: candidate i = flax g, input gate j = flax i
FLAX_GATE = {"i": "g", "j": "i", "f": "f", "o": "o"}


def randomize(tree, seed):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([0.4 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])


def lstm_from_flax(cell, flax_params, x_kernel_key, copy_biases=True):
    """Our LSTM parameters holding flax's weights (flax keeps only the hidden-side bias)."""
    params = cell.init(jax.random.key(0), H)
    for ours, theirs in FLAX_GATE.items():
        hidden = flax_params[f"h{theirs}"]
        params = cell.set_linear(params, f"{ours}.x", kernel=flax_params[x_kernel_key(theirs)]["kernel"],
                                 bias=jnp.zeros(H) if copy_biases else None)  # fmt: skip
        params = cell.set_linear(params, f"{ours}.h", kernel=hidden["kernel"],
                                 bias=hidden["bias"] if copy_biases else None)  # fmt: skip
    return params


def run_flax_linen(module, params, carry, xs):
    def body(carry, x):
        carry, out = module.apply({"params": params}, carry, x)
        return carry, out

    return jax.lax.scan(body, carry, xs)


@pytest.mark.parametrize("name", ["lstm", "lstm_b"])
def test_lstm_matches_flax_linen_lstm_cell(name):
    xs, h, c = random_inputs()
    module = linen.LSTMCell(H)
    flax_params = randomize(module.init(jax.random.key(3), (c, h), xs[0])["params"], seed=4)
    cell = compile_cell(baseline(name))
    if name == "lstm_b":
        # our lstm_b initialises the forget bias to 1 and every other bias to 0: copy kernels only,
        # and give flax zero biases plus the +1 on hf that its docs recommend adding after init
        flax_params = {k: v | ({"bias": jnp.zeros(H)} if "bias" in v else {})
                       for k, v in flax_params.items()}  # fmt: skip
        flax_params["hf"]["bias"] = flax_params["hf"]["bias"] + 1.0
    params = lstm_from_flax(cell, flax_params, lambda g: f"i{g}", copy_biases=name == "lstm")
    (c1, h1), _ = module.apply({"params": flax_params}, (c, h), xs[0])
    h1_ours, c1_ours = cell.step(params, (h, c), xs[0])
    close(h1_ours, h1)
    close(c1_ours, c1)
    (cT, hT), hs = run_flax_linen(module, flax_params, (c, h), xs)
    (hT_ours, cT_ours), hs_ours = jax.jit(cell.unroll)(params, (h, c), xs)
    close(hs_ours, hs)
    close(hT_ours, hT)
    close(cT_ours, cT)


def test_lstm_b_initial_biases_are_one_on_the_forget_gate_only():
    cell = compile_cell(baseline("lstm_b"))
    params = cell.init(jax.random.key(0), H)
    for label in cell.linears:
        _, bias = cell.get_linear(params, label)
        np.testing.assert_array_equal(bias, np.full(H, 1.0 if label == "f.h" else 0.0))


@pytest.mark.parametrize("name", ["lstm", "lstm_b"])
def test_lstm_matches_flax_nnx_lstm_cell(name):
    xs, h, c = random_inputs(seed=5)
    module = nnx.LSTMCell(H, H, rngs=nnx.Rngs(6))
    state = nnx.state(module, nnx.Param)
    flax_params = randomize(nnx.to_pure_dict(state), seed=7)
    if name == "lstm_b":
        flax_params["hf"]["bias"] = flax_params["hf"]["bias"] + 1.0
    nnx.replace_by_pure_dict(state, flax_params)
    nnx.update(module, state)
    cell = compile_cell(baseline(name))
    params = lstm_from_flax(cell, flax_params, lambda g: "if_" if g == "f" else f"i{g}")
    carry = (c, h)
    for t in range(T):
        carry, _ = module(carry, xs[t])
    (hT, cT), _ = jax.jit(cell.unroll)(params, (h, c), xs)
    close(hT, carry[1])
    close(cT, carry[0])


def test_reset_after_gru_matches_flax_linen_gru_cell():
    xs, h, _ = random_inputs(seed=8)
    module = linen.GRUCell(H)
    flax_params = randomize(module.init(jax.random.key(9), h, xs[0])["params"], seed=10)
    cell = compile_cell(baseline("gru_reset_after"))
    params = cell.init(jax.random.key(0), H)
    for gate, label in (("r", "r"), ("z", "z"), ("n", "cand")):
        params = cell.set_linear(params, f"{label}.x", flax_params[f"i{gate}"]["kernel"],
                                 flax_params[f"i{gate}"]["bias"])  # fmt: skip
        hidden = flax_params[f"h{gate}"]
        params = cell.set_linear(params, f"{label}.h", hidden["kernel"],
                                 hidden.get("bias", jnp.zeros(H)))  # fmt: skip
    h1, _ = module.apply({"params": flax_params}, h, xs[0])
    close(cell.step(params, (h, jnp.zeros_like(h)), xs[0])[0], h1)
    hT, hs = run_flax_linen(module, flax_params, h, xs)
    (hT_ours, _), hs_ours = jax.jit(cell.unroll)(params, (h, jnp.zeros_like(h)), xs)
    close(hs_ours, hs)
    close(hT_ours, hT)


def test_paper_gru_differs_from_reset_after_gru():
    xs, h, c = random_inputs()
    before, after = compile_cell(baseline("gru")), compile_cell(baseline("gru_reset_after"))
    params = random_params(before)
    shared = after.init(jax.random.key(0), H)
    for label in after.linears:
        kernel, bias = before.get_linear(params, label.replace("cand.h", "cand.r*h"))
        shared = after.set_linear(shared, label, kernel, bias)
    a = before.step(params, (h, c), xs[0])[0]
    b = after.step(shared, (h, c), xs[0])[0]
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3


# ---------------------------------------------------------- against the paper's equations in jnp
def reference(name, W, x, h, c):
    """The paper's equations written out in jax.numpy; W(label, a) = a @ K + b of that W node."""

    def lstm(output_gate=sigmoid, forget=True, input_gate=True, output=True):
        i = jnp.tanh(W("i.x", x) + W("i.h", h))
        j = sigmoid(W("j.x", x) + W("j.h", h)) if input_gate else 1.0
        f = sigmoid(W("f.x", x) + W("f.h", h)) if forget else 1.0
        o = output_gate(W("o.x", x) + W("o.h", h)) if output else 1.0
        c_new = c * f + i * j
        return jnp.tanh(c_new) * o, c_new

    if name == "tanh":
        return jnp.tanh(W("h_new.x", x) + W("h_new.h", h)), c
    if name in ("lstm", "lstm_b"):
        return lstm()
    if name == "lstm_paper_tanh_o":
        return lstm(output_gate=jnp.tanh)
    if name == "lstm_f":
        return lstm(forget=False)
    if name == "lstm_i":
        return lstm(input_gate=False)
    if name == "lstm_o":
        return lstm(output=False)
    if name == "lstm_cifg":
        i = jnp.tanh(W("i.x", x) + W("i.h", h))
        f = sigmoid(W("f.x", x) + W("f.h", h))
        o = sigmoid(W("o.x", x) + W("o.h", h))
        c_new = c * f + i * (1 - f)
        return jnp.tanh(c_new) * o, c_new
    if name == "gru":
        r = sigmoid(W("r.x", x) + W("r.h", h))
        z = sigmoid(W("z.x", x) + W("z.h", h))
        cand = jnp.tanh(W("cand.x", x) + W("cand.r*h", r * h))
        return z * h + (1 - z) * cand, c
    if name == "gru_reset_after":
        r = sigmoid(W("r.x", x) + W("r.h", h))
        z = sigmoid(W("z.x", x) + W("z.h", h))
        cand = jnp.tanh(W("cand.x", x) + r * W("cand.h", h))
        return (1 - z) * cand + z * h, c
    if name == "mgu":
        f = sigmoid(W("f.x", x) + W("f.h", h))
        cand = jnp.tanh(W("cand.x", x) + W("cand.f*h", f * h))
        return (1 - f) * h + f * cand, c
    # MUT1-3, paper section 3 (x has width H, so raw-x terms are exact)
    if name == "mut1":
        z = sigmoid(W("z.x", x))
        r = sigmoid(W("r.x", x) + W("r.h", h))
        return jnp.tanh(W("h_new.r*h", r * h) + jnp.tanh(x)) * z + h * (1 - z), c
    if name == "mut2":
        z = sigmoid(W("z.x", x) + W("z.h", h))
        r = sigmoid(x + W("r.h", h))
        return jnp.tanh(W("h_new.r*h", r * h) + W("h_new.x", x)) * z + h * (1 - z), c
    if name == "mut3":
        z = sigmoid(W("z.x", x) + W("z.tanh(h)", jnp.tanh(h)))
        r = sigmoid(W("r.x", x) + W("r.h", h))
        return jnp.tanh(W("h_new.r*h", r * h) + W("h_new.x", x)) * z + h * (1 - z), c
    raise AssertionError(f"no reference for {name}")


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_matches_the_papers_equations(name):
    cell = compile_cell(baseline(name))
    params = random_params(cell)

    def W(label, a):
        kernel, bias = cell.get_linear(params, label)
        return a @ kernel + bias

    xs, h, c = random_inputs(seed=11)
    h1, c1 = cell.step(params, (h, c), xs[0])
    h1_ref, c1_ref = reference(name, W, xs[0], h, c)
    close(h1, h1_ref)
    close(c1, c1_ref)

    def ref_body(carry, x):
        carry = reference(name, W, x, *carry)
        return carry, carry[0]

    (hT_ref, cT_ref), hs_ref = jax.lax.scan(ref_body, (h, c), xs)
    (hT, cT), hs = jax.jit(cell.unroll)(params, (h, c), xs)
    close(hs, hs_ref)
    close(cT, cT_ref)
    assert np.all(np.isfinite(np.asarray(hs)))


# --------------------------------------------------------------------------------- structure
def count_dot_generals(cell):
    params = cell.init(jax.random.key(0), H)
    jaxpr = jax.make_jaxpr(cell.step)(params, cell.initial_carry((B,), H), jnp.ones((B, H)))
    return sum(eqn.primitive.name == "dot_general" for eqn in jaxpr.jaxpr.eqns)


@pytest.mark.parametrize("name, matmuls", [("lstm", 2), ("lstm_b", 2), ("gru", 3), ("tanh", 2),
                                           ("gru_reset_after", 2), ("mut1", 3), ("mut3", 4)])  # fmt: skip
def test_w_nodes_reading_one_value_share_one_matmul(name, matmuls):
    cell = compile_cell(baseline(name))
    assert count_dot_generals(cell) == matmuls == len(cell.matmuls)


def test_identical_subexpressions_share_their_matmul():
    cell = compile_cell(parse("z = sigmoid(W(tanh(h)) + W(x))\nh_new = z * W(tanh(h)) + W(x)"))
    assert [m.key for m in cell.matmuls] == ["tanh(h)", "x"]
    assert count_dot_generals(cell) == 2


def test_parameter_shapes_are_pinned():
    cell = compile_cell(baseline("gru"))
    params = cell.init(jax.random.key(0), H)
    shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
    assert shapes == {
        "x": {"kernel": (H, 3 * H), "bias": (3 * H,)},
        "h": {"kernel": (H, 2 * H), "bias": (2 * H,)},
        "r*h": {"kernel": (H, H), "bias": (H,)},
    }
    assert sum(a.size for a in jax.tree_util.tree_leaves(params)) == baseline("gru").num_params(H)


def test_init_is_uniform_in_scale_over_sqrt_hidden():
    cell = compile_cell(baseline("lstm"))
    params = cell.init(jax.random.key(0), 64, init_scale=2.8)
    kernel = np.asarray(params["h"]["kernel"])
    limit = 2.8 / np.sqrt(64)
    assert kernel.max() <= limit and kernel.min() >= -limit
    assert kernel.max() > 0.95 * limit and kernel.min() < -0.95 * limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.02 * limit
    # init_scale may be traced: one compiled init serves every scale
    traced = jax.jit(lambda s: cell.init(jax.random.key(0), 64, s))(2.8)
    np.testing.assert_allclose(traced["h"]["kernel"], kernel, rtol=1e-6)


def test_step_works_under_vmap_and_unbatched():
    cell = compile_cell(baseline("mut2"))
    params = random_params(cell)
    xs, h, c = random_inputs()
    batched = cell.step(params, (h, c), xs[0])[0]
    mapped = jax.vmap(lambda hh, cc, x: cell.step(params, (hh, cc), x))(h, c, xs[0])[0]
    single = cell.step(params, (h[1], c[1]), xs[0][1])[0]
    close(mapped, batched)
    close(single, batched[1])


def test_set_linear_and_get_linear_address_one_w():
    cell = compile_cell(baseline("lstm"))
    params = cell.init(jax.random.key(0), H)
    kernel = jnp.arange(H * H, dtype=jnp.float32).reshape(H, H)
    updated = cell.set_linear(params, "f.h", kernel=kernel, bias=jnp.full(H, 3.0))
    got_kernel, got_bias = cell.get_linear(updated, "f.h")
    np.testing.assert_array_equal(got_kernel, kernel)
    np.testing.assert_array_equal(got_bias, np.full(H, 3.0))
    for label in cell.linears:
        if label != "f.h":
            np.testing.assert_array_equal(cell.get_linear(updated, label)[0],
                                          cell.get_linear(params, label)[0])  # fmt: skip
    with pytest.raises(KeyError, match="no W node 'q.h'"):
        cell.get_linear(params, "q.h")


def test_cell_without_memory_passes_c_through():
    cell = compile_cell(baseline("gru"))
    xs, h, c = random_inputs()
    _, c1 = cell.step(random_params(cell), (h, c), xs[0])
    np.testing.assert_array_equal(c1, c)
    assert not cell.has_memory and compile_cell(baseline("lstm")).has_memory


# ------------------------------------------------------------------ the hand-written backward pass
@pytest.fixture(params=["batch first", "features first"])
def loop_layout(request, monkeypatch):
    """Runs a test with `unroll`'s loops holding values (B, H) and again (H, B), whatever H is."""
    import cells.scan

    features_first = request.param == "features first"
    monkeypatch.setattr(cells.scan, "loops_feature_major", lambda hidden: features_first)
    return request.param


def unroll_loss(unroll, weights):
    """A loss that reads every output of an unroll (all hs, final h and c) with fixed weights."""

    def loss(params, h, c, xs, x_proj=None):
        args = (params, (h, c), xs) + ((x_proj,) if x_proj is not None else ())
        (h_final, c_final), hs = unroll(*args)
        return (hs * weights[0]).sum() + (h_final * weights[1]).sum() + (c_final * weights[2]).sum()

    return loss


def assert_gradients_match(cell, rtol, dtype=jnp.float32, steps=T):
    xs, h, c = (a.astype(dtype) for a in random_inputs(steps=steps))
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), random_params(cell))
    weights = [a.astype(dtype) for a in random_inputs(seed=5, steps=steps)]
    ours = jax.grad(unroll_loss(cell.unroll, weights), argnums=(0, 1, 2, 3))(params, h, c, xs)
    ref = jax.grad(unroll_loss(cell.unroll_autodiff, weights), argnums=(0, 1, 2, 3))(params, h, c, xs)
    for got, want in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(jnp.abs(want).max()))


@pytest.mark.parametrize("name", list(BASELINES))
def test_hand_written_backward_pass_equals_autodiff(name, loop_layout):
    cell = compile_cell(baseline(name))
    assert_gradients_match(cell, rtol=2e-5)
    (h1, c1), hs1 = cell.unroll(random_params(cell), random_inputs()[1:], random_inputs()[0])
    (h2, c2), hs2 = cell.unroll_autodiff(random_params(cell), random_inputs()[1:], random_inputs()[0])
    close(hs1, hs2), close(c1, c2)


def test_hand_written_backward_pass_covers_every_op_of_mutants(loop_layout):
    from search.mutation import ACTIVATIONS_WITH_LEAKY_RELU, mutate

    rng = np.random.default_rng(0)
    ops, compared = set(), 0
    with jax.enable_x64(True):  # float64, so that fast-growing cells compare to rounding
        for draw in range(12):  # every op by the 8th draw
            graph = baseline(("lstm", "gru", "mut1")[draw % 3])
            for _ in range(1 + draw % 4):
                graph = mutate(graph, rng, activations=ACTIVATIONS_WITH_LEAKY_RELU).graph
            cell = compile_cell(graph)
            xs, h, c = random_inputs(steps=6)
            _, hs = cell.unroll_autodiff(random_params(cell), (h, c), xs)
            if not float(jnp.abs(hs).max()) < 1e4:  # cells that blow up: cancellation, not bugs
                continue
            assert_gradients_match(cell, rtol=1e-8, dtype=jnp.float64, steps=6)
            ops |= {node.op for node in graph.nodes}
            compared += 1
    assert compared >= 6  # 8 of the 12 draws stay below 1e4
    assert ops >= {"tanh", "sigmoid", "relu", "leaky_relu", "identity", "add", "sub", "mul", "one"}


@pytest.mark.parametrize("text, assembled", [
    (baseline("lstm").text(), {"x": ("h",)}),  # W_x* + W_h* per gate: one stacked gradient
    (baseline("gru").text(), {"x": ("h", "r*h")}),  # z and r from h's matmul, the candidate's
    (baseline("gru_reset_after").text(), {}),  # the candidate's W(h) is read by a mul
    ("a = W(x) + W(h)\nh_new = tanh(a) * tanh(W(x) + W(h))", {"x": ("h",)}),
    ("c_new = W(x)\nh_new = tanh(c_new + W(h)) * c", {}),  # W(x) is an output: more gradient
    ("h_new = tanh(W(x) + W(h) + W(h))", {}),  # blocks do not pair up
    ("h_new = tanh(W(x) + W(h)) * x", {"x": ("h",)}),  # x's gradient also from inside the loop
])  # fmt: skip
def test_backward_pass_stacks_each_matmul_output_gradient_once(text, assembled, loop_layout):
    from cells.scan import _assembled_output_gradients, _plan

    cell = compile_cell(parse(text))
    looped = [m.key for m in cell.matmuls if m.key != cell.x_matmul]
    assert _assembled_output_gradients(cell, _plan(cell), looped) == assembled
    with jax.enable_x64(True):
        assert_gradients_match(cell, rtol=1e-8, dtype=jnp.float64, steps=6)


def test_forward_pass_saves_only_what_the_backward_cannot_recompute():
    from cells.scan import _plan

    cell = compile_cell(baseline("gru"))
    graph, plan = cell.graph, _plan(cell)
    described = {i: (graph.nodes[i].op, plan.inputs[i]) for i in plan.saved + plan.recomputed}
    r, z, candidate = 6, 10, 15
    assert described == {r: ("sigmoid", (5,)), z: ("sigmoid", (9,)), candidate: ("tanh", (14,)),
                         12: ("mul", (r, plan.source["h"])), 17: ("sub", (2, z))}  # fmt: skip
    assert plan.saved == (r, z, candidate) and plan.recomputed == (12, 17)  # r * h and 1 - z
    lstm = _plan(compile_cell(baseline("lstm")))
    assert len(lstm.saved) == 5 and lstm.recomputed == ()  # its gates and tanh(c_new)


def test_precomputed_x_projection_gets_the_gradient_of_the_x_matmul(loop_layout):
    cell = compile_cell(baseline("lstm"))
    xs, h, c = random_inputs()
    params = random_params(cell)
    weights = list(random_inputs(seed=5))
    key = cell.x_matmul
    assert key == "x" and not cell.reads_x_outside_matmul

    def folded(params, h, c, xs):
        x_proj = xs @ params[key]["kernel"] + params[key]["bias"]
        return unroll_loss(cell.unroll, weights)(params, h, c, None, x_proj)

    ours = jax.grad(folded)(params, h, c, xs)
    ref = jax.grad(unroll_loss(cell.unroll_autodiff, weights))(params, h, c, xs)
    for got, want in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(jnp.abs(want).max()))
    reads_x = compile_cell(parse("h_new = tanh(W(x) + W(h)) * x"))
    assert reads_x.reads_x_outside_matmul
    with pytest.raises(ValueError, match="xs may be None only"):
        reads_x.unroll(random_params(reads_x), (h, c), None, jnp.zeros((T, B, H)))


def _loop_matmuls(jaxpr) -> list[int]:
    """The number of dot_generals in the body of each scan of a jaxpr's top level, in order."""
    return [sum(e.primitive.name == "dot_general" for e in eqn.params["jaxpr"].jaxpr.eqns)
            for eqn in jaxpr.eqns if eqn.primitive.name == "scan"]  # fmt: skip


@pytest.mark.parametrize("name, in_loop", [("lstm", 1), ("gru", 2), ("mut1", 2)])
def test_unroll_runs_the_x_matmul_before_the_loop(name, in_loop, loop_layout):
    # the forward loop does only the matmuls that read the state; the x matmul is ONE product
    # over every step before it, and the backward loop multiplies by the same kernels (or, batch
    # first, their transposes)
    cell = compile_cell(baseline(name))
    xs, h, c = random_inputs()
    weights = list(random_inputs(seed=5))
    jaxpr = jax.make_jaxpr(jax.grad(unroll_loss(cell.unroll, weights)))(random_params(cell), h, c, xs)
    assert _loop_matmuls(jaxpr.jaxpr) == [in_loop, in_loop]  # forward, backward
    assert len(cell.matmuls) == in_loop + 1


def test_features_first_loops_multiply_each_kernel_by_the_state(monkeypatch):
    import cells.scan

    monkeypatch.setattr(cells.scan, "loops_feature_major", lambda hidden: True)
    cell = compile_cell(baseline("lstm"))
    xs, h, c = random_inputs()
    weights = list(random_inputs(seed=5))
    jaxpr = jax.make_jaxpr(jax.grad(unroll_loss(cell.unroll, weights)))(random_params(cell), h, c, xs)
    shapes = [[tuple(v.aval.shape) for v in e.invars]
              for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "scan"
              for e in eqn.params["jaxpr"].jaxpr.eqns if e.primitive.name == "dot_general"]  # fmt: skip
    assert shapes == [[(4 * H, H), (H, B)], [(H, 4 * H), (4 * H, B)]]  # forward: W^T h; backward: W g


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU backend's choice")
def test_wide_loops_run_features_first_on_a_cpu_and_stay_so_compiled():
    from cells.scan import FEATURES_FIRST_FROM_HIDDEN, loops_feature_major

    wide = FEATURES_FIRST_FROM_HIDDEN
    assert loops_feature_major(wide) and not loops_feature_major(wide - 1)
    cell = compile_cell(baseline("lstm"))
    params, carry = cell.init(jax.random.key(0), wide), cell.initial_carry((2,), wide)
    xs = jnp.ones((4, 2, wide))
    grad = jax.grad(lambda params: cell.unroll(params, carry, xs)[1].sum())
    compiled = jax.jit(grad).lower(params).compile().as_text()
    # XLA must not move the transposes into the loops: their products stay (4H, B), not (B, 4H)
    assert f"f32[{4 * wide},2]" in compiled and f"f32[2,{4 * wide}]" not in compiled


@pytest.mark.parametrize("batch_shape", [(), (2, B)])
def test_unroll_keeps_any_batch_shape_in_either_layout(batch_shape, loop_layout):
    cell = compile_cell(baseline("lstm"))
    params = random_params(cell)
    keys = jax.random.split(jax.random.key(3), 3)
    xs = jax.random.normal(keys[0], (6, *batch_shape, H))
    carry = tuple(jax.random.normal(k, (*batch_shape, H)) * 0.5 for k in keys[1:])
    (h1, c1), hs1 = cell.unroll(params, carry, xs)
    (h2, c2), hs2 = cell.unroll_autodiff(params, carry, xs)
    assert hs1.shape == (6, *batch_shape, H) and h1.shape == c1.shape == (*batch_shape, H)
    close(hs1, hs2), close(h1, h2), close(c1, c2)


def test_dense_gradients_equal_autodiff_of_the_matmul():
    from cells.dense import dense

    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.key(0), (40, 7), jnp.float64)
        kernel = jax.random.normal(jax.random.key(1), (7, 5), jnp.float64)
        g = jax.random.normal(jax.random.key(2), (40, 5), jnp.float64)
        ours = jax.grad(lambda a, k: (dense(a, k) * g).sum(), argnums=(0, 1))(a, kernel)
        ref = jax.grad(lambda a, k: (a @ k * g).sum(), argnums=(0, 1))(a, kernel)
        close(dense(a, kernel), a @ kernel)
        for got, want in zip(ours, ref):
            np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the slower path is the CPU backend's")
def test_weight_gradient_is_a_dot_on_the_operand_laid_out_transposed():
    # XLA's CPU backend runs a dot that contracts both operands' leading dimension on a slower
    # path (cells/dense.py); the weight gradient must not compile to one, as a.T @ g does
    from cells.dense import weight_gradient

    a, g = jnp.ones((64, 8)), jnp.ones((64, 16))
    plain = jax.jit(lambda a, g: a.T @ g).lower(a, g).compile().as_text()
    ours = jax.jit(weight_gradient).lower(a, g).compile().as_text()
    assert "lhs_contracting_dims={0}" in plain
    assert "lhs_contracting_dims={0}" not in ours and "transpose" in ours


def test_weight_gradient_features_first_is_a_times_g_transposed_from_laid_out_operands():
    from cells.dense import weight_gradient_features_first

    seq = jax.random.normal(jax.random.key(0), (5, 8, 3))  # (T, F, B), as the loops stack values
    g_seq = jax.random.normal(jax.random.key(1), (5, 12, 3))
    a_t, g_t = (jnp.swapaxes(v, 0, 1).reshape(v.shape[1], -1) for v in (seq, g_seq))
    close(weight_gradient_features_first(a_t, g_t), a_t @ g_t.T)
    compiled = jax.jit(weight_gradient_features_first).lower(a_t, g_t).compile().as_text()
    assert "lhs_contracting_dims={1}, rhs_contracting_dims={1}" in compiled
