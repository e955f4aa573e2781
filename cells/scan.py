"""`CompiledCell.unroll`: a cell over a whole sequence, with a hand-written backward pass.

Autodiff of `lax.scan` computes each weight gradient inside the reverse loop, as one small
(B, H)^T @ (B, k*H) product per fused matmul per step. Here the reverse loop only propagates the
state gradient (one (B, k*H) @ (k*H, H) product per step for each fused matmul whose operand depends
on the state) and emits the gradient of every matmul's output; after the loop each weight gradient
is ONE (T*B, H)^T @ (T*B, k*H) product (`cells.dense.weight_gradient`). The matmul on x does not
depend on the state, so it runs before the loop for every step at once (`cells.dense.linear`), and its
gradients are that one product's. The backward rules below cover every op of the cell
language, so this works for any graph; tests compare it with autodiff of `unroll_autodiff`.
An output gradient that is other matmuls' side by side (the LSTM's on x and on h are the same, as
both feed `W x + W h` per gate; the GRU's on x is its two recurrent matmuls') is not stacked again
but assembled after the loop, and the reverse loop reads kernels transposed before it (batch first).

On a CPU from H = 384 on, the loops hold every value features first, (H, B) (`loops_feature_major`):
the forward loop multiplies the (k*H, H) transposed kernel by the (H, B) state, the backward loop
the kernel itself by the (k*H, B) output gradient. XLA's CPU backend ran such small products up to
1.45x faster that way round. `unroll` keeps (..., H) outside and transposes the sequences on the
way in and out; each weight gradient is then a dot of two (F, T*B) arrays on their last dimension
(`cells.dense.weight_gradient_features_first`).

The forward pass saves, per step, what the backward rules read (the outputs of tanh, sigmoid, relu
and leaky_relu, the inputs of `mul`, and each matmul's operand) unless the backward can recompute
it with one elementwise op from values it has: the GRU's `1 - z` and `r * h` are not saved. x and
h are not saved either (they are the input sequence and the shifted outputs); c is, when the cell
reads it. Each saved value costs the forward loop a write per step, a kernel launch of its own in
XLA's CPU loops.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from cells import dense
from cells.compile import _BINARY, _UNARY
from cells.graph import CONST, LEAKY_SLOPE, LINEAR, SOURCES

# d(output)/d(input) of each unary op, written in terms of its OUTPUT y (what the forward saves).
_DERIVATIVE = {
    "tanh": lambda y: 1.0 - y * y,
    "sigmoid": lambda y: y * (1.0 - y),
    "relu": lambda y: (y > 0).astype(y.dtype),
    "leaky_relu": lambda y: jnp.where(y > 0, 1.0, LEAKY_SLOPE).astype(y.dtype),
}


# ops the backward pass redoes from values it has rather than the forward saving their output
_RECOMPUTED = ("identity", "add", "sub", "mul")


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What the forward pass keeps and the backward pass visits, for one cell."""

    nodes: tuple[int, ...]  # distinct values, in evaluation order
    inputs: dict[int, tuple[int, ...]]  # node -> its inputs (distinct values)
    constant: frozenset[int]  # nodes whose value is a scalar built from `one` alone
    source: dict[str, int]  # "x" / "h" / "c" -> node, for the sources the cell reads
    saved: tuple[int, ...]  # non-source nodes whose forward value the backward rules read
    recomputed: tuple[int, ...]  # nodes the backward reads but recomputes from available values
    h_out: int
    c_out: int | None


def _plan(cell) -> _Plan:
    graph, value_of = cell.graph, cell._value_of
    nodes = tuple(i for i in range(len(graph.nodes)) if value_of[i] == i)
    inputs = {i: tuple(value_of[j] for j in graph.nodes[i].inputs) for i in nodes}
    op = {i: graph.nodes[i].op for i in nodes}
    constant: set[int] = set()
    for i in nodes:
        if op[i] == CONST or (
            op[i] not in SOURCES and op[i] != LINEAR and all(j in constant for j in inputs[i])
        ):
            constant.add(i)
    read: set[int] = {m.operand for m in cell.matmuls}
    for i in nodes:
        if i in constant:
            continue
        if op[i] in _DERIVATIVE:
            read.add(i)
        elif op[i] == "mul":
            read.update(inputs[i])
    source = {op[i]: i for i in nodes if op[i] in SOURCES}
    available = set(constant) | set(source.values())
    saved, recomputed = [], []
    for i in nodes:
        if i in read and i not in available:
            cheap = op[i] in _RECOMPUTED and all(j in available for j in inputs[i])
            (recomputed if cheap else saved).append(i)
            available.add(i)
    c_out = value_of[graph.c_new] if graph.c_new is not None else None
    return _Plan(nodes, inputs, frozenset(constant), source, tuple(saved), tuple(recomputed),
                 value_of[graph.h_new], c_out)  # fmt: skip


