"""The hand-designed cells of Jozefowicz et al. (2015), written in the cell language.

`BASELINES` maps a name to the cell's text; `baseline(name)` parses it. Conventions:

* Paper notation for the LSTM: `i` is the tanh candidate and `j` the sigmoid input gate (flax and
  PyTorch call these `g` and `i`).
* The paper prints the LSTM output gate with tanh. Every other LSTM in the literature, the authors'
  own code (Zaremba et al. 2014) included, uses a sigmoid there, so `lstm` and its ablations use a
  sigmoid; the printed form is `lstm_paper_tanh_o`, so the choice can be tested.
* Each `W(...)` owns a bias, so `W(x) + W(h)` has two bias vectors where the paper writes one b.
  The function space is the same; the parameter count is H per `W` higher than the paper's.
* The GRU applies the reset gate before the recurrent matmul, as the paper prints it;
  `gru_reset_after` is the cuDNN/PyTorch/flax form.
* MUT1-3 read the raw input (`tanh(x)`, `x`) with no matrix: x is embedded to width H, so the
  terms are exact (paper.md, section 2.5). Their update gate multiplies the NEW candidate.
"""

from __future__ import annotations

import functools

from cells.graph import Graph
from cells.parse import parse

_LSTM_GATES = """\
i = tanh(W(x) + W(h))
j = sigmoid(W(x) + W(h))
f = sigmoid(W(x) + W(h))
o = sigmoid(W(x) + W(h))
"""

BASELINES: dict[str, str] = {
    "tanh": """\
# Elman RNN: h_t = tanh(W_xh x_t + W_hh h_{t-1} + b)
h_new = tanh(W(x) + W(h))
""",
    "lstm": f"""\
# LSTM (paper notation: i = candidate, j = input gate; sigmoid output gate)
{_LSTM_GATES}c_new = c * f + i * j
h_new = tanh(c_new) * o
""",
    "lstm_f": """\
# LSTM without forget gate (f = 1)
i = tanh(W(x) + W(h))
j = sigmoid(W(x) + W(h))
o = sigmoid(W(x) + W(h))
c_new = c + i * j
h_new = tanh(c_new) * o
""",
    "lstm_i": """\
# LSTM without input gate (j = 1)
i = tanh(W(x) + W(h))
f = sigmoid(W(x) + W(h))
o = sigmoid(W(x) + W(h))
c_new = c * f + i
h_new = tanh(c_new) * o
""",
    "lstm_o": """\
# LSTM without output gate (o = 1, so h_t = tanh(c_t))
i = tanh(W(x) + W(h))
j = sigmoid(W(x) + W(h))
f = sigmoid(W(x) + W(h))
c_new = c * f + i * j
h_new = tanh(c_new)
""",
    "lstm_b": """\
# LSTM with the forget-gate bias initialised to 1 (the paper's recommendation)
i = tanh(W(x) + W(h))
j = sigmoid(W(x) + W(h))
f = sigmoid(W(x) + W(h, bias=1))
o = sigmoid(W(x) + W(h))
c_new = c * f + i * j
h_new = tanh(c_new) * o
""",
    "lstm_paper_tanh_o": """\
# LSTM exactly as printed in the paper: output gate with tanh
i = tanh(W(x) + W(h))
j = sigmoid(W(x) + W(h))
f = sigmoid(W(x) + W(h))
o = tanh(W(x) + W(h))
c_new = c * f + i * j
h_new = tanh(c_new) * o
""",
    "gru": """\
# GRU as printed in the paper: reset applied to h BEFORE the recurrent matmul
r = sigmoid(W(x) + W(h))
z = sigmoid(W(x) + W(h))
cand = tanh(W(x) + W(r * h))
h_new = z * h + (1 - z) * cand
""",
    "gru_reset_after": """\
# GRU as cuDNN, PyTorch and flax compute it: reset applied AFTER the recurrent matmul
r = sigmoid(W(x) + W(h))
z = sigmoid(W(x) + W(h))
cand = tanh(W(x) + r * W(h))
h_new = (1 - z) * cand + z * h
""",
    "mut1": """\
# MUT1 (paper section 3): z multiplies the new candidate
z = sigmoid(W(x))
r = sigmoid(W(x) + W(h))
h_new = tanh(W(r * h) + tanh(x)) * z + h * (1 - z)
""",
    "mut2": """\
# MUT2: the reset gate reads the raw input
z = sigmoid(W(x) + W(h))
r = sigmoid(x + W(h))
h_new = tanh(W(r * h) + W(x)) * z + h * (1 - z)
""",
    "mut3": """\
# MUT3: the update gate reads tanh(h)
z = sigmoid(W(x) + W(tanh(h)))
r = sigmoid(W(x) + W(h))
h_new = tanh(W(r * h) + W(x)) * z + h * (1 - z)
""",
    "lstm_cifg": """\
# Coupled input-forget gate LSTM (Greff et al. 2017): input gate = 1 - forget gate
i = tanh(W(x) + W(h))
f = sigmoid(W(x) + W(h))
o = sigmoid(W(x) + W(h))
c_new = c * f + i * (1 - f)
h_new = tanh(c_new) * o
""",
    "mgu": """\
# Minimal gated unit (Zhou et al. 2016): one forget gate serves as reset and update
f = sigmoid(W(x) + W(h))
cand = tanh(W(x) + W(f * h))
h_new = (1 - f) * h + f * cand
""",
}

# The ten cells of the paper's Tables 1 and 2, in the paper's row order.
PAPER_CELLS = (
    "tanh", "lstm", "lstm_f", "lstm_i", "lstm_o", "lstm_b", "gru", "mut1", "mut2", "mut3",
)  # fmt: skip


@functools.cache
def baseline(name: str) -> Graph:
    """Returns the parsed baseline cell `name`.

    Raises:
      KeyError: `name` is not in `BASELINES` (the message lists the known names).
    """
    if name not in BASELINES:
        raise KeyError(f"unknown baseline cell '{name}' (known: {', '.join(BASELINES)})")
    return parse(BASELINES[name], source=name)


def describe(name: str) -> str:
    """The first comment line of a baseline's text, without the '#'."""
    first = BASELINES[name].splitlines()[0]
    return first.lstrip("# ").strip()
