"""The data files shipped with cellsearch, checked against `SHA256SUMS` before first use.

Files live in `tasks/data/` (override with the environment variable `CELLSEARCH_DATA`). Each file is
hashed once per process; a missing or altered file raises `DataError` with a one-line message that
names the file and the checksum it should have. Nothing here unpickles: the music sets are `.npz`
files read with `allow_pickle=False`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
from typing import NamedTuple

import numpy as np

PACKAGE_DATA = pathlib.Path(__file__).parent / "data"
MUSIC_SETS = ("jsb", "nottingham", "musedata", "piano")
SPLITS = ("train", "valid", "test")


class DataError(RuntimeError):
    """A data file is missing, altered or unreadable; the message is one line."""


def data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CELLSEARCH_DATA", PACKAGE_DATA))


@functools.cache
def expected_checksums(directory: pathlib.Path) -> dict[str, str]:
    sums = directory / "SHA256SUMS"
    if not sums.is_file():
        raise DataError(f"{sums}: missing (it lists the sha256 of every data file)")
    table = {}
    for number, line in enumerate(sums.read_text().splitlines(), 1):
        if line.strip():
            digest, _, name = line.partition("  ")
            if len(digest) != 64 or not name:
                raise DataError(f"{sums}: line {number} is not '<sha256>  <file name>'")
            table[name] = digest
    return table


@functools.cache
def _verified(directory: pathlib.Path, name: str) -> str:
    expected = expected_checksums(directory).get(name)
    path = directory / name
    if expected is None:
        raise DataError(f"{path}: not listed in {directory / 'SHA256SUMS'}")
    if not path.is_file():
        raise DataError(f"{path}: missing (expected sha256 {expected})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise DataError(f"{path}: checksum mismatch (expected sha256 {expected}, got {digest})")
    return digest


def verified_path(name: str) -> pathlib.Path:
    """Returns the path of data file `name` after checking its sha256 (once per process)."""
    directory = data_dir()
    _verified(directory, name)
    return directory / name


def checksum(name: str) -> str:
    """The verified sha256 of data file `name`, for the provenance of a trial."""
    return _verified(data_dir(), name)


# ----------------------------------------------------------------------------------------- PTB
class Corpus(NamedTuple):
    """A word-level corpus as token ids; `vocab[i]` is the word of id i."""

    vocab: tuple[str, ...]
    splits: dict[str, np.ndarray]  # split -> int32 ids, `<eos>` at each line end


@functools.cache
def load_ptb() -> Corpus:
    """Penn Treebank (Mikolov split): `<eos>` per line, vocabulary from train (10,000 words)."""
    words = {split: _read_words(verified_path(f"ptb.{split}.txt")) for split in SPLITS}
    vocab = tuple(sorted(set(words["train"])))
    index = {word: i for i, word in enumerate(vocab)}
    splits = {}
    for split, tokens in words.items():
        unknown = set(tokens) - index.keys()
        if unknown:
            raise DataError(f"ptb.{split}.txt: words missing from the train vocabulary: {sorted(unknown)[:5]}")
        splits[split] = np.array([index[w] for w in tokens], np.int32)
    return Corpus(vocab, splits)


def _read_words(path: pathlib.Path) -> list[str]:
    tokens = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens.extend(line.split())
        tokens.append("<eos>")
    return tokens


# --------------------------------------------------------------------------------------- music
@functools.cache
def load_music(name: str) -> dict[str, list[np.ndarray]]:
    """Piano rolls of one music set: split -> list of (frames, 88) float32 0/1 arrays."""
    if name not in MUSIC_SETS:
        raise DataError(f"unknown music set '{name}' (known: {', '.join(MUSIC_SETS)})")
    path = verified_path(f"{name}.npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            out = {}
            for split in SPLITS:
                rolls = np.unpackbits(archive[f"{split}_rolls"], axis=1, count=88)
                lengths = archive[f"{split}_lengths"]
                out[split] = np.split(rolls.astype(np.float32), np.cumsum(lengths)[:-1])
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"{path}: unreadable ({error})") from None
    return out
