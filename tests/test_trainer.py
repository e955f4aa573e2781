"""The trainer: real (tiny) training runs, compile reuse, divergence and error as results."""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cells import baseline, compile_cell
from tasks import TASKS, Budget, HParams, TrialSpec, sample_settings, train_settings, train_trial
import tasks.model
from tasks.model import RNNModel, argmax_hits, softmax_cross_entropy, zero_carry
from tasks.registry import STATS
from tasks.trainer import _eval_totals, clip_by_global_norm, compiler_options, global_norm, program

TINY = {"steps": 60, "hidden": 16, "batch": 8, "steps_per_call": 10, "eval_sequences": 16}


@pytest.mark.parametrize("task", list(TASKS))
def test_lstm_loss_decreases_on_every_task(task):
    budget = TINY | ({"seq_len": 20} if task not in ("memorize", "arith") else {})
    if task == "memorize":  # nothing but memory beats log(26): give it enough steps to start
        budget |= {"steps": 300, "hidden": 32, "batch": 32, "steps_per_call": 50}
    lr = 1.0 if task == "memorize" else 0.5
    spec = TrialSpec.from_preset("lstm", task, "quick", HParams(lr=lr, clip=5.0), 0, budget)
    result = train_trial(spec)
    assert result.status == "ok", result.error
    curve = [loss for _, loss in result.loss_curve]
    assert len(curve) == 6 and result.steps_done == budget["steps"]
    assert curve[-1] < 0.95 * curve[0], curve
    assert result.score is not None and 0 < result.score <= 1
    assert set(result.valid) == set(result.test) and math.isfinite(result.valid["nll"])


def test_lstm_learns_memorize_within_the_stated_budget():
    # calibrated: 0.87 per-symbol accuracy (0.50 of whole sequences) at seed 0; seeds 0-2 gave
    # 0.81-0.93 (0.32-0.72) over two float32 implementations with equal gradients (chance: 1/alphabet)
    spec = TrialSpec.from_preset("lstm", "memorize", "quick", HParams(lr=1.0, clip=5.0, init_scale=1.0),
                                 seed=0, budget_overrides={"steps": 2000, "hidden": 32})  # fmt: skip
    result = train_trial(spec)
    assert result.status == "ok"
    assert result.valid["accuracy"] >= 0.8
    assert result.valid["sequence_accuracy"] >= 0.3


@pytest.mark.parametrize("task_name", ["arith", "xml", "ptb", "jsb"])
def test_evaluation_statistics_equal_a_batch_major_numpy_reference(task_name):
    # The jitted evaluation works time-major, in groups of steps_per_call with a padded last
    # batch and unscored fillers; the reference runs the model batch by batch and counts in numpy,
    # batch-major, so any mix-up of time and batch axes shows (each task uses other statistics).
    spec = TrialSpec.from_preset("lstm", task_name, "quick", budget_overrides=TINY | {
        "seq_len": 20, "steps_per_call": 2, "eval_sequences": 20})  # fmt: skip
    task, budget = spec.make_task(), spec.budget
    seq_len = task.sequence_length(budget.seq_len)
    prog = program(spec.graph(), task, 1, budget.hidden, budget.batch, seq_len, 2)
    params = prog.init(jax.random.key(3), np.float32(1.0))
    got = _eval_totals(prog, task, params, budget, seq_len, "valid")

    model = RNNModel(compile_cell(spec.graph()), n_inputs=task.n_inputs, n_outputs=task.n_outputs,
                     tokens=task.tokens, layers=1, hidden=budget.hidden, init_scale=1.0,
                     rngs=nnx.Rngs(params=0))  # fmt: skip
    nnx.update(model, params)
    totals = dict.fromkeys(STATS, 0.0)
    carry = None
    for batch in task.eval_batches("valid", budget.batch, seq_len, budget.eval_sequences):
        if batch.reset or carry is None:
            carry = zero_carry(1, batch.mask.shape[0], budget.hidden)
        carry, logits = model(carry, jnp.asarray(batch.inputs), None, jax.random.key(0))
        logits = np.asarray(logits, np.float64).transpose(1, 0, 2)  # (B, T, outputs)
        mask = batch.mask
        if task.tokens:
            log_norm = np.log(np.exp(logits).sum(-1))
            nll = log_norm - np.take_along_axis(logits, batch.targets[..., None], -1)[..., 0]
            hit = logits.argmax(-1) == batch.targets
            scored = mask.sum(1) > 0
            totals["correct"] += (hit * mask).sum()
            totals["aux_correct"] += (hit * batch.aux_mask).sum()
            totals["aux_count"] += batch.aux_mask.sum()
            totals["seq_exact"] += (((hit * mask).sum(1) == mask.sum(1)) & scored).sum()
            totals["seqs"] += scored.sum()
        else:
            nll = (np.logaddexp(0, logits) - logits * batch.targets).sum(-1)  # BCE over the keys
        totals["nll"] += (nll * mask).sum()
        totals["count"] += mask.sum()
    for name in STATS:
        assert float(got[name]) == pytest.approx(totals[name], rel=1e-4, abs=1e-6), name
    assert totals["count"] > 0 and (not task.tokens or 0 < totals["seqs"] < totals["count"])


