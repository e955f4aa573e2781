"""Train steps per second of our compiled cells vs flax NNX, a hand-written jax.numpy cell and PyTorch.

    python benchmarks/versus_frameworks.py                       # lstm, grus, mut1; H = 128 256 512
    python benchmarks/versus_frameworks.py --hidden 256 --rounds 3 --steps 10

Every contender trains the same model: an embedding (vocabulary `--vocab`, width H), one recurrent
layer of H units over `--seq` steps, a linear readout, softmax cross-entropy, plain SGD; batch
`--batch`. JAX contenders jit the whole step (loss, gradient, update) with donated parameters;
PyTorch runs eagerly with its fused `nn.LSTM` / `nn.GRU` (CPU kernels). Contenders alternate within
each round (the order reverses every round) and each round reports steps/s; the table gives
min/median/max over rounds and the paired ratio ours / contender per round. "ours, k steps per call"
is ours as the trainer runs it: k SGD steps (same batch) as one jitted `lax.scan`; its ratio is given
against PyTorch, which steps eagerly. The GEMM ceiling is a jitted f32 matmul of the step's largest
shape; the share is the LSTM step's matmul FLOPs per second over it, counted twice: the nominal
FLOPs of an unfolded step (the same for every contender) and the FLOPs ours does (with the
embedding folded into the x-projection when `--vocab` <= batch x seq).

    python benchmarks/versus_frameworks.py --cells gru --vocab 2000 --parts

`--parts` also times, for ours (k steps per call) and PyTorch, the same model with the recurrence
taken out: embedding, the cell's input projection (k*H columns for k gates), its chunks summed
through a tanh, readout and loss. That part is the same work for every cell; the step minus it is
what the recurrence costs each contender, and the table says how fast ours would have to run it to
reach the issue's target against PyTorch's whole step.

    python benchmarks/versus_frameworks.py --cells lstm --vocab 2000 --torch-without-onednn

On the CPU PyTorch's `nn.LSTM` runs oneDNN's fused LSTM primitive (its `nn.GRU` does not); this
adds the same `nn.LSTM` with `torch.backends.mkldnn` turned off as a contender, the LSTM built
from PyTorch's own matmuls.

Without the fold (`--vocab` > batch x seq) every contender does the same matmuls, so each cell with a
framework contender also gets a FLOP floor: the step's matmul FLOPs (forward and both gradients of
the cell's fused matmuls and of the readout, `step_flops`) at the rate of a jitted matmul of the
readout's shape, the step's largest and fastest, timed in the same rounds as the contenders (the
median of its rounds: a lone measurement moved by half on this shared machine). The row gives the
share of that rate ours (k steps per call) and PyTorch reach, and the share ours would need for the
issue's target against PyTorch (1.3x for the GRUs, 0.9x for the LSTM).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import machine, summary, write  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cells import baseline, compile_cell  # noqa: E402


# our cells that flax NNX and PyTorch also have -> their class. Both frameworks' GRU applies the
# reset AFTER the recurrent matmul, as our `gru_reset_after` does; our `gru` is the paper's form
# (reset before it), which needs one more matmul per step, after r is known.
FRAMEWORK_CELLS = {"lstm": "LSTM", "gru": "GRU", "gru_reset_after": "GRU"}
GATES = {"lstm": 4, "gru": 3, "gru_reset_after": 3}  # columns of the input projection, in units of H
# issue 8's targets: ours (k steps per call) / PyTorch's train steps per second
TORCH_TARGET = {"lstm": 0.9, "gru": 1.3, "gru_reset_after": 1.3}


def _xent(logits, targets):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


def _sgd_update(loss_fn, lr):
    """One plain SGD step as a pure function: (params, inputs, targets) -> (params, loss)."""

    def step(params, inputs, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, inputs, targets)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss

    return step


def _sgd_step(loss_fn, lr):
    return jax.jit(_sgd_update(loss_fn, lr), donate_argnums=0)


def _sgd_steps(loss_fn, lr):
    """SGD steps as ONE jitted call, a `lax.scan` over stacked batches: the way the trainer runs
    them (`Budget.steps_per_call`)."""
    step = _sgd_update(loss_fn, lr)

    def steps(params, inputs, targets):
        return jax.lax.scan(lambda p, batch: step(p, *batch), params, (inputs, targets))

    return jax.jit(steps, donate_argnums=0)


def ours(cell: str, hidden: int, vocab: int, key):
    """The trainer's network (`tasks.model.RNNModel`) around `compile_cell(baseline(cell))`: the
    hand-written backward pass over the scan (`cells.scan`) and the folded embedding."""
    from flax import nnx

    from tasks.model import RNNModel, step_losses, zero_carry

    model = RNNModel(compile_cell(baseline(cell)), n_inputs=vocab, n_outputs=vocab, tokens=True,
                     layers=1, hidden=hidden, init_scale=1.0, rngs=nnx.Rngs(params=key))  # fmt: skip
    graphdef, params = nnx.split(model)

    def loss(p, inputs, targets):
        carry = zero_carry(1, inputs.shape[0], hidden)
        _, logits = nnx.merge(graphdef, p)(carry, inputs, None, jax.random.key(0))
        return step_losses(logits, targets.T, True).mean()  # the trainer's loss, time-major

    return params, loss


def ours_autodiff(cell: str, hidden: int, vocab: int, key):
    """Our cell as before the levers: autodiff of `lax.scan` over `CompiledCell.step`."""
    compiled = compile_cell(baseline(cell))
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"cell": compiled.init(k1, hidden), "embed": jax.random.normal(k2, (vocab, hidden)) * 0.1,
              "out": jax.random.normal(k3, (hidden, vocab)) * 0.1, "out_b": jnp.zeros(vocab)}  # fmt: skip

    def loss(p, inputs, targets):
        xs = jnp.swapaxes(p["embed"][inputs], 0, 1)  # (T, B, H)
        carry = compiled.initial_carry((inputs.shape[0],), hidden)
        _, hs = compiled.unroll_autodiff(p["cell"], carry, xs)
        return _xent(jnp.swapaxes(hs, 0, 1) @ p["out"] + p["out_b"], targets)

    return params, loss


def hand_lstm(hidden: int, vocab: int, key):
    """A hand-written LSTM in jax.numpy: one matmul on [x, h] per step."""
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"w": jax.random.normal(k1, (2 * hidden, 4 * hidden)) / np.sqrt(hidden),
              "b": jnp.zeros(4 * hidden), "embed": jax.random.normal(k2, (vocab, hidden)) * 0.1,
              "out": jax.random.normal(k3, (hidden, vocab)) * 0.1, "out_b": jnp.zeros(vocab)}  # fmt: skip

    def loss(p, inputs, targets):
        xs = jnp.swapaxes(p["embed"][inputs], 0, 1)

        def body(carry, x):
            h, c = carry
            i, f, g, o = jnp.split(jnp.concatenate([x, h], -1) @ p["w"] + p["b"], 4, -1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((inputs.shape[0], hidden))
        _, hs = jax.lax.scan(body, (zeros, zeros), xs)
        return _xent(jnp.swapaxes(hs, 0, 1) @ p["out"] + p["out_b"], targets)

    return params, loss


def ours_no_recurrence(gates: int, hidden: int, vocab: int, key):
    """The model without its recurrence: embedding -> (T*B, H) @ (H, gates*H) -> the chunks summed
    through a tanh -> the trainer's readout and loss (`--parts`)."""
    from tasks.model import step_losses

    k1, k2, k3 = jax.random.split(key, 3)
    params = {"embed": jax.random.normal(k1, (vocab, hidden)) * 0.1,
              "x": jax.random.normal(k2, (hidden, gates * hidden)) / np.sqrt(hidden),
              "x_b": jnp.zeros(gates * hidden), "out": jax.random.normal(k3, (hidden, vocab)) * 0.1,
              "out_b": jnp.zeros(vocab)}  # fmt: skip

    def loss(p, inputs, targets):
        xs = p["embed"][inputs.T].reshape(-1, hidden)  # time-major, as the trainer's network
        hs = jnp.tanh(sum(jnp.split(xs @ p["x"] + p["x_b"], gates, -1)))
        logits = (hs @ p["out"] + p["out_b"]).reshape(*inputs.T.shape, vocab)
        return step_losses(logits, targets.T, True).mean()

    return params, loss


