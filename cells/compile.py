"""Compiles a cell `Graph` into pure JAX functions with one matmul per distinct `W` operand.

    cell = compile_cell(parse(text))
    params = cell.init(jax.random.key(0), hidden=128, init_scale=1.0)
    h, c = cell.step(params, (h, c), x)          # x, h, c: (..., hidden)

All `W` nodes that read the same value share ONE matmul on concatenated weights (what flax's
`OptimizedLSTMCell` does by hand; `cells.plan` works out which): the LSTM step is two matmuls, one
on x and one on h, and the GRU step three (x, h and r*h). Identical pure sub-expressions
(`tanh(h)` written twice) are computed once, so they also share their matmul.

Parameters are a dict with one entry per fused matmul, keyed by the operand as written (`"x"`,
`"h"`, `"r*h"`): `{"kernel": (H, k*H), "bias": (k*H,)}`, column block k belonging to the k-th `W`
that reads it. Kernels are (in, out), `y = a @ kernel + bias`, as in flax. `cell.linears` lists
each `W` by its label (`graph.linear_labels()`, e.g. `"f.h"` for the forget gate's W_hf) and
`get_linear` / `set_linear` read and write one `W`'s kernel and bias by that label.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from cells.graph import CONST, LEAKY_SLOPE, LINEAR, SOURCES, Graph
from cells.plan import Linear, Matmul, plan_matmuls

Params = dict[str, dict[str, jax.Array]]
Carry = tuple[jax.Array, jax.Array]

_UNARY = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "leaky_relu": lambda a: jax.nn.leaky_relu(a, LEAKY_SLOPE),
    "identity": lambda a: a,
}
_BINARY = {"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply}


@dataclasses.dataclass(frozen=True, eq=False)
class CompiledCell:
    """A cell as pure JAX functions (see the module docstring).

    Attributes:
      graph: the source graph.
      matmuls: the fused matmuls in evaluation order.
      linears: label -> location of every `W` node's parameters.
    """

    graph: Graph
    matmuls: tuple[Matmul, ...]
    linears: Mapping[str, Linear]
    _value_of: tuple[int, ...]  # node -> the node whose value it shares (common sub-expressions)

    @property
    def has_memory(self) -> bool:
        """Whether the cell has a memory cell c (the carry's c is passed through otherwise)."""
        return self.graph.c_new is not None

    def init(self, key: jax.Array, hidden: int, init_scale: float | jax.Array = 1.0) -> Params:
        """Draws parameters: kernels uniform in [-s/sqrt(H), s/sqrt(H)], biases at `bias=`.

        Args:
          key: a JAX PRNG key.
          hidden: H, the width of every value.
          init_scale: s; may be a traced value, so one compiled program serves every scale.

        Returns:
          The parameter dict (see the module docstring).
        """
        limit = init_scale / math.sqrt(hidden)
        keys = jax.random.split(key, len(self.matmuls))
        params = {}
        for k, matmul in zip(keys, self.matmuls):
            width = hidden * len(matmul.nodes)
            kernel = jax.random.uniform(k, (hidden, width), jnp.float32, -1.0, 1.0) * limit
            bias = jnp.repeat(
                jnp.array([self.graph.nodes[i].bias for i in matmul.nodes], jnp.float32), hidden
            )
            params[matmul.key] = {"kernel": kernel, "bias": bias}
        return params

    def initial_carry(self, batch_shape: tuple[int, ...], hidden: int) -> Carry:
        """Zero (h, c) for a batch of the given shape."""
        zeros = jnp.zeros((*batch_shape, hidden), jnp.float32)
        return zeros, zeros

    def step(self, params: Params, carry: Carry, x: jax.Array) -> Carry:
        """One time step: (h, c), x -> (h_new, c_new); c is passed through if the cell has none.

        Args:
          params: from `init` (or with the same structure).
          carry: (h, c), each (..., H).
          x: the input, (..., H).

        Returns:
          (h_new, c_new), each (..., H).
        """
        values = self.values(params, carry, x)
        return self.outputs(values, carry)

    def values(
        self, params: Params, carry: Carry, x: jax.Array, x_proj=None, feature_major: bool = False
    ) -> dict[int, Any]:
        """Every node's value for one step, keyed by node index (shared sub-expressions alias).

        Args:
          params: the parameters; the entry of the matmul on x may be absent when `x_proj` is given.
          carry: (h, c), each (..., H).
          x: the input, (..., H).
          x_proj: optional precomputed output of the fused matmul on x, (..., k*H), used instead of
            computing `x @ kernel + bias` (see `unroll`).
          feature_major: every value is (H, B) instead, features first, as `cells.scan`'s loops
            hold them on the CPU; each kernel in `params` is then transposed, (k*H, H), and a
            fused output is `kernel @ a + bias[:, None]`.
        """
        h, c = carry
        graph = self.graph
        hidden = h.shape[0 if feature_major else -1]
        values: dict[int, Any] = {}
        fused: dict[str, jax.Array] = {}
        matmul_of = {i: m for m in self.matmuls for i in m.nodes}
        inputs = {"x": x, "h": h, "c": c}
        for i, node in enumerate(graph.nodes):
            if self._value_of[i] != i:
                values[i] = values[self._value_of[i]]
            elif node.op in SOURCES:
                values[i] = inputs[node.op]
            elif node.op == CONST:
                values[i] = jnp.float32(1.0)
            elif node.op == LINEAR:
                matmul = matmul_of[i]
                if matmul.key not in fused:
                    if x_proj is not None and matmul.key == self.x_matmul:
                        fused[matmul.key] = x_proj
                    else:
                        p, a = params[matmul.key], values[matmul.operand]
                        fused[matmul.key] = (
                            p["kernel"] @ a + p["bias"][:, None]
                            if feature_major
                            else a @ p["kernel"] + p["bias"]
                        )
                start = matmul.nodes.index(i) * hidden
                fused_value, block = fused[matmul.key], slice(start, start + hidden)
                values[i] = fused_value[block] if feature_major else fused_value[..., block]
            elif node.op in _UNARY:
                values[i] = _UNARY[node.op](values[node.inputs[0]])
            else:
                left, right = node.inputs
                values[i] = _BINARY[node.op](values[left], values[right])
        return values

    def outputs(self, values: dict[int, Any], carry: Carry) -> Carry:
        """(h_new, c_new) from `values`; c_new is the old c for a cell without memory."""
        c_new = values[self.graph.c_new] if self.graph.c_new is not None else carry[1]
        return values[self.graph.h_new], c_new

    @property
    def x_matmul(self) -> str | None:
        """The key of the fused matmul that reads x itself, if there is one."""
        x = next((i for i, n in enumerate(self.graph.nodes) if n.op == "x"), None)
        return next((m.key for m in self.matmuls if x is not None and m.operand == x), None)

    @property
    def reads_x_outside_matmul(self) -> bool:
        """Whether x feeds anything but its fused matmul (then `unroll` needs xs with x_proj)."""
        x_nodes = {i for i, node in enumerate(self.graph.nodes) if node.op == "x"}
        readers = (node for node in self.graph.nodes if node.op != LINEAR)
        return any(j in x_nodes for node in readers for j in node.inputs)

    def unroll(
        self, params: Params, carry: Carry, xs: jax.Array | None, x_proj: jax.Array | None = None
    ) -> tuple[Carry, jax.Array]:
        """Runs the cell over time; returns (final carry, hs (T, ..., H)).

        The gradient is hand-written (`cells.scan`): the backward scan propagates only the state
        gradient, and every weight gradient is ONE matmul over all time steps after the loop.
        It equals autodiff of `unroll_autodiff` to float32 rounding.

        Args:
          params: the parameters.
          carry: (h, c), each (..., H).
          xs: the inputs, (T, ..., H); may be None when x_proj is given and x feeds nothing else
            (`reads_x_outside_matmul` is False).
          x_proj: optional (T, ..., k*H) output of the fused matmul on x for every step (e.g. rows
            of a folded embedding table); its gradient flows back to whatever computed it.
        """
        from cells.scan import unroll

        return unroll(self, params, carry, xs, x_proj)

    def unroll_autodiff(
        self, params: Params, carry: Carry, xs: jax.Array
    ) -> tuple[Carry, jax.Array]:
        """`unroll` as a plain `lax.scan` of `step`, differentiated by JAX (the reference)."""

        def body(carry, x):
            carry = self.step(params, carry, x)
            return carry, carry[0]

        return jax.lax.scan(body, carry, xs)

    def get_linear(self, params: Params, label: str) -> tuple[jax.Array, jax.Array]:
        """Returns (kernel (H, H), bias (H,)) of the `W` node `label`."""
        where = self._linear(label)
        p = params[where.group]
        hidden = p["kernel"].shape[0]
        cols = slice(where.block * hidden, (where.block + 1) * hidden)
        return p["kernel"][:, cols], p["bias"][cols]

    def set_linear(
        self,
        params: Params,
        label: str,
        kernel: jax.Array | None = None,
        bias: jax.Array | None = None,
    ) -> Params:
        """Returns a copy of `params` with the kernel and/or bias of `W` node `label` replaced.

        Args:
          params: the cell's parameters.
          label: a key of `self.linears` (e.g. "f.h").
          kernel: (H, H), applied as `a @ kernel`; None keeps the current one.
          bias: (H,); None keeps the current one.
        """
        where = self._linear(label)
        p = params[where.group]
        hidden = p["kernel"].shape[0]
        cols = slice(where.block * hidden, (where.block + 1) * hidden)
        new = dict(p)
        if kernel is not None:
            new["kernel"] = p["kernel"].at[:, cols].set(jnp.asarray(kernel, jnp.float32))
        if bias is not None:
            new["bias"] = p["bias"].at[cols].set(jnp.asarray(bias, jnp.float32))
        return {**params, where.group: new}

    def _linear(self, label: str) -> Linear:
        if label not in self.linears:
            raise KeyError(f"no W node '{label}' in this cell (known: {', '.join(self.linears)})")
        return self.linears[label]


def compile_cell(graph: Graph) -> CompiledCell:
    """Plans the fused evaluation of `graph` (cheap; JAX traces `step` when it is first called).

    Args:
      graph: a validated cell graph.

    Returns:
      A `CompiledCell` whose `init` and `step` are pure and usable under jit, vmap and scan.
    """
    return CompiledCell(graph, *plan_matmuls(graph))