def test_no_recompilation_across_hyperparameter_settings():
    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    settings = sample_settings(("gru", "arith", 0), 5, grid={"lr": (0.1, 0.5, 1.0, 2.0, 5.0),
                               "clip": (1.0, 5.0), "init_scale": (0.7, 1.4, 2.8)})  # fmt: skip
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        results = []
        for hp in settings:
            spec = TrialSpec.from_preset("gru", "arith", "quick", hp._replace(dropout=0.1), 1,
                                         TINY | {"steps": 20})  # fmt: skip
            compiles_before = len(compiles)
            results.append(train_trial(spec))
            if len(results) > 1:
                assert len(compiles) == compiles_before, f"recompiled for {hp}"
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert results[0].compile_seconds > 0 and all(r.compile_seconds == 0 for r in results[1:])
    assert len({r.score for r in results}) > 1  # the settings really differed
    phases = spec.program(spec.make_task()).compile_phases  # the program all five trials shared
    assert set(phases) == {"train", "eval"}
    for function in phases.values():
        assert set(function) == {"trace", "lower", "compile"} and all(s > 0 for s in function.values())
    total = sum(sum(function.values()) for function in phases.values())
    assert total == pytest.approx(results[0].compile_seconds, abs=1e-3)


def test_nan_producing_setting_is_recorded_as_diverged():
    relu_rnn = "h_new = relu(W(x) + W(h))"
    spec = TrialSpec.from_preset(relu_rnn, "arith", "quick", HParams(lr=1e4, clip=1e4, init_scale=2.8),
                                 budget_overrides=TINY)  # fmt: skip
    result = train_trial(spec)
    assert result.status == "diverged"
    assert result.steps_done < 60 and result.score is None and result.error is None
    row = result.row()
    json.dumps(row, allow_nan=False)  # no NaN reaches a stored row
    assert row["status"] == "diverged" and row["cell_text"] == relu_rnn + "\n"


def test_settings_trained_as_one_vmapped_program_equal_separate_trials():
    relu_rnn = "h_new = relu(W(x) + W(h))"
    # lr 0.05 and 0.02: from lr 0.1 on, this ReLU RNN's training is chaotic and amplifies the
    # vmapped program's other float rounding (1e-7 after 10 steps) to 1e-4..1e-3 by step 60
    settings = [HParams(lr=0.05, clip=5.0, init_scale=1.0), HParams(lr=0.02, clip=1.0, init_scale=2.0),
                HParams(lr=1e4, clip=1e4, init_scale=2.8)]  # the last one diverges
    specs = [TrialSpec.from_preset(relu_rnn, "arith", "quick", hp, seed, TINY)
             for seed, hp in enumerate(settings)]  # fmt: skip
    together = train_settings(specs)
    for lane, alone in zip(together, map(train_trial, specs)):
        assert (lane.status, lane.steps_done) == (alone.status, alone.steps_done)
        if alone.status == "ok":
            assert lane.train_loss == pytest.approx(alone.train_loss, rel=1e-5)
            assert lane.valid["nll"] == pytest.approx(alone.valid["nll"], rel=1e-5)
        assert lane.row()["vmapped_settings"] == 3
    assert [r.status for r in together] == ["ok", "ok", "diverged"]
    mixed = train_settings([specs[0], TrialSpec.from_preset("lstm", "arith", "quick", budget_overrides=TINY)])
    assert {r.status for r in mixed} == {"error"} and "differ in cell" in mixed[0].error