def unroll(cell, params, carry, xs, x_proj=None):
    """See `CompiledCell.unroll`."""
    if xs is None and (x_proj is None or cell.reads_x_outside_matmul):
        raise ValueError("xs may be None only when x_proj is given and x feeds nothing else")
    if x_proj is None and cell.x_matmul is not None:
        # the matmul on x for every step at once, one (T*B, H) @ (H, k*H) product, instead of a
        # (B, H) one per step: in the loop the LSTM's two (32, 512) @ (512, 2048) products per step
        # ran side by side on one core each; before it, the loop's one runs on both and the big
        # product near the matmul ceiling. The LSTM's train step at H = 512 got 1.09-1.13x faster
        # (benchmarks/README.md, "Weight gradients and the x-projection (session 31)").
        x_proj = dense.linear(xs, params[cell.x_matmul])
    if x_proj is not None:  # the x matmul's weights live with whoever computed x_proj
        params = {k: v for k, v in params.items() if k != cell.x_matmul}
        if not cell.reads_x_outside_matmul:
            xs = None
    batch_shape, hidden = carry[0].shape[:-1], carry[0].shape[-1]
    if not loops_feature_major(hidden):
        return _unroll(cell, False, params, carry, xs, x_proj)

    def features_first(a):  # (T, ..., F) -> (T, F, N); JAX differentiates these transposes
        return None if a is None else jnp.swapaxes(a.reshape(a.shape[0], -1, a.shape[-1]), 1, 2)

    def batch_first(a):  # (F, N) -> (..., F)
        return a.T.reshape(*batch_shape, a.shape[0])

    carry = tuple(a.reshape(-1, hidden).T for a in carry)
    final, hs = _unroll(cell, True, params, carry, features_first(xs), features_first(x_proj))
    hs = jnp.swapaxes(hs, 1, 2).reshape(hs.shape[0], *batch_shape, hidden)
    return tuple(batch_first(a) for a in final), hs


# From this width on, `unroll`'s loops hold values features first on a CPU (`loops_feature_major`).
FEATURES_FIRST_FROM_HIDDEN = 384


def loops_feature_major(hidden: int) -> bool:
    """Whether `unroll`'s loops hold each value features first, (H, B), rather than (B, H).

    On XLA's CPU backend a loop's per-step product ran 1.1-1.45x faster as (k*H, H) @ (H, B) than
    as (B, H) @ (H, k*H) at B = 32, H = 128-512 (160 against 112 GFLOP/s at the LSTM's H = 512).
    What that costs is transposing the sequences in and out of the loops. The trainer's train
    steps, paired against batch first (paper preset, 10 steps per call): at H = 512 1.01-1.16x,
    at H = 384 0.97-1.10x, at H = 256 0.92-1.03x, at H = 128 and 200 0.91-0.98x
    (benchmarks/README.md, "Features first in the loops (session 40)"). Other backends are
    unmeasured (`benchmarks/loop_layout.py` measures them) and stay batch first.

    Args:
      hidden: H.

    Returns:
      True on the CPU backend from H = `FEATURES_FIRST_FROM_HIDDEN` on.
    """
    return jax.default_backend() == "cpu" and hidden >= FEATURES_FIRST_FROM_HIDDEN


