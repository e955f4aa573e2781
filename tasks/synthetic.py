"""Generators of the paper's synthetic tasks: memorization, arithmetic and XML.

Each generator is a pure function of a `numpy.random.Generator` and its options, so a seed fixes the
data. Sequence-to-sequence tasks (memorize, arith) run in ONE recurrent network: it reads the prompt,
then emits the answer one character at a time, reading the true previous answer character as its
next input (teacher forcing, as in Zaremba & Sutskever 2014, "Learning to Execute"). Only the answer
positions are scored.
"""

from __future__ import annotations

import dataclasses
import re
import string
from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    """One batch of sequences, batch-major numpy arrays.

    inputs: (B, T) int32 token ids, or (B, T, 88) float32 frames.
    targets: same layout, the value to predict at each step.
    mask: (B, T) float32, 1 where the step is scored.
    aux_mask: (B, T) float32, a second scored subset for a secondary metric (XML closing tags).
    reset: whether the recurrent state starts from zero (False: it continues from the previous
      batch, as in truncated backpropagation through a long text).
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    aux_mask: np.ndarray
    reset: bool = True


# ---------------------------------------------------------------------------------- memorize
@dataclasses.dataclass(frozen=True)
class MemorizeOptions:
    """Read `symbols` symbols from an alphabet of `alphabet_size`, then reproduce them in order."""

    symbols: int = 5  # paper: 5
    alphabet_size: int = 26  # paper: 26

    @property
    def alphabet(self) -> str:
        return (string.ascii_lowercase + string.ascii_uppercase)[: self.alphabet_size] + "="

    @property
    def length(self) -> int:
        """Steps per sequence: k symbols, '=', then k - 1 teacher-forced answer symbols."""
        return 2 * self.symbols

    def validate(self) -> None:
        if not 1 <= self.alphabet_size <= 52:
            raise ValueError(f"alphabet_size must be in [1, 52], got {self.alphabet_size}")
        if self.symbols < 1:
            raise ValueError(f"symbols must be >= 1, got {self.symbols}")


def memorize_batch(rng: np.random.Generator, n: int, options: MemorizeOptions) -> Batch:
    """`n` sequences `s1..sk = s1..sk`: inputs s1..sk,=,s1..s(k-1); targets scored on s1..sk."""
    k = options.symbols
    symbols = rng.integers(0, options.alphabet_size, size=(n, k), dtype=np.int32)
    equals = np.full((n, 1), options.alphabet_size, np.int32)
    full = np.concatenate([symbols, equals, symbols], axis=1)
    mask = np.zeros((n, 2 * k), np.float32)
    mask[:, k:] = 1.0
    return Batch(full[:, :-1], full[:, 1:], mask, np.zeros_like(mask))


# ------------------------------------------------------------------------------------- arith
@dataclasses.dataclass(frozen=True)
class ArithOptions:
    """Addition/subtraction with distractors, answer emitted after `=`.

    The paper's example: `3e36d9-h1h39f94eeh43keg3c=` -> `-13991064`. What the paper does not say
    is an option here (paper.md 4.1); the defaults reproduce the example's look.
    """

    max_digits: int = 8  # paper: numbers of up to 8 digits
    min_digits: int = 1
    distractors: str = "abcdefghijk"  # the example's letters all lie in a-k
    distractor_p: float = 0.45  # per gap, k ~ Geometric: P(k) = (1-p) p^k; mean 0.82 per gap
    max_distractors: int | None = None  # cap per sequence; default 2 * max_digits
    subtract_p: float = 0.5  # probability of '-' (else '+')
    end_token: bool = True  # the answer ends with '.', so the model must also say when it stops

    @property
    def alphabet(self) -> str:
        return "0123456789+-=." + self.distractors

    @property
    def distractor_cap(self) -> int:
        return 2 * self.max_digits if self.max_distractors is None else self.max_distractors

    @property
    def length(self) -> int:
        prompt = 2 * self.max_digits + 2 + self.distractor_cap
        answer = self.max_digits + 1 + (1 if self.end_token else 0)
        return prompt + answer - 1

    def validate(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits <= 18:
            raise ValueError(
                f"need 1 <= min_digits <= max_digits <= 18, got {self.min_digits}, {self.max_digits}"
            )
        if set(self.distractors) & set("0123456789+-=."):
            raise ValueError("distractors must not contain digits or any of '+-=.'")
        if len(set(self.distractors)) != len(self.distractors):
            raise ValueError("distractors must not repeat a character")
        if not 0 <= self.distractor_p < 1:
            raise ValueError(f"distractor_p must be in [0, 1), got {self.distractor_p}")
        if not 0 <= self.subtract_p <= 1:
            raise ValueError(f"subtract_p must be in [0, 1], got {self.subtract_p}")
        if self.distractor_cap < 0:
            raise ValueError("max_distractors must be >= 0")


def arith_batch(rng: np.random.Generator, n: int, options: ArithOptions) -> Batch:
    """`n` sequences prompt + answer, such as '3e36d9-h1h39f94eeh43keg3c=' + '-13991064.'.

    Each number has a uniform number of digits in [min_digits, max_digits] (no leading zero), the
    operator is '-' with probability `subtract_p`, and k ~ Geometric distractors (P(k) = (1-p) p^k,
    uniform letters) follow each character of `a op b` before '='. A sequence with more than
    `distractor_cap` of them keeps a uniformly random `distractor_cap` (a multivariate
    hypergeometric draw). Every random draw is made for the whole batch at once: building examples
    one by one in Python cost 2.3 ms per batch of 32, four times an arith train step (version 1).

    Encoding: the input at step t is character t of prompt + answer and the target character t+1;
    the steps whose target lies in the answer are scored; padded with 0 to `length` steps.
    """
    digits = rng.integers(options.min_digits, options.max_digits + 1, size=(n, 2))
    low = np.where(digits == 1, 0, 10 ** (digits - 1))
    numbers = rng.integers(low, 10**digits)  # (n, 2) int64: up to 18 digits fit
    subtract = rng.random(n) < options.subtract_p
    a, b = numbers[:, 0], numbers[:, 1]
    answer_value = np.where(subtract, a - b, a + b)
    # the clean prompt `a op b =` as token ids, left-aligned in (n, 2 * max_digits + 2)
    len_a, len_b = _decimal_length(a), _decimal_length(b)
    width = 2 * options.max_digits + 2
    pos = np.arange(width)[None, :]
    clean = np.full((n, width), -1, np.int64)
    clean = np.where(pos < len_a[:, None], _digit_at(a, len_a, pos), clean)
    clean = np.where(pos == len_a[:, None], np.where(subtract, 11, 10)[:, None], clean)
    in_b = (pos > len_a[:, None]) & (pos <= (len_a + len_b)[:, None])
    clean = np.where(in_b, _digit_at(b, len_b, pos - len_a[:, None] - 1), clean)
    clean_len = len_a + len_b + 2
    clean = np.where(pos == clean_len[:, None] - 1, 12, clean)  # '='
    # distractors after each character of the clean prompt but '=', capped per sequence
    gaps = np.arange(width - 1)[None, :] < (clean_len - 1)[:, None]
    if options.distractors:
        counts = (rng.geometric(1 - options.distractor_p, size=(n, width - 1)) - 1) * gaps
    else:
        counts = np.zeros((n, width - 1), np.int64)
    for row in np.flatnonzero(counts.sum(1) > options.distractor_cap):
        counts[row] = rng.multivariate_hypergeometric(counts[row], options.distractor_cap)
    before = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(counts, 1)], 1)
    prompt_len = clean_len + counts.sum(1)
    # answer: sign, digits, end token
    magnitude = np.abs(answer_value)
    len_m = _decimal_length(magnitude)
    negative = (answer_value < 0).astype(np.int64)
    answer_len = negative + len_m + int(options.end_token)
    # the whole sequence: random distractor letters everywhere, then the prompt's characters and
    # the answer written over them at their positions, then 0 after the end
    total = options.length + 1
    first_distractor = 14  # after "0123456789+-=."
    sequence = first_distractor + rng.integers(0, max(len(options.distractors), 1), (n, total))
    rows = np.repeat(np.arange(n), width)
    where_clean = pos + before  # (n, width): where clean character j lands
    keep = (clean >= 0).ravel()
    sequence[rows[keep], where_clean.ravel()[keep]] = clean.ravel()[keep]
    k = np.arange(options.max_digits + 3)[None, :]
    answer = np.where(k < negative[:, None], 11, _digit_at(magnitude, len_m, k - negative[:, None]))
    answer = np.where(k == (negative + len_m)[:, None], 13, answer)  # '.'
    in_answer = k < answer_len[:, None]
    answer_rows = np.repeat(np.arange(n), k.shape[1]).reshape(n, -1)
    sequence[answer_rows[in_answer], (prompt_len[:, None] + k)[in_answer]] = answer[in_answer]
    steps = (prompt_len + answer_len - 1)[:, None]  # (prompt + answer) characters - 1
    t = np.arange(total - 1)[None, :]
    inputs = np.where(t < steps, sequence[:, :-1], 0).astype(np.int32)
    targets = np.where(t < steps, sequence[:, 1:], 0).astype(np.int32)
    mask = ((t >= prompt_len[:, None] - 1) & (t < steps)).astype(np.float32)
    return Batch(inputs, targets, mask, np.zeros_like(mask))


def _decimal_length(values: np.ndarray) -> np.ndarray:
    """Digits of each non-negative int64 (1 for 0)."""
    powers = 10 ** np.arange(1, 19, dtype=np.int64)
    return 1 + (values[:, None] >= powers[None, :]).sum(1)


def _digit_at(values: np.ndarray, lengths: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Digit `position` (0 = most significant) of each value; garbage where position is outside."""
    exponent = np.clip(lengths[:, None] - 1 - position, 0, 18)
    return (values[:, None] // 10**exponent) % 10


def arith_example(rng: np.random.Generator, options: ArithOptions) -> tuple[str, str]:
    """One (prompt, answer) pair such as ('3e36d9-h1h39f94eeh43keg3c=', '-13991064.'), decoded
    from a batch of one (for tests and for reading)."""
    batch = arith_batch(rng, 1, options)
    first = int(np.argmax(batch.mask[0]))  # the step whose input is '=' predicts the answer
    prompt = [options.alphabet[i] for i in batch.inputs[0, : first + 1]]
    scored = int(batch.mask[0].sum())
    answer = [options.alphabet[i] for i in batch.targets[0, first : first + scored]]
    return "".join(prompt), "".join(answer)


def solve_arith_prompt(prompt: str, options: ArithOptions) -> str:
    """The true answer of a prompt, by removing the distractors and evaluating (for tests)."""
    clean = "".join(ch for ch in prompt if ch not in options.distractors)
    match = re.fullmatch(r"(\d+)([+-])(\d+)=", clean)
    if match is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    left, op, right = int(match[1]), match[2], int(match[3])
    return str(left + right if op == "+" else left - right)


# --------------------------------------------------------------------------------------- xml
@dataclasses.dataclass(frozen=True)
class XmlOptions:
    """A stream of random nested tags such as `<ab><cde></cde></ab>`; predict the next character.

    Closing tags are the only predictable part beyond character statistics: to get them right the
    network must remember the stack of open tags. `closing_accuracy` scores exactly those characters.
    """

    name_min: int = 2  # tag name length, uniform in [name_min, name_max]
    name_max: int = 10
    p_open: float = 0.5  # at each step, open a new tag with this probability, else close the last
    max_depth: int = 5  # never more than this many open tags

    alphabet = string.ascii_lowercase + "<>/"

    def validate(self) -> None:
        if not 1 <= self.name_min <= self.name_max:
            raise ValueError(f"need 1 <= name_min <= name_max, got {self.name_min}, {self.name_max}")
        if not 0 < self.p_open < 1:
            raise ValueError(f"p_open must be in (0, 1), got {self.p_open}")
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")


def xml_stream(rng: np.random.Generator, n_chars: int, options: XmlOptions) -> tuple[str, np.ndarray]:
    """At least `n_chars` characters of documents, and a 0/1 array marking closing-tag characters.

    A document opens a root tag, then repeatedly opens a child (probability `p_open`, while fewer
    than `max_depth` are open) or closes the innermost open tag, until the root is closed. The
    marked characters are the name and `>` of each closing tag, which the open-tag stack determines.
    """
    # Random numbers are drawn in blocks, not one numpy call per tag (what made version 1 slow).
    opens = _in_blocks(lambda size: rng.random(size) < options.p_open)
    name_sizes = _in_blocks(lambda size: rng.integers(options.name_min, options.name_max + 1, size))
    letters = _in_blocks(lambda size: rng.integers(0, 26, size))
    text: list[str] = []
    closing: list[int] = []
    while len(text) < n_chars:
        stack: list[str] = []
        while True:
            if not stack or (len(stack) < options.max_depth and next(opens)):
                name = "".join(chr(97 + next(letters)) for _ in range(next(name_sizes)))
                stack.append(name)
                token = f"<{name}>"
                text.extend(token)
                closing.extend([0] * len(token))
            else:
                name = stack.pop()
                text.extend(f"</{name}>")
                closing.extend([0, 0] + [1] * (len(name) + 1))
                if not stack:
                    break
    return "".join(text), np.array(closing, np.float32)


def _in_blocks(draw, size: int = 512):
    """An endless iterator over `draw(size)`'s values, drawing the next block when one runs out."""
    while True:
        yield from draw(size).tolist()


def xml_batch(rng: np.random.Generator, n: int, length: int, options: XmlOptions) -> Batch:
    """`n` consecutive windows of `length` + 1 characters of one stream; every step is scored."""
    index = np.zeros(128, np.int32)
    index[[ord(ch) for ch in options.alphabet]] = np.arange(len(options.alphabet))
    text, closing = xml_stream(rng, n * length + 1, options)
    ids = index[np.frombuffer(text.encode("ascii"), np.uint8)]
    windows = np.lib.stride_tricks.sliding_window_view(ids, length + 1)[: n * length : length]
    aux = np.lib.stride_tricks.sliding_window_view(closing, length + 1)[: n * length : length]
    mask = np.ones((n, length), np.float32)
    return Batch(windows[:, :-1].copy(), windows[:, 1:].copy(), mask, aux[:, 1:].copy())
