"""The config object and the data sets: validation messages, the study's splits, the search order,
the MNIST fallback and every data error."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import make_idx_dataset, write_idx
from stn_cli import data
from stn_cli.config import RunConfig
from stn_cli.errors import ConfigError, DataError

# --- config -----------------------------------------------------------------------------------------


def test_defaults_are_the_study_protocol():
    c = RunConfig()
    assert (c.hidden, c.batch_size, c.steps_per_epoch, c.epochs, c.lr, c.eval_every) == (100, 50, 1000, 20, 0.1, 100)
    assert (c.stochastic_train, c.stochastic_eval) == (True, False)
    assert RunConfig(neuron="onehot", dims=7).units == 700


@pytest.mark.parametrize(
    "values, message",
    [
        ({"neuron": "relu"}, "unknown neuron 'relu'; choose one of: tanh, sigmoid, binary"),
        ({"hidden": 0}, "hidden must be >= 1, got 0"),
        ({"dims": 1}, "dims must be >= 2"),
        ({"levels": 1}, "levels must be >= 2"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"hidden": True}, "field 'hidden' must be int"),
        ({"lr": "fast"}, "field 'lr' must be int or float"),
        ({"colour": 1}, "unknown field 'colour'"),
        ({"neuron": "tanh", "anneal": 1.1}, "has no slope to anneal"),
        ({"neuron": "binary", "anneal": 1.1, "anneal_rate": 0.1}, "choose one annealing schedule"),
        ({"neuron": "onehot", "estimator": "reinmax", "anneal": 1.2}, "needs temperature >= 1 throughout"),
        ({"neuron": "onehot", "estimator": "magic"}, "unknown estimator 'magic'"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
    ],
)
def test_bad_values_name_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_mapping(values, "here")


def test_annealing_schedules():
    per_epoch = RunConfig(neuron="binary", anneal=1.1, steps_per_epoch=10)
    assert [per_epoch.slope_at(s) for s in (0, 9, 10, 25)] == pytest.approx([1, 1, 1.1, 1.21])
    per_step = RunConfig(neuron="onehot", anneal_rate=0.01, min_temperature=0.5)
    assert 1 / per_step.slope_at(0) == pytest.approx(1.0)
    assert 1 / per_step.slope_at(50) == pytest.approx(np.exp(-0.5))
    assert 1 / per_step.slope_at(10_000) == pytest.approx(0.5)


def test_fingerprint_changes_with_any_field_but_not_with_equal_values():
    assert RunConfig().fingerprint() == RunConfig.from_mapping({"lr": 0.1}).fingerprint()
    assert RunConfig().fingerprint() != RunConfig(seed=1).fingerprint()


# --- IDX parsing and splits -------------------------------------------------------------------------


def test_idx_files_parse_scale_and_split(tmp_path):
    folder = make_idx_dataset(tmp_path / "d", train=5100, test=30, compress=False)
    ds = data.load("mnist", folder)
    assert ds.sizes() == {"train": 100, "validation": 5000, "test": 30}
    assert ds.train.images.dtype == np.float32 and ds.train.images.shape == (100, 784)
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0
    raw = data.read_idx(folder / "train-images-idx3-ubyte")
    np.testing.assert_allclose(ds.validation.images[3], raw[3].reshape(-1) / 255, rtol=1e-6)  # first 5,000 validate
    np.testing.assert_allclose(ds.train.images[0], raw[5000].reshape(-1) / 255, rtol=1e-6)
    assert ds.train.labels.dtype == np.int32


def test_subfolder_named_after_the_dataset_is_found(tmp_path):
    make_idx_dataset(tmp_path / "fashion-mnist")
    assert data.load("fashion-mnist", tmp_path).source == str(tmp_path / "fashion-mnist")


def test_small_split_is_stratified(tmp_path):
    folder = make_idx_dataset(tmp_path / "d", train=1000, test=10)
    ds = data.load("mnist-5k", folder)
    assert ds.sizes() == {"train": 700, "validation": 100, "test": 200}
    for split in (ds.train, ds.validation, ds.test):
        assert np.all(np.bincount(split.labels, minlength=10) == len(split) // 10)


def test_real_mnist_5k_subset():
    ds = data.load("mnist-5k")
    assert ds.sizes() == {"train": 3500, "validation": 500, "test": 1000}
    assert np.all(np.bincount(ds.validation.labels) == 50)
    assert 0.1 < ds.train.images.mean() < 0.2  # MNIST's mean brightness is about 0.13


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_sizes(monkeypatch):
    monkeypatch.delenv("STN_DATA_DIR", raising=False)
    ds = data.load("fashion-mnist")
    assert ds.source == str(data.DEBIAN_FASHION_MNIST)
    assert ds.sizes() == {"train": 55000, "validation": 5000, "test": 10000}


def test_environment_folder_comes_before_the_package(tmp_path, monkeypatch):
    make_idx_dataset(tmp_path / "env")
    monkeypatch.setenv("STN_DATA_DIR", str(tmp_path / "env"))
    assert data.load("fashion-mnist").source == str(tmp_path / "env")


def test_mnist_falls_back_to_the_5k_subset_with_a_warning(monkeypatch):
    monkeypatch.delenv("STN_DATA_DIR", raising=False)

    def offline(name):
        raise Exception("URL fetch failure on https://example.invalid/mnist.npz: None -- no network")

    monkeypatch.setattr(data, "_keras_download", offline)
    with pytest.warns(data.DataWarning, match="full MNIST is neither cached nor downloadable .*using mnist-5k"):
        ds = data.load("mnist")
    assert ds.name == "mnist-5k"


def test_mnist_uses_keras_loader_when_available(monkeypatch):
    monkeypatch.delenv("STN_DATA_DIR", raising=False)
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (6000, 28, 28), dtype=np.uint8), np.arange(6000, dtype=np.uint8) % 10)
    test = (rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), np.arange(100, dtype=np.uint8) % 10)
    monkeypatch.setattr(data, "_keras_download", lambda name: (train, test))
    ds = data.load("mnist")
    assert ds.name == "mnist" and ds.sizes() == {"train": 1000, "validation": 5000, "test": 100}


def test_fashion_without_any_source_is_an_error(monkeypatch, tmp_path):
    monkeypatch.delenv("STN_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setattr(data, "_keras_download", lambda name: (_ for _ in ()).throw(Exception("offline")))
    with pytest.raises(DataError, match="fashion-mnist: not found .* download failed \\(offline\\)"):
        data.load("fashion-mnist")


def _corrupt(folder: Path, how: str) -> Path:
    target = folder / "train-labels-idx1-ubyte.gz"
    if how == "magic":
        target.write_bytes(gzip.compress(b"\x00\x00\x09\x99" + b"\x00" * 20))
    elif how == "truncated":
        raw = gzip.decompress(target.read_bytes())
        target.write_bytes(gzip.compress(raw[:-7]))
    elif how == "gzip":
        target.write_bytes(target.read_bytes()[:40])
    elif how == "count":
        write_idx(folder / "train-labels-idx1-ubyte", np.zeros(17))
    return target


@pytest.mark.parametrize(
    "how, message",
    [
        ("magic", "bad IDX magic number"),
        ("truncated", "wrong length"),
        ("gzip", "cannot read"),
        ("count", "5100 images but 17 labels"),
    ],
)
def test_corrupt_files_give_one_line_errors_naming_the_file(idx_dir, how, message):
    _corrupt(idx_dir, how)
    with pytest.raises(DataError, match=message) as error:
        data.load("mnist", idx_dir)
    assert "train-labels-idx1-ubyte" in str(error.value) and "\n" not in str(error.value)


def test_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="data directory .* does not exist"):
        data.load("mnist", tmp_path / "nope")
    with pytest.raises(DataError, match="no IDX files for mnist"):
        data.load("mnist", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="data directory .*file is a file, not a folder"):
        data.load("mnist", tmp_path / "file")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'; choose one of: mnist, fashion-mnist, mnist-5k"):
        data.load("cifar")


def test_scaling_is_the_exact_float32_division_by_255():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    scaled = data._scale(images)
    assert scaled.dtype == np.float32 and scaled.shape == (1, 256)
    np.testing.assert_array_equal(scaled[0], np.arange(256, dtype=np.float32) / np.float32(255))