def _forward(cell, plan: _Plan, params, carry, xs, x_proj, feature_major):
    # features first, the kernels are transposed once and carried through the loop, for the
    # reason the backward pass carries its transposes (below)
    kernels = {k: p["kernel"].T for k, p in params.items()} if feature_major else {}

    def body(state, inputs):
        carry, kernels = state
        x, x_proj_t = inputs
        step_params = params
        if kernels:
            step_params = {k: {**p, "kernel": kernels[k]} for k, p in params.items()}
        values = cell.values(step_params, carry, x, x_proj_t, feature_major)
        new = cell.outputs(values, carry)
        saved = {i: values[i] for i in plan.saved}
        c_prev = carry[1] if "c" in plan.source else None
        return (new, kernels), (new[0], saved, c_prev)

    steps = (xs if xs is not None else x_proj).shape[0]
    state = (carry, kernels)
    (final, _), (hs, saved, c_prev) = jax.lax.scan(body, state, (xs, x_proj), length=steps)
    return (final, hs), (saved, c_prev)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _unroll(cell, feature_major, params, carry, xs, x_proj):
    return _forward(cell, _plan(cell), params, carry, xs, x_proj, feature_major)[0]


def _unroll_fwd(cell, feature_major, params, carry, xs, x_proj):
    plan = _plan(cell)
    (final, hs), (saved, c_prev) = _forward(cell, plan, params, carry, xs, x_proj, feature_major)
    return (final, hs), (params, carry, xs, hs, saved, c_prev)


def _unroll_bwd(cell, feature_major, residuals, cotangents):
    params, (h0, _), xs, hs, saved, c_prev = residuals
    (g_h_final, g_c_final), g_hs = cotangents
    plan = _plan(cell)
    graph = cell.graph
    # where a value's features lie: in the loop, (H, B) or (B, H); stacked over time, (T, H, B)
    # or (T, B, H)
    feature, stacked_feature = (0, 1) if feature_major else (-1, -1)
    hidden = h0.shape[feature]
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    x_key = cell.x_matmul
    x_node = plan.source.get("x")
    # the matmul on x itself gets no operand gradient inside the loop: that is one product after it
    looped = [m for m in cell.matmuls if m.key != x_key]
    reading = {i: [m for m in looped if m.operand == i] for i in plan.nodes}

    assembled = _assembled_output_gradients(cell, plan, [m.key for m in looped])
    # batch first, each looped kernel transposed ONCE and carried through the loop: left to
    # itself, XLA folds the transpose into every step's matmul, which then ran 10-15% slower on
    # the CPU. Features first, the step's product is the kernel itself times the gradient.
    kernels = {m.key: params[m.key]["kernel"] for m in looped}
    if not feature_major:
        kernels = {key: kernel.T for key, kernel in kernels.items()}

    def body(state, inputs):
        (g_h_next, g_c_next), kernels = state
        x, h, c, values_saved, g_h_out = inputs
        values = dict(values_saved)
        for name, value in (("x", x), ("h", h), ("c", c)):
            if name in plan.source:
                values[plan.source[name]] = value
        for i in plan.nodes:
            if i in plan.constant or i in plan.recomputed:
                values[i] = _apply(graph.nodes[i].op, [values[j] for j in plan.inputs[i]])
        grads: dict[int, jax.Array] = {}

        def add(i, g):
            if i not in plan.constant:
                grads[i] = g if i not in grads else grads[i] + g

        add(plan.h_out, g_h_next + g_h_out)
        if plan.c_out is not None:
            add(plan.c_out, g_c_next)
        zeros = jnp.zeros_like(g_h_next)
        g_matmul = {}
        for i in reversed(plan.nodes):
            for m in reading[i]:  # all of m's W nodes come later, so their gradients are final
                g_matmul[m.key] = jnp.concatenate([grads.get(j, zeros) for j in m.nodes], feature)
                g_out, kernel = g_matmul[m.key], kernels[m.key]
                add(i, kernel @ g_out if feature_major else g_out @ kernel)
            if i not in grads:
                continue
            g, op, args = grads[i], graph.nodes[i].op, plan.inputs[i]
            if op in _DERIVATIVE:
                add(args[0], g * _DERIVATIVE[op](values[i]))
            elif op in ("identity", "add"):
                for j in args:
                    add(j, g)
            elif op == "sub":
                add(args[0], g)
                add(args[1], -g)
            elif op == "mul":
                add(args[0], g * values[args[1]])
                add(args[1], g * values[args[0]])
        if x_key is not None:
            x_matmul = next(m for m in cell.matmuls if m.key == x_key)
            g_x = [grads.get(j, zeros) for j in x_matmul.nodes]
            g_matmul[x_key] = jnp.concatenate(g_x, feature)
        g_h = grads.get(plan.source.get("h"), zeros)
        g_c = grads.get(plan.source.get("c"), zeros) if cell.has_memory else g_c_next
        g_x = grads.get(x_node) if cell.reads_x_outside_matmul else None
        distinct = {k: g for k, g in g_matmul.items() if k not in assembled}
        return ((g_h, g_c), kernels), (distinct, g_x)

    ((g_h0, g_c0), _), (g_matmul, g_xs) = jax.lax.scan(
        body, ((g_h_final, g_c_final), kernels), (xs, h_prev, c_prev, saved, g_hs), reverse=True,
        length=hs.shape[0],
    )  # fmt: skip
    for key, pieces in assembled.items():
        g_matmul[key] = jnp.concatenate([g_matmul[piece] for piece in pieces], stacked_feature)
    sequences = {"x": xs, "h": h_prev, "c": c_prev}
    operand_seq = {**saved, **{i: sequences[name] for name, i in plan.source.items()}}
    for i in plan.nodes:  # recomputed operands, as whole sequences, for the weight gradients
        if i in plan.constant or i in plan.recomputed:
            operand_seq[i] = _apply(graph.nodes[i].op, [operand_seq[j] for j in plan.inputs[i]])
    g_params = {}
    for m in cell.matmuls:
        if m.key not in params:  # the x matmul: its output came in as x_proj
            continue
        a, g = operand_seq[m.operand], g_matmul[m.key]
        if feature_major:  # (T, F, B) -> (F, T*B)
            a_t, g_t = (jnp.swapaxes(v, 0, 1).reshape(v.shape[1], -1) for v in (a, g))
            g_params[m.key] = {"kernel": dense.weight_gradient_features_first(a_t, g_t),
                               "bias": g_t.sum(1)}  # fmt: skip
        else:
            a, g = a.reshape(-1, hidden), g.reshape(-1, g.shape[-1])
            g_params[m.key] = {"kernel": dense.weight_gradient(a, g), "bias": g.sum(0)}
    g_x_proj = g_matmul[x_key] if x_key is not None else None
    if g_xs is None and xs is not None:
        g_xs = jnp.zeros_like(xs)
    return g_params, (g_h0, g_c0), g_xs, g_x_proj


