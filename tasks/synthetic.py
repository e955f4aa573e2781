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


def encode_prompt_answer(
    pairs: list[tuple[str, str]], alphabet: str, length: int
) -> Batch:
    """Encodes (prompt, answer) strings as next-character prediction scored on the answer.

    The sequence is prompt + answer; the input at step t is character t, the target character t+1,
    and the steps whose target lies in the answer are scored. Sequences are padded to `length`.
    """
    index = {ch: i for i, ch in enumerate(alphabet)}
    n = len(pairs)
    inputs = np.zeros((n, length), np.int32)
    targets = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.float32)
    for row, (prompt, answer) in enumerate(pairs):
        ids = [index[ch] for ch in prompt + answer]
        steps = len(ids) - 1
        if steps > length:
            raise ValueError(f"sequence of {steps} steps does not fit length {length}")
        inputs[row, :steps] = ids[:-1]
        targets[row, :steps] = ids[1:]
        mask[row, len(prompt) - 1 : steps] = 1.0
    return Batch(inputs, targets, mask, np.zeros_like(mask))


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


def arith_example(rng: np.random.Generator, options: ArithOptions) -> tuple[str, str]:
    """One (prompt, answer) pair such as ('3e36d9-h1h39f94eeh43keg3c=', '-13991064.')."""
    numbers = []
    for _ in range(2):
        digits = int(rng.integers(options.min_digits, options.max_digits + 1))
        low = 0 if digits == 1 else 10 ** (digits - 1)
        numbers.append(int(rng.integers(low, 10**digits)))
    op = "-" if rng.random() < options.subtract_p else "+"
    a, b = numbers
    clean = f"{a}{op}{b}="
    gaps = len(clean) - 1  # between successive characters, before '=' included
    counts = rng.geometric(1 - options.distractor_p, size=gaps) - 1 if options.distractors else (
        np.zeros(gaps, int)
    )
    while counts.sum() > options.distractor_cap:
        counts[rng.choice(np.flatnonzero(counts))] -= 1
    parts = []
    for ch, k in zip(clean[:-1], counts):
        parts.append(ch)
        parts.extend(rng.choice(list(options.distractors), size=k))
    prompt = "".join(parts) + "="
    answer = str(a - b if op == "-" else a + b) + ("." if options.end_token else "")
    return prompt, answer


def arith_batch(rng: np.random.Generator, n: int, options: ArithOptions) -> Batch:
    pairs = [arith_example(rng, options) for _ in range(n)]
    return encode_prompt_answer(pairs, options.alphabet, options.length)


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
    text: list[str] = []
    closing: list[int] = []
    letters = np.array(list(string.ascii_lowercase))
    while len(text) < n_chars:
        stack: list[str] = []
        while True:
            if not stack or (len(stack) < options.max_depth and rng.random() < options.p_open):
                size = int(rng.integers(options.name_min, options.name_max + 1))
                name = "".join(rng.choice(letters, size=size))
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
