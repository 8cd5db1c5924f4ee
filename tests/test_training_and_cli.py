"""Training through the library and the real CLI on small data: output files, determinism, annealing,
seeds side by side, divergence, interruption, bad input, and `stn compare` resume and parallelism."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from stn_cli import data, grid, results, training
from stn_cli.cli import main
from stn_cli.config import RunConfig

SHORT = dict(epochs=2, steps_per_epoch=60, eval_every=30, batch_size=25)


@pytest.fixture(scope="module")
def small():
    return data.load("mnist-5k")


def metrics(folder: Path):
    with open(folder / results.METRICS_FILE) as file:
        return list(csv.DictReader(file))


def test_cli_smoke_run_writes_every_file(tmp_path, capsys):
    code = main([
        "train", "--neuron", "onehot", "--dims", "5", "--dataset", "mnist-5k", "--epochs", "2",
        "--steps-per-epoch", "150", "--eval-every", "50", "--results-dir", str(tmp_path), "--name", "smoke",
        "--tensorboard",
    ])
    assert code == 0
    folder = tmp_path / "runs" / "smoke"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [results.CONFIG_FILE, results.METRICS_FILE, results.SUMMARY_FILE, results.ACTIVATIONS_FILE, results.TENSORBOARD_DIR]
    )
    config = yaml.safe_load((folder / results.CONFIG_FILE).read_text())
    assert config["neuron"] == "onehot" and config["dims"] == 5 and config["epochs"] == 2
    rows = metrics(folder)
    assert [int(r["step"]) for r in rows] == [0, 50, 100, 150, 200, 250, 300]
    assert rows[0]["train_accuracy"] == "" and float(rows[-1]["validation_accuracy"]) > 0.6
    assert float(rows[1]["temperature"]) == 1.0
    summary = json.loads((folder / results.SUMMARY_FILE).read_text())
    assert summary["status"] == "complete" and summary["steps_completed"] == 300
    assert summary["dataset"] == {"name": "mnist-5k", "source": summary["dataset"]["source"],
                                  "sizes": {"train": 3500, "validation": 500, "test": 1000}}
    assert summary["final_validation_accuracy"] == pytest.approx(float(rows[-1]["validation_accuracy"]))
    assert 0.6 < summary["test_accuracy"] <= 1 and summary["examples_per_second"] > 0
    assert set(summary["versions"]) >= {"stn", "tensorflow", "keras", "numpy"}
    with np.load(folder / results.ACTIVATIONS_FILE) as arrays:
        hidden = arrays["hidden"]
        assert hidden.shape == (500, 500) and int(arrays["dims"]) == 5
        np.testing.assert_array_equal(hidden.reshape(500, 100, 5).sum(-1), 1)
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]
    assert "smoke: validation" in capsys.readouterr().out


def test_same_seed_same_metrics_and_seeds_side_by_side_match_solo_runs(tmp_path, small):
    config = RunConfig(neuron="binary", dataset="mnist-5k", **SHORT)
    a = training.train(config.replace(seed=1), small, tmp_path / "a")[0]
    b = training.train(config.replace(seed=1), small, tmp_path / "b")[0]
    assert metrics(a.folder) == metrics(b.folder)
    together = training.train(config, small, tmp_path / "c", seeds=[0, 1])
    solo = [float(r["validation_accuracy"]) for r in metrics(a.folder)]
    side = [float(r["validation_accuracy"]) for r in metrics(together[1].folder)]
    np.testing.assert_allclose(side, solo, atol=0.01)  # the same run up to float summation order
    other = [float(r["validation_accuracy"]) for r in metrics(together[0].folder)]
    assert other != side


def test_annealing_changes_what_training_sees(tmp_path, small):
    base = RunConfig(neuron="binary", dataset="mnist-5k", **SHORT)
    plain = metrics(training.train(base, small, tmp_path / "plain")[0].folder)
    annealed = metrics(training.train(base.replace(anneal=5.0), small, tmp_path / "anneal")[0].folder)
    first_epoch = [r for r in plain if int(r["step"]) <= 60]
    assert annealed[: len(first_epoch)] == first_epoch  # slope 1 through the first epoch
    assert [r["train_accuracy"] for r in annealed[len(first_epoch):]] != [r["train_accuracy"] for r in plain[len(first_epoch):]]
    assert float(annealed[-1]["slope"]) == 5.0


def test_divergence_is_recorded_and_exits_non_zero(tmp_path, capsys):
    code = main(["train", "--neuron", "tanh", "--dataset", "mnist-5k", "--lr", "1e38", "--epochs", "1",
                 "--steps-per-epoch", "60", "--results-dir", str(tmp_path), "--name", "boom"])
    assert code == 1
    summary = json.loads((tmp_path / "runs" / "boom" / results.SUMMARY_FILE).read_text())
    assert summary["status"] == "diverged" and 0 <= summary["diverged_step"] < 60
    assert "diverged at step" in capsys.readouterr().err


def test_interrupt_publishes_an_interrupted_run(tmp_path, small):
    def stop(update):
        if update.step >= 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(RunConfig(neuron="ternary", dataset="mnist-5k", **SHORT), small, tmp_path, names=["cut"],
                       on_progress=stop)
    folder = tmp_path / "runs" / "cut"
    summary = json.loads((folder / results.SUMMARY_FILE).read_text())
    assert summary["status"] == "interrupted" and summary["steps_completed"] == 30
    assert len(metrics(folder)) == 2
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--neuron", "relu"], "unknown neuron 'relu'"),
        (["--hidden", "0"], "hidden must be >= 1"),
        (["--dims", "1", "--neuron", "onehot"], "dims must be >= 2"),
        (["--lr", "-1"], "lr must be a positive number"),
        (["--epochs", "0"], "epochs must be >= 1"),
        (["--name", "../escape"], "not a safe folder name"),
        (["--hidden", "many"], "Invalid value for '--hidden'"),
        (["--no-such-flag"], "No such option"),
    ],
)
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    assert main(["train", "--results-dir", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_data_dir_exits_non_zero_without_writing(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path / "nope"), "--results-dir", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- compare ----------------------------------------------------------------------------------------

GRID = {
    "defaults": {"dataset": "mnist-5k", "epochs": 1, "steps_per_epoch": 40, "eval_every": 20, "batch_size": 25},
    "grids": {
        "tiny": {
            "description": "two quick experiments",
            "experiments": {
                "tanh": {"why": "baseline", "study": 0.9772, "neuron": "tanh"},
                "onehot": {"why": "one-hot", "neuron": "onehot", "dims": 3, "hidden": 20},
            },
            "figures": [{"title": "both", "experiments": ["tanh", "onehot"]}],
        }
    },
}


def write_grid(path: Path, document=GRID) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def test_compare_runs_resumes_and_tabulates(tmp_path, capsys):
    config = write_grid(tmp_path / "experiments.yaml")
    out = tmp_path / "res"
    args = ["compare", "--config", str(config), "--grid", "tiny", "--seeds", "2", "--results-dir", str(out)]
    assert main(args) == 0
    runs = {run.name: run for run in results.list_runs(out)}
    assert sorted(runs) == ["mnist-5k.onehot.seed0", "mnist-5k.onehot.seed1", "mnist-5k.tanh.seed0", "mnist-5k.tanh.seed1"]
    with open(out / "compare" / "tiny.csv") as file:
        table = {row["experiment"]: row for row in csv.DictReader(file)}
    accuracies = [runs[f"mnist-5k.tanh.seed{s}"].summary["final_validation_accuracy"] for s in (0, 1)]
    assert float(table["tanh"]["validation_mean"]) == pytest.approx(np.mean(accuracies), abs=1e-4)
    assert float(table["tanh"]["validation_std"]) == pytest.approx(np.std(accuracies, ddof=1), abs=1e-4)
    half = 12.706 * np.std(accuracies, ddof=1) / np.sqrt(2)
    assert float(table["tanh"]["ci95_low"]) == pytest.approx(np.mean(accuracies) - half, abs=1e-4)
    assert table["tanh"]["study"] == "0.9772" and table["tanh"]["seeds"] == "2"
    group_wall = runs["mnist-5k.tanh.seed0"].summary["wall_seconds"]  # both seeds trained in one call
    assert float(table["tanh"]["wall_seconds"]) == pytest.approx(group_wall, abs=0.1)
    assert (out / "compare" / "tiny.md").read_text().startswith("| experiment |")

    stamps = {name: (run.folder / results.SUMMARY_FILE).stat().st_mtime_ns for name, run in runs.items()}
    capsys.readouterr()
    assert main(args) == 0  # nothing to do: every run is complete with the same config
    assert "reusing 4 complete run(s)" in capsys.readouterr().out
    assert {n: (r.folder / results.SUMMARY_FILE).stat().st_mtime_ns for n, r in
            ((r.name, r) for r in results.list_runs(out))} == stamps

    assert main([*args, "--only", "tanh", "--steps-per-epoch", "20"]) == 0  # a changed config reruns
    rerun = {run.name: run for run in results.list_runs(out)}
    assert rerun["mnist-5k.tanh.seed0"].summary["steps_completed"] == 20
    assert (rerun["mnist-5k.onehot.seed0"].folder / results.SUMMARY_FILE).stat().st_mtime_ns == stamps["mnist-5k.onehot.seed0"]


def test_two_jobs_give_the_same_results_as_one(tmp_path):
    config = write_grid(tmp_path / "experiments.yaml")
    for jobs in (1, 2):
        assert main(["compare", "--config", str(config), "--grid", "tiny", "--jobs", str(jobs),
                     "--results-dir", str(tmp_path / f"jobs{jobs}")]) == 0
    for name in ("mnist-5k.tanh.seed0", "mnist-5k.onehot.seed0"):
        assert metrics(tmp_path / "jobs1" / "runs" / name) == metrics(tmp_path / "jobs2" / "runs" / name)


def test_a_failing_experiment_is_recorded_and_the_grid_goes_on(tmp_path, capsys):
    document = yaml.safe_load(yaml.safe_dump(GRID))
    document["grids"]["tiny"]["experiments"]["tanh"]["lr"] = 1e38
    config = write_grid(tmp_path / "experiments.yaml", document)
    assert main(["compare", "--config", str(config), "--grid", "tiny", "--results-dir", str(tmp_path)]) == 1
    statuses = {run.name: run.status for run in results.list_runs(tmp_path)}
    assert statuses == {"mnist-5k.tanh.seed0": "diverged", "mnist-5k.onehot.seed0": "complete"}
    assert "1 run(s) did not complete" in capsys.readouterr().err


def test_a_fallback_data_set_names_the_runs_it_trained(tmp_path, monkeypatch, capsys):
    """Offline, mnist falls back to mnist-5k: the runs must say so, so they never pass for full MNIST."""
    monkeypatch.delenv("STN_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "_keras_download", lambda name: (_ for _ in ()).throw(Exception("offline")))
    config = write_grid(tmp_path / "experiments.yaml")
    assert main(["compare", "--config", str(config), "--grid", "tiny", "--only", "tanh", "--dataset", "mnist",
                 "--results-dir", str(tmp_path)]) == 0
    assert [run.name for run in results.list_runs(tmp_path)] == ["mnist-5k.tanh.seed0"]
    assert "using mnist-5k instead" in capsys.readouterr().err


def test_unloadable_data_is_recorded_per_experiment(tmp_path, capsys):
    document = yaml.safe_load(yaml.safe_dump(GRID))
    document["grids"]["tiny"]["experiments"]["tanh"]["data_dir"] = str(tmp_path / "missing")
    config = write_grid(tmp_path / "experiments.yaml", document)
    assert main(["compare", "--config", str(config), "--grid", "tiny", "--results-dir", str(tmp_path / "out")]) == 1
    assert [run.name for run in results.list_runs(tmp_path / "out")] == ["mnist-5k.onehot.seed0"]
    assert "data directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["grids"]["tiny"]["experiments"]["tanh"].update(colour=1), "experiment 'tanh': unknown field 'colour'"),
        (lambda d: d["grids"]["tiny"]["experiments"]["tanh"].update(hidden="big"), "experiment 'tanh': field 'hidden' must be int"),
        (lambda d: d["grids"]["tiny"]["experiments"]["tanh"].update(neuron="relu"), "experiment 'tanh': unknown neuron 'relu'"),
        (lambda d: d["grids"]["tiny"]["experiments"].update({"bad/name": {"neuron": "tanh"}}), "'bad/name' is not a safe folder name"),
        (lambda d: d["grids"]["tiny"].update(colour=1), "grid 'tiny': unknown key 'colour'"),
        (lambda d: d["grids"]["tiny"]["figures"][0]["experiments"].append("nope"), "names unknown experiment 'nope'"),
        (lambda d: d["grids"]["tiny"]["experiments"]["tanh"].update(study="high"), "field 'study' must be a number"),
    ],
)
def test_grid_file_errors_name_the_experiment_and_field(tmp_path, edit, message):
    document = yaml.safe_load(yaml.safe_dump(GRID))
    edit(document)
    with pytest.raises(Exception, match=message):
        grid.load_grids(write_grid(tmp_path / "e.yaml", document))


def test_duplicate_experiment_names_are_an_error(tmp_path, capsys):
    path = tmp_path / "e.yaml"
    path.write_text("grids:\n  g:\n    experiments:\n      a: {neuron: tanh}\n      a: {neuron: binary}\n")
    assert main(["compare", "--config", str(path), "--grid", "g", "--results-dir", str(tmp_path / "out")]) == 2
    assert "duplicate name 'a' at line 5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_shipped_experiments_file_declares_the_whole_study():
    grids = grid.load_grids(Path(__file__).parents[1] / "experiments.yaml")
    study = {e.name: e for e in grids["study"].experiments}
    assert {e.study for e in study.values()} >= {0.9772, 0.9732, 0.9764, 0.9794, 0.9796, 0.9798, 0.981, 0.9754}
    assert study["onehot-100x10"].config.units == 1000 and study["binary-anneal-1.1"].config.anneal == 1.1
    assert len(grids["study"].figures) == 3 and "beyond" in grids


def test_difference_to_baseline_is_welchs_interval():
    stats = pytest.importorskip("scipy.stats")
    row = grid.Row("b", "", "d", 4, [0.90, 0.92, 0.91, 0.95], [], None, 0.0)
    base = grid.Row("a", "", "d", 3, [0.88, 0.89, 0.87], [], None, 0.0)
    row.baseline = base
    delta, low, high = row.difference
    a, b = np.var(row.validation, ddof=1) / 4, np.var(base.validation, ddof=1) / 3
    dof = (a + b) ** 2 / (a**2 / 3 + b**2 / 2)
    half = stats.t.ppf(0.975, np.floor(dof)) * np.sqrt(a + b)
    assert delta == pytest.approx(np.mean(row.validation) - np.mean(base.validation))
    assert (low, high) == pytest.approx((delta - half, delta + half), abs=1e-3)
    assert "(n.s.)" not in grid.describe_difference(row)
    row.validation = [0.86, 0.92, 0.88, 0.90]
    assert grid.describe_difference(row).endswith("vs a (n.s.)")


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for dof in range(1, 31):
        assert grid.t95(dof) == pytest.approx(stats.t.ppf(0.975, dof), abs=1e-3)


def test_baseline_must_be_in_the_grid(tmp_path):
    document = yaml.safe_load(yaml.safe_dump(GRID))
    document["grids"]["tiny"]["experiments"]["onehot"]["baseline"] = "relu"
    with pytest.raises(Exception, match="baseline 'relu' is not in the grid"):
        grid.load_grids(write_grid(tmp_path / "e.yaml", document))


def test_sigterm_publishes_the_run_as_interrupted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "stn_cli", "train", "--dataset", "mnist-5k", "--epochs", "50", "--eval-every", "20",
         "--results-dir", str(tmp_path), "--name", "killed"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    partial_metrics = tmp_path / "runs" / ".killed.partial" / results.METRICS_FILE
    deadline = time.time() + 120
    while not (partial_metrics.exists() and len(partial_metrics.read_text().splitlines()) > 2):
        assert process.poll() is None and time.time() < deadline, process.stderr.read() if process.poll() else "timeout"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert "interrupted" in process.stderr.read()
    summary = json.loads((tmp_path / "runs" / "killed" / results.SUMMARY_FILE).read_text())
    assert summary["status"] == "interrupted" and 0 < summary["steps_completed"] < 50_000
    assert len(metrics(tmp_path / "runs" / "killed")) >= 2
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def test_initial_weights_are_tf1_glorot_uniform_biases_included():
    from stn_cli import model

    w1, b1, w2, b2 = model.initial_params(RunConfig(neuron="onehot", dims=5), seeds=[0, 1])
    assert w1.shape == (2, 784, 500) and b1.shape == (2, 500) and w2.shape == (2, 500, 10) and b2.shape == (2, 10)
    for array, limit in ((w1, np.sqrt(6 / 1284)), (b1, np.sqrt(3 / 500)), (w2, np.sqrt(6 / 510)), (b2, np.sqrt(3 / 10))):
        assert np.abs(array).max() <= limit and np.abs(array).max() > 0.9 * limit
    assert np.std(w1) == pytest.approx(np.sqrt(6 / 1284) / np.sqrt(3), rel=0.01)  # uniform's sd
    assert not np.array_equal(w1[0], w1[1])
    np.testing.assert_array_equal(model.initial_params(RunConfig(), [1])[0][0],
                                  model.initial_params(RunConfig(), [0, 1])[0][1])  # a seed's own weights


@pytest.mark.parametrize("neuron, extra", [("binary", {"anneal": 1.5}), ("nary", {"levels": 4}), ("onehot", {"dims": 3})])
def test_saved_keras_model_of_stn_layers_reproduces_the_trainer(tmp_path, small, neuron, extra):
    """The Keras layers and the trainer are two doors to the same neuron functions: the exported model
    must score what the trainer scored on the validation set."""
    import keras

    config = RunConfig(neuron=neuron, dataset="mnist-5k", **SHORT, **extra)
    (run,) = training.train(config, small, tmp_path, save_model=True)
    model = keras.saving.load_model(run.folder / results.MODEL_FILE)
    predictions = model.predict(small.validation.images, verbose=0).argmax(-1)
    accuracy = (predictions == small.validation.labels).mean()
    assert accuracy == pytest.approx(run.final_validation_accuracy, abs=0.004)  # at most 2 of 500 on float ties
    if neuron == "binary":
        assert float(model.layers[1].slope.numpy()) == pytest.approx(1.5)


@pytest.mark.parametrize("args, message", [(["--seeds", "0"], "seeds must be >= 1"), (["--jobs", "0"], "jobs must be >= 1"),
                                           (["--grid", "nope"], "has no grid 'nope'"), (["--only", "nope"], "has no experiment 'nope'")])
def test_bad_compare_options_exit_2_and_run_nothing(tmp_path, capsys, args, message):
    config = write_grid(tmp_path / "experiments.yaml")
    assert main(["compare", "--config", str(config), "--grid", "tiny", *args, "--results-dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()