_unroll.defvjp(_unroll_fwd, _unroll_bwd)


def _assembled_output_gradients(cell, plan: _Plan, looped) -> dict[str, tuple[str, ...]]:
    """Matmuls whose output gradient is other matmuls' side by side, by structure -> those.

    A matmul's output gradient is its W nodes' gradients side by side, and a W node read once, by
    an `add` or `identity`, and not itself an output, gets exactly that node's gradient. So the
    LSTM's W_x* and W_h* (summed per gate) have the same output gradient, and the GRU's matmul on
    x has its two recurrent matmuls' side by side. The backward loop stacks only the others,
    preferring the `looped` matmuls' (it builds those per step anyway, to multiply by kernels).
    """
    readers: dict[int, list[int]] = {}
    for i in plan.nodes:
        for j in plan.inputs[i]:
            readers.setdefault(j, []).append(i)
    outputs = (plan.h_out, plan.c_out)

    def gradient_source(j):  # the node whose gradient W node j passes on unchanged, or j itself
        only = readers.get(j, [])
        if len(only) == 1 and j not in outputs and cell.graph.nodes[only[0]].op in ("add", "identity"):
            return only[0]
        return j

    sources = {m.key: tuple(gradient_source(j) for j in m.nodes) for m in cell.matmuls}
    stored: list[str] = []
    assembled = {}
    for key in sorted(sources, key=lambda k: k not in looped):  # stable: looped ones first
        want, pieces, at = sources[key], [], 0
        while at < len(want):
            piece = next((s for s in stored if want[at : at + len(sources[s])] == sources[s]), None)
            if piece is None:
                break
            pieces.append(piece)
            at += len(sources[piece])
        if at == len(want):
            assembled[key] = tuple(pieces)
        else:
            stored.append(key)
    return assembled


def _apply(op, inputs):
    if op == CONST:
        return jnp.float32(1.0)
    return _UNARY[op](*inputs) if op in _UNARY else _BINARY[op](*inputs)
