"""Converts the Boulanger-Lewandowski piano rolls from MATLAB files to pickle-free .npz files.

    python scripts/convert_music.py ../shared/data/music tasks/data

Each output holds, for split in train/valid/test, `{split}_rolls`: every frame of every sequence
concatenated, bit-packed along the 88 keys (uint8, 11 bytes a frame), and `{split}_lengths`: the
frames of each sequence. `np.load(path, allow_pickle=False)` reads it; `np.unpackbits(...,
axis=1, count=88)` restores the 0/1 piano roll (column j = MIDI note 21 + j). Needs scipy.
"""

import pathlib
import sys

import numpy as np
import scipy.io

SETS = {  # output name -> MATLAB file of the shared data
    "jsb": "JSB_Chorales.mat",
    "nottingham": "Nottingham.mat",
    "musedata": "MuseData.mat",
    "piano": "Piano_midi.mat",
}


def convert(mat_path: pathlib.Path, out_path: pathlib.Path) -> None:
    mat = scipy.io.loadmat(mat_path)
    arrays = {}
    for split in ("train", "valid", "test"):
        sequences = [np.asarray(s, np.uint8) for s in mat[f"{split}data"][0]]
        assert all(s.ndim == 2 and s.shape[1] == 88 and s.max() <= 1 for s in sequences)
        arrays[f"{split}_rolls"] = np.packbits(np.concatenate(sequences), axis=1)
        arrays[f"{split}_lengths"] = np.array([len(s) for s in sequences], np.int32)
    # a fixed archive (no timestamps) so the checksum is reproducible
    with open(out_path, "wb") as f:
        np.savez_compressed(f, **arrays)


def main(source: str, target: str) -> None:
    for name, mat in SETS.items():
        out = pathlib.Path(target) / f"{name}.npz"
        convert(pathlib.Path(source) / mat, out)
        print(f"{out}: {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:3])
