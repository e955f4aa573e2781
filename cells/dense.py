"""`dense(a, kernel)`: `a @ kernel` whose weight gradient XLA's CPU backend runs at full speed.

The weight gradient of `a @ kernel` is `a^T @ g`, a dot that contracts both operands' leading
(batch) dimension. XLA's CPU backend runs that dot on a slower path than a plain one: at
(1600, 512)^T @ (1600, 2048), the LSTM's at H = 512 over 50 steps of 32, 118-123 GFLOP/s against
about 160 for the same product with `a^T` laid out first, the transpose's copy included; at the
other shapes measured 1.0-1.2x (benchmarks/README.md). So
`weight_gradient` lays `a^T` out behind an optimization barrier (without it XLA folds the
transpose back into the dot). The LSTM's train step at H = 512 with a 2,000-word softmax got
1.07x faster (benchmarks/README.md, "Weight gradients and the x-projection (session 31)").
"""

from __future__ import annotations

import jax


def weight_gradient(a: jax.Array, g: jax.Array) -> jax.Array:
    """The gradient of `a @ kernel` with respect to `kernel`, `a^T @ g`.

    Args:
      a: the matmul's left operand, (N, K).
      g: the gradient of its output, (N, M).

    Returns:
      (K, M).
    """
    return jax.lax.optimization_barrier(a.T) @ g


def weight_gradient_features_first(a_t: jax.Array, g_t: jax.Array) -> jax.Array:
    """`weight_gradient` from both operands held features first, `a_t @ g_t^T`.

    Both are laid out behind an optimization barrier first: they come as transposes of (T, F, B)
    sequences (`cells.scan`'s loops on the CPU), which XLA would otherwise fold into the dot as
    one that contracts two dimensions of each. The dot then contracts both operands' last
    dimension, a form XLA's CPU backend runs as fast as `weight_gradient`'s (benchmarks/README.md).

    Args:
      a_t: the matmul's left operand, transposed, (K, N).
      g_t: the gradient of its output, transposed, (M, N).

    Returns:
      (K, M).
    """
    a_t, g_t = jax.lax.optimization_barrier((a_t, g_t))
    return jax.lax.dot_general(a_t, g_t, (((1,), (1,)), ((), ())))


@jax.custom_vjp
def dense(a: jax.Array, kernel: jax.Array) -> jax.Array:
    """`a @ kernel` for a 2-D `a`, differentiated with `weight_gradient`.

    Args:
      a: (N, K).
      kernel: (K, M).

    Returns:
      (N, M).
    """
    return a @ kernel


def _dense_fwd(a, kernel):
    return a @ kernel, (a, kernel)


def _dense_bwd(residuals, g):
    a, kernel = residuals
    return g @ kernel.T, weight_gradient(a, g)


dense.defvjp(_dense_fwd, _dense_bwd)


def linear(x: jax.Array, p: dict) -> jax.Array:
    """`x @ p["kernel"] + p["bias"]` over x's last axis, as ONE `dense` over all leading axes.

    Args:
      x: (..., K).
      p: {"kernel": (K, M), "bias": (M,)}, one fused matmul's parameters (`cells.compile`).

    Returns:
      (..., M).
    """
    flat = x.reshape(-1, x.shape[-1])
    return (dense(flat, p["kernel"]) + p["bias"]).reshape(*x.shape[:-1], -1)