def flax_nnx(cell: str, hidden: int, vocab: int, key):
    """flax NNX: `nnx.RNN` over `OptimizedLSTMCell` or `GRUCell`, split into a pure function."""
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(vocab, hidden, rngs=rngs)
            make = nnx.OptimizedLSTMCell if cell == "lstm" else nnx.GRUCell
            self.rnn = nnx.RNN(make(hidden, hidden, rngs=rngs))
            self.out = nnx.Linear(hidden, vocab, rngs=rngs)

        def __call__(self, inputs):
            zeros = jnp.zeros((inputs.shape[0], hidden))
            carry = (zeros, zeros) if cell == "lstm" else zeros  # flax's (c, h) / h, no RNG needed
            return self.out(self.rnn(self.embed(inputs), initial_carry=carry))

    model = Model(nnx.Rngs(int(jax.random.randint(key, (), 0, 2**30))))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # trained: the Params only

    def loss(p, inputs, targets):
        return _xent(nnx.merge(graphdef, p, rest)(inputs), targets)

    return params, loss


def torch_model(cell: str, hidden: int, vocab: int, lr: float, recurrence: bool = True):
    """PyTorch's SGD step; without `recurrence`, the model of `ours_no_recurrence`."""
    import torch

    gates = GATES[cell]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, hidden)
            if recurrence:
                self.rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(hidden, hidden, batch_first=True)
            else:
                self.x = torch.nn.Linear(hidden, gates * hidden)
            self.out = torch.nn.Linear(hidden, vocab)

        def forward(self, inputs):
            if recurrence:
                return self.out(self.rnn(self.embed(inputs))[0])
            chunks = self.x(self.embed(inputs)).chunk(gates, -1)
            return self.out(torch.tanh(sum(chunks)))

    model = Model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step(inputs, targets):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(inputs).reshape(-1, vocab), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        return loss

    return step


