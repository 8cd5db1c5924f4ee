"""`stn plot` from results folders written here (no training): every figure type, valid images of the
expected size, the drawn data equal to the files, missing pieces reported, and no TensorFlow import."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from stn_cli import plot, results
from stn_cli.cli import main


def fake_run(root, name, experiment, seed, neuron, accuracies, dims=1, levels=0):
    folder = results.runs_dir(root) / name
    folder.mkdir(parents=True)
    rows = [
        {"step": 100 * i, "epoch": i / 10, "train_accuracy": "" if i == 0 else acc - 0.01,
         "validation_accuracy": acc, "loss": "", "slope": "", "temperature": ""}
        for i, acc in enumerate(accuracies)
    ]
    results.write_csv(folder / results.METRICS_FILE, results.METRIC_COLUMNS, rows)
    results.write_json(folder / results.SUMMARY_FILE, {
        "name": name, "experiment": experiment, "seed": seed, "status": "complete", "description": neuron,
        "dataset": {"name": "mnist-5k"}, "final_validation_accuracy": accuracies[-1],
    })
    rng = np.random.default_rng(seed)
    if neuron == "onehot":
        hidden = np.eye(dims, dtype=np.int8)[rng.integers(0, dims, (50, 4))].reshape(50, 4 * dims)
    elif neuron == "ternary":
        hidden = rng.integers(-1, 2, (50, 4)).astype(np.int8)
    elif neuron == "nary":
        hidden = rng.integers(0, levels, (50, 4)).astype(np.int8)
    elif neuron == "tanh":
        hidden = rng.uniform(-1, 1, (50, 4)).astype(np.float32)
    else:
        hidden = rng.integers(0, 2, (50, 4)).astype(np.int8)
    np.savez(folder / results.ACTIVATIONS_FILE, hidden=hidden, labels=np.zeros(50), neuron=np.array(neuron),
             dims=np.array(dims), levels=np.array(levels))
    return folder


@pytest.fixture
def results_dir(tmp_path):
    fake_run(tmp_path, "mnist-5k.a.seed0", "a", 0, "onehot", [0.1, 0.85, 0.9], dims=3)
    fake_run(tmp_path, "mnist-5k.a.seed1", "a", 1, "onehot", [0.1, 0.83, 0.92], dims=3)
    fake_run(tmp_path, "mnist-5k.b.seed0", "b", 0, "ternary", [0.1, 0.8, 0.95])
    fake_run(tmp_path, "mnist-5k.c.seed0", "c", 0, "binary", [0.1, 0.7, 0.88])
    fake_run(tmp_path, "mnist-5k.e.seed0", "e", 0, "nary", [0.1, 0.7, 0.9], levels=5)
    fake_run(tmp_path, "mnist-5k.f.seed0", "f", 0, "tanh", [0.1, 0.75, 0.9])
    config = tmp_path / "experiments.yaml"
    config.write_text(yaml.safe_dump({"grids": {"g": {
        "experiments": {"a": {"neuron": "onehot", "dims": 3}, "b": {"neuron": "ternary"}, "c": {"neuron": "binary"},
                        "d": {"neuron": "tanh"}},
        "figures": [{"title": "A vs B", "experiments": ["a", "b", "d"]}],
    }}}))
    return tmp_path


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_every_figure_is_written_as_a_valid_image(results_dir):
    report = plot.plot(results_dir, results_dir / "plots", config_file=results_dir / "experiments.yaml")
    names = sorted(p.name for p in report.written)
    assert "g-1-mnist-5k.png" in names
    for run in ("mnist-5k.a.seed0", "mnist-5k.a.seed1", "mnist-5k.b.seed0", "mnist-5k.c.seed0", "mnist-5k.e.seed0",
                "mnist-5k.f.seed0"):
        assert f"{run}.curves.png" in names and f"{run}.activations.png" in names
    for path in report.written:
        assert png_size(path) == (800, 500)
    assert any("no complete runs of d" in m for m in report.missing)


def test_group_curve_is_the_seed_mean_with_a_band(results_dir):
    runs = [r for r in results.list_runs(results_dir) if r.experiment == "a"]
    figure = plot.learning_curve_figure([plot.experiment_curve("a", runs)], "t")
    (line,) = figure.axes[0].lines
    np.testing.assert_array_equal(line.get_xdata(), [0, 100, 200])
    np.testing.assert_allclose(line.get_ydata(), [0.1, 0.84, 0.91])
    band = figure.axes[0].collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.1) and band[:, 1].max() == pytest.approx(0.92)
    assert figure.axes[0].get_ylim()[0] == pytest.approx(0.8)  # the study's lower limit


def test_run_curves_read_the_metrics(results_dir):
    run = results.read_run(results.runs_dir(results_dir) / "mnist-5k.b.seed0")
    figure = plot.learning_curve_figure(plot.run_curves(run), "t", ylim=0.5)
    training, validation = figure.axes[0].lines
    np.testing.assert_allclose(training.get_ydata(), [0.79, 0.94])  # no training accuracy at step 0
    np.testing.assert_allclose(validation.get_ydata(), [0.1, 0.8, 0.95])
    assert figure.axes[0].get_ylim()[0] == 0.5


def test_activation_figures_count_what_the_files_hold(results_dir):
    folder = results.runs_dir(results_dir)
    with np.load(folder / "mnist-5k.a.seed0" / results.ACTIVATIONS_FILE) as arrays:
        arrays = dict(arrays)
    figure = plot.activation_figure(arrays, "t")
    bars = [p.get_height() for p in figure.axes[0].patches]
    np.testing.assert_allclose(bars, arrays["hidden"].reshape(50, 4, 3).mean(axis=(0, 1)))
    np.testing.assert_allclose(figure.axes[1].images[0].get_array(), arrays["hidden"].reshape(50, 4, 3).mean(0))
    with np.load(folder / "mnist-5k.b.seed0" / results.ACTIVATIONS_FILE) as arrays:
        arrays = dict(arrays)
    counts = [p.get_height() for p in plot.activation_figure(arrays, "t").axes[0].patches]
    assert counts == [(arrays["hidden"] == level).sum() for level in (-1, 0, 1)]
    with np.load(folder / "mnist-5k.e.seed0" / results.ACTIVATIONS_FILE) as arrays:
        arrays = dict(arrays)
    counts = [p.get_height() for p in plot.activation_figure(arrays, "t").axes[0].patches]
    assert counts == [(arrays["hidden"] == level).sum() for level in range(5)]
    with np.load(folder / "mnist-5k.c.seed0" / results.ACTIVATIONS_FILE) as arrays:
        arrays = dict(arrays)
    left, right = plot.activation_figure(arrays, "t").axes
    assert [p.get_height() for p in left.patches] == pytest.approx([1 - arrays["hidden"].mean(), arrays["hidden"].mean()])
    assert sum(p.get_height() for p in right.patches) == 4  # one firing rate per neuron


def test_chosen_runs_svg_and_missing_names(results_dir, capsys):
    code = main(["plot", "mnist-5k.c.seed0", "nope", "--results-dir", str(results_dir), "--format", "svg",
                 "--config", str(results_dir / "experiments.yaml"), "--grid", "g"])
    assert code == 0
    out = capsys.readouterr()
    assert "run 'nope' not found" in out.err
    written = sorted(p.name for p in (results_dir / "plots").iterdir())
    assert written == ["mnist-5k.c.seed0.activations.svg", "mnist-5k.c.seed0.curves.svg"]
    assert (results_dir / "plots" / written[0]).read_text().lstrip().startswith("<?xml")


def test_empty_results_and_bad_format(tmp_path, capsys):
    assert main(["plot", "--results-dir", str(tmp_path), "--config", str(tmp_path / "none.yaml")]) == 1
    assert "nothing to plot" in capsys.readouterr().err
    assert main(["plot", "--results-dir", str(tmp_path), "--format", "gif"]) == 2
    assert "unknown format 'gif'" in capsys.readouterr().err


def test_plotting_does_not_import_tensorflow(results_dir):
    code = (
        "import sys; from stn_cli import plot; "
        f"plot.plot({str(results_dir)!r}, {str(results_dir / 'p')!r}, config_file={str(results_dir / 'experiments.yaml')!r}, grid_name='g'); "
        "print('tensorflow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