def test_a_failing_trial_is_an_error_row_not_an_exception(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLSEARCH_DATA", str(tmp_path))  # no data files there
    result = train_trial(TrialSpec.from_preset("lstm", "piano", "quick", budget_overrides=TINY))
    assert result.status == "error"
    assert "SHA256SUMS: missing" in result.error and result.score is None


def test_a_cell_that_raises_inside_the_compiled_step_is_an_error_row(monkeypatch):
    from cells import compile as cell_compile

    def fail(value):
        raise FloatingPointError("the op failed while the compiled step ran")

    @jax.custom_jvp
    def exploding_identity(a):  # runs inside the jitted train step, then raises
        return jax.pure_callback(fail, jax.ShapeDtypeStruct(a.shape, a.dtype), a)

    exploding_identity.defjvp(lambda primals, tangents: (exploding_identity(*primals), tangents[0]))
    monkeypatch.setitem(cell_compile._UNARY, "identity", exploding_identity)
    cell = "h_new = identity(tanh(W(x) + W(h) + h))"  # used by no other test: a fresh program
    result = train_trial(TrialSpec.from_preset(cell, "arith", "quick", budget_overrides=TINY))
    assert result.status == "error" and result.score is None
    row = result.row()
    assert "JaxRuntimeError" in row["error"]  # raised by the compiled program, not while tracing
    assert "the op failed while the compiled step ran" in row["traceback"]
    json.dumps(row, allow_nan=False)


def test_row_records_what_reproduces_the_trial():
    spec = TrialSpec.from_preset("mut1", "xml", "quick", HParams(lr=0.3, clip=2.5, layers=2), 7,
                                 TINY | {"seq_len": 20})  # fmt: skip
    row = train_trial(spec).row()
    json.dumps(row, allow_nan=False)
    assert row["cell"] == "mut1" and row["cell_text"].startswith("z = sigmoid(W(x))")
    assert (row["task"], row["seed"], row["lr"], row["clip"], row["layers"]) == ("xml", 7, 0.3, 2.5, 2)
    assert row["task_options"] == {"name_max": 4} and row["budget_hidden"] == 16
    assert row["data_checksum"].startswith("synthetic:xml:v2:")
    assert row["code_version"] and row["versions"]["jax"] == jax.__version__
    assert row["xla_flags"] == os.environ.get("XLA_FLAGS", "") and row["matmul_precision"] == "default"
    assert row["sequence_length"] == 20 and row["steps_per_second"] > 0
    assert row["cpu_threads"] == len(os.sched_getaffinity(0))  # the numbers depend on it on a CPU
    model_name = next(line for line in open("/proc/cpuinfo") if line.startswith("model name"))
    assert row["cpu_model"].startswith(model_name.split(":", 1)[1].strip() + " (family ")  # the CPU
    assert TrialSpec.from_row(row) == spec  # what `cellsearch rerun` trains again
    mutant = TrialSpec.from_preset("h_new = tanh(W(x) + W(h))", "arith", "quick", seed=3,
                                   budget_overrides=TINY, task_options={"max_digits": 2})  # fmt: skip
    again = TrialSpec.from_row(train_trial(mutant).row())  # the row keeps the canonical text
    assert again.graph().hash == mutant.graph().hash and dataclasses.replace(again, cell=mutant.cell) == mutant


def test_ptb_row_records_the_data_checksum():
    row = train_trial(TrialSpec.from_preset("tanh", "ptb", "quick", budget_overrides=TINY | {"eval_sequences": 2})).row()
    assert row["status"] == "ok" and row["data_checksum"].startswith("sha256:")
    assert row["valid_perplexity"] == pytest.approx(math.exp(row["valid_nll"]))


def test_sample_settings_never_repeats_and_continues():
    first = sample_settings(("lstm", "arith", 0), 20)
    more = sample_settings(("lstm", "arith", 0), 20, start=20)
    assert first == sample_settings(("lstm", "arith", 0), 20)
    assert len(set(first + more)) == 40
    assert first != sample_settings(("gru", "arith", 0), 20)
    everything = sample_settings(("x",), 10_000)
    assert len(everything) == len(set(everything)) == 6 * 7 * 5 * 4
    with pytest.raises(ValueError, match="the grid of 'lr' is empty"):
        sample_settings(("x",), 1, grid={"lr": ()})


@pytest.mark.parametrize(
    "spec, message",
    [
        (TrialSpec.from_preset("lsmt", "arith"), "'lsmt' is neither a baseline cell (tanh, lstm"),
        (TrialSpec.from_preset("lstm", "arith", seed="3"), "seed must be int, got str '3'"),
        (TrialSpec.from_preset("lstm", "arith", budget_overrides={"batch": 8.0}),
         "batch must be int, got float 8.0"),
    ],
)
def test_a_bad_trial_spec_is_refused_by_name(spec, message):
    with pytest.raises(ValueError) as caught:
        spec.validate()
    assert message in str(caught.value)
    result = train_trial(spec)  # the trainer's entry point records it instead of raising
    assert result.status == "error" and message in result.error


def test_zaremba_learning_rate_schedule():
    budget = Budget(steps=100, hidden=1, batch=1, lr_decay=0.5, lr_decay_start=40, lr_decay_every=20)
    assert [budget.lr_at(1.0, s) for s in (0, 39, 40, 59, 60, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.125]


@pytest.mark.parametrize("shape", [(5, 3, 7), (2, 10000), (4,)])
def test_softmax_cross_entropy_equals_optax_in_value_and_gradient(shape):
    # Our loss replaces optax's to spare XLA a scatter kernel in the gradient; the two must agree.
    logits = jax.random.normal(jax.random.key(0), (*shape[:-1], shape[-1])) * 3.0
    targets = jax.random.randint(jax.random.key(1), shape[:-1], 0, shape[-1])
    weights = jax.random.uniform(jax.random.key(2), shape[:-1])  # a non-uniform cotangent

    def total(loss):
        return lambda z: (loss(z, targets) * weights).sum()

    ours, theirs = softmax_cross_entropy, optax.softmax_cross_entropy_with_integer_labels
    np.testing.assert_allclose(ours(logits, targets), theirs(logits, targets), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.grad(total(ours))(logits), jax.grad(total(theirs))(logits),
                               rtol=1e-5, atol=1e-7)  # fmt: skip


@pytest.mark.parametrize("bias_in_matmul", [True, False], ids=["bias_in_matmul", "bias_after"])
def test_readout_is_hidden_state_times_kernel_plus_bias_with_plain_gradients(bias_in_matmul, monkeypatch):
    # On a CPU the readout adds its bias inside its matmul (the kernel's last row against a column
    # of ones), elsewhere after it; both must compute hs @ kernel + bias and give both their plain
    # gradients. With an identity kernel and no bias the logits ARE the hidden states, which gives
    # the reference.
    monkeypatch.setattr(tasks.model, "bias_in_readout_matmul", lambda: bias_in_matmul)
    hidden, steps, batch = 8, 5, 3
    inputs = jax.random.randint(jax.random.key(2), (batch, steps), 0, 11)
    weights = jax.random.normal(jax.random.key(3), (steps, batch, hidden))  # a cotangent

    def run(kernel, bias):
        model = RNNModel(compile_cell(baseline("lstm")), n_inputs=11, n_outputs=hidden, tokens=True,
                         layers=1, hidden=hidden, init_scale=1.0, rngs=nnx.Rngs(params=0))  # fmt: skip
        model.readout.kernel[...], model.readout.bias[...] = kernel, bias
        graphdef, params = nnx.split(model)

        def objective(params):
            _, logits = nnx.merge(graphdef, params)(zero_carry(1, batch, hidden), inputs, None,
                                                    jax.random.key(0))  # fmt: skip
            return (logits * weights).sum(), logits

        (_, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return logits, grads["readout"]["kernel"][...], grads["readout"]["bias"][...]

    hs, _, _ = run(jnp.eye(hidden), jnp.zeros(hidden))
    kernel = jax.random.normal(jax.random.key(4), (hidden, hidden))
    bias = jax.random.normal(jax.random.key(5), (hidden,))
    logits, g_kernel, g_bias = run(kernel, bias)
    np.testing.assert_allclose(logits, hs @ kernel + bias, rtol=1e-5, atol=1e-6)
    flat_hs, flat_weights = hs.reshape(-1, hidden), weights.reshape(-1, hidden)
    np.testing.assert_allclose(g_kernel, flat_hs.T @ flat_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_bias, flat_weights.sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_argmax_hits_equals_argmax_with_ties_nan_and_infinities(seed):
    # Evaluation counts hits with two max reductions instead of XLA's slow CPU argmax; they must
    # agree exactly, ties (argmax takes the first) and NaN (argmax takes the first NaN) included.
    keys = jax.random.split(jax.random.key(seed), 4)
    logits = jnp.round(jax.random.normal(keys[0], (6, 40, 9)))  # few distinct values: many ties
    special = jax.random.uniform(keys[1], logits.shape)
    logits = jnp.where(special < 0.03, jnp.nan, logits)
    logits = jnp.where((special > 0.97) & (special < 0.985), jnp.inf, logits)
    logits = jnp.where(special >= 0.985, -jnp.inf, logits)
    logits = logits.at[0, 0].set(-jnp.inf).at[0, 1].set(jnp.inf).at[0, 2].set(jnp.nan)  # whole rows
    targets = jax.random.randint(keys[2], logits.shape[:-1], 0, logits.shape[-1])
    # half the targets are argmax's own choice, so that hits and their tie-breaking are exercised
    targets = jnp.where(jax.random.uniform(keys[3], targets.shape) < 0.5, jnp.argmax(logits, -1), targets)
    expected = np.asarray(jnp.argmax(logits, -1) == targets)
    assert 0.3 < expected.mean() < 0.9  # both outcomes well represented
    np.testing.assert_array_equal(np.asarray(jax.jit(argmax_hits)(logits, targets)), expected)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # clipping, and not
def test_clip_by_global_norm_equals_optax(max_norm):
    # Small leaves are summed together, large ones alone (tasks.trainer._SMALL_LEAF): both kinds.
    keys = jax.random.split(jax.random.key(0), 4)
    grads = {"big": jax.random.normal(keys[0], (80, 64)), "bias": jax.random.normal(keys[1], (64,)),
             "kernel": jax.random.normal(keys[2], (16, 64)), "scalar": jax.random.normal(keys[3], ())}  # fmt: skip
    assert global_norm(grads) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-6)
    ours, _ = clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
    theirs, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
    for name in grads:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7)
    assert (float(optax.tree.norm(ours)) < 1.0) == (max_norm == 0.5)


def test_train_programs_below_h128_and_all_eval_programs_compile_at_llvm_o1_on_a_cpu():
    o1 = {"xla_backend_optimization_level": 1}
    assert [compiler_options(name, h) for name, h in [("train", 32), ("train_k", 64), ("train", 127)]] == [o1] * 3
    assert compiler_options("train", 128) is None and compiler_options("train_k", 200) is None
    assert compiler_options("eval", 512) == compiler_options("eval_k", 32) == o1
