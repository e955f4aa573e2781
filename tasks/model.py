"""The network around a cell: input projection -> stacked cells -> readout, as flax NNX modules.

Every weight starts uniform in [-s/sqrt(H), s/sqrt(H)] with s the trial's `init_scale` (which may be
a traced value, so one compiled initialiser serves every scale); the cell's biases start at their
`bias=` values, the other biases at 0. Dropout acts on the non-recurrent connections only: the
input of each layer and the input of the readout (Zaremba et al. 2014).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cells import CompiledCell
from cells.dense import dense, linear

Carry = list[tuple[jax.Array, jax.Array]]  # (h, c) per layer


class CellLayer(nnx.Module):
    """One layer of a compiled cell; its fused kernels and biases are NNX parameters."""

    def __init__(self, cell: CompiledCell, hidden: int, init_scale, rngs: nnx.Rngs):
        params = cell.init(rngs.params(), hidden, init_scale)
        self.cell = cell
        self.kernels = nnx.List([nnx.Param(params[m.key]["kernel"]) for m in cell.matmuls])
        self.biases = nnx.List([nnx.Param(params[m.key]["bias"]) for m in cell.matmuls])

    def params(self) -> dict:
        """The parameters in the layout `CompiledCell.step` expects."""
        return {
            m.key: {"kernel": self.kernels[i][...], "bias": self.biases[i][...]}
            for i, m in enumerate(self.cell.matmuls)
        }

    def __call__(self, carry, xs, x_proj=None):
        """Runs the layer over time; xs is (T, B, H); returns (final carry, hs).

        x_proj, if given, is the output of the matmul on x for every step (`CompiledCell.unroll`).
        """
        return self.cell.unroll(self.params(), carry, xs, x_proj)


class RNNModel(nnx.Module):
    """Embedding (token ids) or linear projection (88-key frames) -> cells -> linear readout.

    Args:
      cell: the compiled cell, used in every layer.
      n_inputs: vocabulary size, or 88 for frames.
      n_outputs: classes (softmax) or keys (sigmoid).
      tokens: whether inputs are token ids.
      layers: number of stacked cells.
      hidden: H.
      init_scale: s of the uniform initialisation.
      rngs: NNX random streams.
    """

    def __init__(self, cell, *, n_inputs, n_outputs, tokens, layers, hidden, init_scale, rngs):
        limit = init_scale / math.sqrt(hidden)

        def uniform(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * limit

        if tokens:
            self.embed = nnx.Embed(n_inputs, hidden, embedding_init=uniform, rngs=rngs)
        else:
            self.embed = nnx.Linear(n_inputs, hidden, kernel_init=uniform, rngs=rngs)
        self.layers = nnx.List([CellLayer(cell, hidden, init_scale, rngs) for _ in range(layers)])
        self.readout = nnx.Linear(hidden, n_outputs, kernel_init=uniform, rngs=rngs)
        self.tokens = tokens

    def __call__(self, carry: Carry, inputs, dropout, key) -> tuple[Carry, jax.Array]:
        """Runs the network over a batch.

        Without dropout, a token-input network whose vocabulary V is at most the batch's B*T
        tokens FOLDS its embedding into the first layer: `embedding[t] @ W_x + b` is row t of the
        table `embedding @ W_x + b` (V, k*H), so the first layer's matmul on x becomes one small
        matmul per batch and a row lookup per token. Same function, same parameters; with
        dropout on the layer's input the two are not equal, so it is only done without.

        Args:
          carry: (h, c) per layer, each (B, H).
          inputs: (B, T) token ids or (B, T, 88) frames.
          dropout: the drop probability (a traced scalar), or None for no dropout code at all.
          key: PRNG key for dropout.

        Returns:
          (final carry, logits (T, B, n_outputs)): TIME-major, as the scan made them. Swapping
          them to batch-major copies the step's largest array and its gradient; without the
          swap and with the 2-D readout below, PTB train steps got 1.2-1.7x faster.
        """
        cell = self.layers[0].cell
        fold = (dropout is None and self.tokens and cell.x_matmul is not None
                and self.embed.num_embeddings <= inputs.size)  # fmt: skip
        x_proj = None
        if fold:
            w = self.layers[0].params()[cell.x_matmul]
            table = linear(self.embed.embedding[...], w)
            x_proj = table[inputs.T]  # (T, B, k*H)
        if not fold or cell.reads_x_outside_matmul:
            xs = jnp.swapaxes(self.embed(inputs), 0, 1)  # time-major for lax.scan
        else:
            xs = None
        keys = jax.random.split(key, len(self.layers) + 1)
        new_carry = []
        for layer, layer_carry, k in zip(self.layers, carry, keys):
            layer_carry, xs = layer(layer_carry, _dropout(xs, dropout, k), x_proj)
            new_carry.append(layer_carry)
            x_proj = None
        hs = _dropout(xs, dropout, keys[-1])
        # The readout as ONE 2-D matmul: faster than the same on 3-D arrays.
        flat = hs.reshape(-1, hs.shape[-1])
        if bias_in_readout_matmul():
            ones = jnp.ones((flat.shape[0], 1), flat.dtype)
            kernel = jnp.concatenate([self.readout.kernel[...], self.readout.bias[...][None]], 0)
            logits = dense(jnp.concatenate([flat, ones], 1), kernel)
        else:
            logits = self.readout(flat)
        return new_carry, logits.reshape(*hs.shape[:2], -1)


def bias_in_readout_matmul() -> bool:
    """Whether the readout adds its bias inside its matmul, as the kernel's last row against a
    column of ones: on a CPU only.

    Added after the matmul, the bias cost XLA's CPU backend two passes over the logits, one to add
    it and one to sum its gradient; PTB's train step is 1.23x faster at H = 32 and 1.07-1.14x at
    H = 200 without them (benchmarks/README.md, "The readout's bias"). On an H200 the same change
    made 20 vmapped PTB settings 15-16% slower and one trial 5% (not profiled; the contraction
    H + 1 long is one guess; benchmarks/README.md, "K settings as one vmapped program on a GPU"),
    so elsewhere the bias is added after the matmul, as flax's `Linear` does.
    """
    return jax.default_backend() == "cpu"


def _dropout(x, rate, key):
    if rate is None or x is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def zero_carry(layers: int, batch: int, hidden: int) -> Carry:
    zeros = jnp.zeros((batch, hidden), jnp.float32)
    return [(zeros, zeros) for _ in range(layers)]


def step_losses(logits, targets, tokens: bool):
    """Negative log-likelihood of each step: cross-entropy, or BCE summed over the keys.

    Args:
      logits: (..., n_outputs), e.g. the model's (T, B, n_outputs).
      targets: class ids of shape `logits.shape[:-1]`, or 0/1 frames of the logits' shape.
      tokens: whether targets are class ids.

    Returns:
      The losses, `logits.shape[:-1]`.
    """
    if tokens:
        return softmax_cross_entropy(logits, targets)
    return optax.sigmoid_binary_cross_entropy(logits, targets).sum(-1)


@jax.custom_vjp
def softmax_cross_entropy(logits, targets):
    """`optax.softmax_cross_entropy_with_integer_labels`, with a gradient that needs no scatter.

    Autodiff of the label lookup scatters -1 into the softmax; here the gradient is the softmax
    minus the one-hot target, one elementwise pass. XLA's CPU scatter kernel cost 50-75 ms of
    compile per program, and this runs as fast (benchmarks/README.md, "Compilation").

    Args:
      logits: (..., n_classes).
      targets: integer class ids, `logits.shape[:-1]`.

    Returns:
      The losses, `logits.shape[:-1]`.
    """
    return _cross_entropy_fwd(logits, targets)[0]


def _cross_entropy_fwd(logits, targets):
    log_norm = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_norm - picked, (logits, log_norm, targets)


def _cross_entropy_bwd(residuals, g):
    logits, log_norm, targets = residuals
    classes = jax.lax.broadcasted_iota(targets.dtype, logits.shape, logits.ndim - 1)
    g_softmax = g[..., None] * jnp.exp(logits - log_norm[..., None])
    # a select, not `softmax - one_hot`: subtracting the converted comparison ran the PTB train
    # step 5% slower on the CPU
    return jnp.where(classes == targets[..., None], g_softmax - g[..., None], g_softmax), None


softmax_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def argmax_hits(logits, targets):
    """Whether each step's prediction is its target: exactly `jnp.argmax(logits, -1) == targets`.

    XLA's CPU argmax (a reduction over value and index pairs) took 9.4 ms on PTB's (20, 20,
    10,000) logits, 4-5x the readout's matmul and most of an evaluation batch; this is two plain
    max reductions, and PTB's evaluation ran 1.8x faster with it. argmax picks the FIRST largest
    logit, NaN above all: the target is that one when its logit is the row's max and no earlier
    logit reaches it.

    Args:
      logits: (..., n_classes).
      targets: integer class ids, `logits.shape[:-1]`.

    Returns:
      Booleans, `logits.shape[:-1]`.
    """
    classes = jax.lax.broadcasted_iota(targets.dtype, logits.shape, logits.ndim - 1)
    top = logits.max(-1)  # NaN where the row has a NaN
    top_before = jnp.where(classes < targets[..., None], logits, -jnp.inf).max(-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    tie_before = (targets > 0) & (top_before == top)
    nan_row = jnp.isnan(top)
    return jnp.where(nan_row, jnp.isnan(picked) & ~jnp.isnan(top_before),
                     (picked == top) & ~tie_before)  # fmt: skip
