import gzip
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    """Write a uint8 array as an IDX file (images rank 3, labels rank 1)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx_dataset(folder: Path, train: int = 5100, test: int = 200, seed: int = 0, compress: bool = True) -> Path:
    """A tiny IDX data set: images whose mean brightness encodes the label, so it is learnable."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 40, size=(count, 28, 28))
        images[:, labels[:, None] * 2 + 4, :] += 200  # a bright row whose position is the class
        write_idx(folder / f"{prefix}-images-idx3-ubyte", np.clip(images, 0, 255), compress=compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress=compress)
    return folder


@pytest.fixture
def idx_dir(tmp_path):
    return make_idx_dataset(tmp_path / "idx")