def gemm_ceiling(rows: int, inner: int, cols: int, repeats: int = 20) -> float:
    """FLOP/s of a jitted f32 matmul of this shape (best of `repeats`)."""
    run = _matmuls(rows, inner, cols, 1)
    return 2 * rows * inner * cols / min(_timed(run) for _ in range(repeats))


def _matmuls(rows: int, inner: int, cols: int, count: int):
    """A function that runs `count` jitted f32 (rows, inner) @ (inner, cols) matmuls, compiled."""
    a = jnp.ones((rows, inner), jnp.float32)
    b = jnp.ones((inner, cols), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()

    def run():
        for _ in range(count):
            out = matmul(a, b)
        out.block_until_ready()

    return run


def step_flops(cell: str, hidden: int, vocab: int, tokens: int) -> int:
    """Matmul FLOPs of one unfolded train step: forward, weight gradient and operand gradient of
    each fused matmul of the cell (x's too: the embedding is trained) and of the readout.

    The same for PyTorch's cells: nn.GRU's two (H, 3H) matmuls have the width of our `gru`'s three
    (3H on x, 2H on h, H on r*h); nn.LSTM's two (H, 4H) that of ours.
    """
    columns = sum(len(m.nodes) for m in compile_cell(baseline(cell)).matmuls) * hidden + vocab
    return 3 * 2 * tokens * hidden * columns


def flop_floor(rates: dict, multi: str, torch_name: str, flops: int, ceiling: float,
               target: float) -> dict:
    """The step at `ceiling` FLOP/s vs ours and PyTorch (median rates): ms, the share of the ceiling
    each reaches, and the share ours needs to run `target` times PyTorch's steps per second."""
    floor_ms = 1e3 * flops / ceiling
    ours_ms, torch_ms = (1e3 / statistics.median(rates[name]) for name in (multi, torch_name))
    return {"gflop_per_step": flops / 1e9, "ceiling_gflops": ceiling / 1e9, "floor_ms": floor_ms,
            "ours_ms": ours_ms, "torch_ms": torch_ms, "ours_share": floor_ms / ours_ms,
            "torch_share": floor_ms / torch_ms, "target": target,
            "share_for_target": floor_ms * target / torch_ms}  # fmt: skip


def recurrence_split(rates: dict, multi: str, torch_cell: str, target: float) -> dict:
    """ms per step of the whole step, the part without recurrence and their difference (medians),
    for ours (several steps per call) and PyTorch; and the recurrence ours would need to run
    `target` times PyTorch's steps per second."""
    ms = {name: 1e3 / statistics.median(r) for name, r in rates.items()}
    ours_total, ours_shared = ms[multi], ms[f"{multi}, no recurrence"]
    torch_total, torch_shared = ms[f"torch nn.{torch_cell}"], ms[f"torch nn.{torch_cell}, no recurrence"]
    return {"ours_ms": ours_total, "ours_shared_ms": ours_shared, "ours_recurrence_ms": ours_total - ours_shared,
            "torch_ms": torch_total, "torch_shared_ms": torch_shared,
            "torch_recurrence_ms": torch_total - torch_shared,
            "target": target, "ours_recurrence_ms_for_target": torch_total / target - ours_shared}  # fmt: skip


def _paired(mine, theirs) -> str:
    """median [min, max] of the per-round ratios mine / theirs ("-" without mine)."""
    if mine is None:
        return "-"
    paired = [a / b for a, b in zip(mine, theirs)]
    return f"{statistics.median(paired):.2f} [{min(paired):.2f}, {max(paired):.2f}]"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "gru_reset_after", "mut1"],
                        help="lstm, gru and gru_reset_after have framework contenders; other cells "
                             "(mut1) run ours only")
    parser.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=50, help="small, so that the recurrence dominates")
    parser.add_argument("--steps", type=int, default=10, help="train steps per contender per round")
    parser.add_argument("--steps-per-call", type=int, default=10,
                        help="also time ours running this many steps per jitted call, as the trainer "
                             "does (a divisor of --steps; 1 leaves it out)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="PyTorch's intra-op threads (0: its default); under `taskset -c 0` "
                             "give 1, as a search's worker pinned to one core runs")
    parser.add_argument("--torch-without-onednn", action="store_true",
                        help="also time PyTorch's nn.LSTM with oneDNN turned off: on the CPU its "
                             "fused LSTM runs oneDNN's RNN primitive (nn.GRU does not)")
    parser.add_argument("--parts", action="store_true",
                        help="also time ours and PyTorch without the recurrence (cells with a "
                             "framework contender; needs --steps-per-call > 1 and PyTorch)")
    parser.add_argument("--out", default="benchmarks/results/versus_frameworks")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None
    if torch is not None and args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.parts and (torch is None or args.steps_per_call == 1):
        parser.error("--parts compares ours, several steps per call, with PyTorch: it needs "
                     "--steps-per-call > 1 and PyTorch (the bench extra), without --no-torch")
    if args.torch_without_onednn:
        if torch is None or "lstm" not in args.cells:
            parser.error("--torch-without-onednn adds a PyTorch nn.LSTM contender: it needs --cells "
                         "lstm and PyTorch (the bench extra), without --no-torch")
        # torch warns on every switch about TF32 on Intel GPUs, which this is not
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    rng = np.random.default_rng(0)
    inputs_np = rng.integers(0, args.vocab, (args.batch, args.seq))
    targets_np = rng.integers(0, args.vocab, (args.batch, args.seq))
    lr = 0.1
    # XLA_FLAGS and PyTorch's version are in "machine", with the code's version
    results = {"machine": machine(), "batch": args.batch, "seq": args.seq, "vocab": args.vocab,
               "steps": args.steps, "rounds": args.rounds,
               "threads": {"torch": torch.get_num_threads() if torch else None}, "runs": {}}  # fmt: skip
    k = args.steps_per_call
    if args.steps % k:
        parser.error(f"--steps-per-call {k} does not divide --steps {args.steps}")
    multi = f"ours, {k} steps per call"
    lines = ["| cell | H | contender | steps/s min | median | max | ours / contender (paired, median [min, max]) "
             f"| {multi} / contender |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    inputs, targets = jnp.asarray(inputs_np), jnp.asarray(targets_np)
    for hidden in args.hidden:
        for cell in args.cells:
            key = jax.random.key(0)
            contenders = {"ours": ours(cell, hidden, args.vocab, key),
                          "ours, autodiff of lax.scan": ours_autodiff(cell, hidden, args.vocab, key)}
            if cell in FRAMEWORK_CELLS:
                contenders["flax nnx"] = flax_nnx(cell, hidden, args.vocab, key)
            if cell == "lstm":
                contenders["jax.numpy by hand"] = hand_lstm(hidden, args.vocab, key)
            runners = {}
            ours_params = jax.tree.map(jnp.copy, contenders["ours"][0])  # the steps below donate theirs
            for name, (params, loss) in contenders.items():
                step = _sgd_step(loss, lr)
                state = {"params": step(params, inputs, targets)[0]}  # compiles

                def run(step=step, state=state):
                    for _ in range(args.steps):
                        state["params"], loss_value = step(state["params"], inputs, targets)
                    loss_value.block_until_ready()

                run()
                runners[name] = run
            stacked = (jnp.stack([inputs] * k), jnp.stack([targets] * k))

            def several_per_call(params, loss):
                steps = _sgd_steps(loss, lr)
                state = {"params": steps(params, *stacked)[0]}  # compiles

                def run(steps=steps, state=state):
                    for _ in range(args.steps // k):
                        state["params"], losses = steps(state["params"], *stacked)
                    losses.block_until_ready()

                run()
                return run

            if k > 1:
                runners[multi] = several_per_call(ours_params, contenders["ours"][1])
            parts = args.parts and cell in FRAMEWORK_CELLS
            if parts:
                runners[f"{multi}, no recurrence"] = several_per_call(*ours_no_recurrence(GATES[cell], hidden, args.vocab, key))
            if torch is not None and cell in FRAMEWORK_CELLS:
                t_in, t_out = torch.from_numpy(inputs_np), torch.from_numpy(targets_np)
                for recurrence in (True, False) if parts else (True,):
                    torch_step = torch_model(cell, hidden, args.vocab, lr, recurrence)
                    torch_step(t_in, t_out)
                    name = f"torch nn.{FRAMEWORK_CELLS[cell]}" + ("" if recurrence else ", no recurrence")
                    runners[name] = lambda s=torch_step: [s(t_in, t_out) for _ in range(args.steps)]
                if args.torch_without_onednn and cell == "lstm":
                    torch_step = torch_model(cell, hidden, args.vocab, lr)

                    def without_onednn(s=torch_step):
                        with torch.backends.mkldnn.flags(enabled=False):
                            for _ in range(args.steps):
                                s(t_in, t_out)

                    without_onednn()
                    runners["torch nn.LSTM, oneDNN off"] = without_onednn
            torch_name = f"torch nn.{FRAMEWORK_CELLS[cell]}" if cell in FRAMEWORK_CELLS else None
            tokens = args.batch * args.seq
            floor = k > 1 and torch_name in runners and args.vocab > tokens
            timed = dict(runners)
            if floor:  # the readout's matmul, as many as the steps' worth of its FLOPs
                flops = step_flops(cell, hidden, args.vocab, tokens)
                matmul_flops = 2 * tokens * hidden * args.vocab
                count = max(1, round(args.steps * flops / matmul_flops))
                timed["readout matmul"] = _matmuls(tokens, hidden, args.vocab, count)
            rates = {name: [] for name in timed}
            for round_ in range(args.rounds):
                order = list(timed) if round_ % 2 == 0 else list(timed)[::-1]
                for name in order:
                    rates[name].append(args.steps / _timed(timed[name]))
            if floor:  # its entries are args.steps per run's seconds, like the contenders'
                runs_per_second = statistics.median(rates.pop("readout matmul")) / args.steps
                readout_rate = runs_per_second * count * matmul_flops
            run_key = f"{cell}/H{hidden}"
            results["runs"][run_key] = {name: summary(r) for name, r in rates.items()}
            for name, r in rates.items():
                s = summary(r)
                # ours run as the trainer runs it, against PyTorch's eager steps; the JAX contenders
                # could run several steps per call as well, so that ratio would not compare cells
                ratios = [_paired(rates["ours"], r) if name != "ours" else "-",
                          _paired(rates.get(multi), r) if name.startswith("torch") else "-"]
                lines.append(f"| {cell} | {hidden} | {name} | {s['min']:.2f} | {s['median']:.2f} | {s['max']:.2f} "
                             f"| {ratios[0]} | {ratios[1]} |")
            if parts:  # --parts requires PyTorch (checked above)
                results["runs"][run_key]["parts"] = split = recurrence_split(rates, multi, FRAMEWORK_CELLS[cell],
                                                                             TORCH_TARGET[cell])
                lines.append(f"| {cell} | {hidden} | recurrence alone, ms per step (the step minus its part "
                             f"without recurrence) | ours {split['ours_recurrence_ms']:.1f}, torch "
                             f"{split['torch_recurrence_ms']:.1f} | shared part: ours {split['ours_shared_ms']:.1f}, "
                             f"torch {split['torch_shared_ms']:.1f} ms | {split['target']}x torch needs ours' recurrence "
                             f"<= {split['ours_recurrence_ms_for_target']:.1f} ms | |")  # fmt: skip
            if floor:
                results["runs"][run_key]["floor"] = bound = flop_floor(rates, multi, torch_name, flops, readout_rate,
                                                                      TORCH_TARGET[cell])
                lines.append(f"| {cell} | {hidden} | FLOP floor: {bound['gflop_per_step']:.2f} GFLOP per step at "
                             f"{bound['ceiling_gflops']:.0f} GFLOP/s ({tokens}x{hidden} @ {hidden}x{args.vocab}) "
                             f"= {bound['floor_ms']:.1f} ms | {multi}: {bound['ours_ms']:.1f} ms, "
                             f"{100 * bound['ours_share']:.0f}% of it; torch: {bound['torch_ms']:.1f} ms, "
                             f"{100 * bound['torch_share']:.0f}% | {bound['target']}x torch needs ours at "
                             f"{100 * bound['share_for_target']:.0f}% | | | |")  # fmt: skip
            if cell == "lstm":
                # nominal: the cell's matmuls of an unfolded step (fwd + ~2x bwd), the same work for
                # every contender; done: what ours computes with the embedding folded (the h matmul
                # over T*B rows plus the (V, H) @ (H, 4H) table), so a share above 100% is possible
                # for the nominal count only
                nominal = 3 * 2 * tokens * (2 * hidden) * (4 * hidden)
                folds = args.vocab <= tokens  # tasks.model.RNNModel folds only then
                done = 3 * 2 * (tokens + args.vocab) * hidden * (4 * hidden) if folds else nominal
                ceiling = gemm_ceiling(args.batch, 2 * hidden, 4 * hidden)
                gemm = {"ceiling_gflops": ceiling / 1e9}
                shares = []
                for name in ("ours", multi):
                    if name in rates:
                        rate = statistics.median(rates[name])
                        share, share_done = nominal * rate / ceiling, done * rate / ceiling
                        gemm[name] = {"share_of_ceiling": share, "share_of_ceiling_flops_done": share_done}
                        shares.append(f"{name}: {100 * share:.0f}% of it (nominal FLOPs), "
                                      f"{100 * share_done:.0f}% (FLOPs done)")
                results["runs"][run_key]["gemm"] = gemm
                lines.append(f"| lstm | {hidden} | GEMM ceiling ({args.batch}x{2 * hidden} @ {2 * hidden}x{4 * hidden}) "
                             f"| {ceiling / 1e9:.1f} GFLOP/s | {'; '.join(shares)} | | | |")
            print("\n".join(lines[-len(rates) - (cell == "lstm") - parts - floor:]), flush=True)
    write(results, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
