"""`stn plot`: learning curves and activation histograms from the results folder alone.

Reads only run folders (metrics.csv, summary.json, activations.npz) and never imports TensorFlow, so
plotting a finished grid takes seconds. Figures are built by functions that return the matplotlib
figure (tests read the drawn data back from it) and are saved atomically.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import results  # noqa: E402
from .errors import ConfigError, StnError  # noqa: E402

FORMATS = ("png", "svg", "pdf")
FIGURE_SIZE = (8.0, 5.0)  # inches
DPI = 100
STUDY_LOWER_Y = 0.8  # the study drew its MNIST curves from 0.8 up


@dataclass
class Curve:
    """One line: an experiment's accuracy against steps, averaged over its seeds."""

    label: str
    steps: np.ndarray
    runs: list[np.ndarray]  # one accuracy series per seed, all on `steps`

    @property
    def mean(self) -> np.ndarray:
        return np.mean(self.runs, axis=0)


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _lower_limit(curves: Sequence[Curve], ylim: float | None) -> float:
    """The study's 0.8 where every curve stays above it; otherwise the lowest value after the first
    tenth of training, rounded down to 0.05, so the first steady climb does not flatten the rest."""
    if ylim is not None:
        return ylim
    values = np.concatenate([np.ravel(run[max(1, len(run) // 10):]) for curve in curves for run in curve.runs])
    values = values[np.isfinite(values)]
    low = float(values.min()) if values.size else 0.0
    return STUDY_LOWER_Y if low >= STUDY_LOWER_Y else math.floor(low * 20) / 20


def learning_curve_figure(curves: Sequence[Curve], title: str, ylim: float | None = None, ylabel: str = "validation accuracy"):
    """One line per curve (the mean over seeds) and, with several seeds, a band from min to max."""
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    for curve in curves:
        seeds = len(curve.runs)
        (line,) = axes.plot(curve.steps, curve.mean, label=f"{curve.label} (n={seeds})" if seeds > 1 else curve.label)
        if seeds > 1:
            stacked = np.stack(curve.runs)
            axes.fill_between(curve.steps, stacked.min(axis=0), stacked.max(axis=0), color=line.get_color(), alpha=0.2)
    axes.set_ylim(_lower_limit(curves, ylim), 1.0)
    axes.set_xlabel("training steps")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", ncol=2 if len(curves) > 4 else 1, fontsize="small" if len(curves) > 4 else None)
    figure.tight_layout()
    return figure


def run_curves(run: results.Run) -> list[Curve]:
    """A run's training and validation accuracy (training accuracy has no value at step 0)."""
    rows = run.metrics()
    steps = np.array([row[results.STEP] for row in rows])
    curves = []
    for column, label in ((results.TRAIN_ACCURACY, "training"), (results.VALIDATION_ACCURACY, "validation")):
        values = np.array([row[column] for row in rows])
        keep = np.isfinite(values)
        curves.append(Curve(label, steps[keep], [values[keep]]))
    return curves


def experiment_curve(label: str, runs: Sequence[results.Run]) -> Curve:
    """Validation accuracy of an experiment's seeds, on the steps they all reached."""
    series = [{row[results.STEP]: row[results.VALIDATION_ACCURACY] for row in run.metrics()} for run in runs]
    steps = np.array(sorted(set.intersection(*(set(s) for s in series))))
    return Curve(label, steps, [np.array([s[step] for step in steps]) for s in series])


def activation_figure(arrays: dict[str, np.ndarray], title: str):
    """What the hidden neurons output on the validation set.

    n-ary / ternary: how often each level comes out. Binary: the fraction of 0s and 1s, and the
    distribution of per-neuron firing rates (dead and always-on neurons sit at 0 and 1). One-hot: how
    often each position is chosen overall, and an image of neurons x positions, so collapsed neurons show.
    Real-valued baselines: a histogram of the outputs.
    """
    neuron, hidden = str(arrays["neuron"]), np.asarray(arrays["hidden"])
    if neuron == "onehot":
        dims = int(arrays["dims"])
        per_neuron = hidden.reshape(len(hidden), -1, dims).mean(axis=0)  # (neurons, dims) choice rates
        figure, (left, right) = plt.subplots(1, 2, figsize=FIGURE_SIZE, dpi=DPI, gridspec_kw={"width_ratios": [1, 1.4]})
        left.bar(np.arange(dims), per_neuron.mean(axis=0))
        left.set_xlabel("position")
        left.set_ylabel("fraction chosen")
        left.set_xticks(np.arange(dims))
        image = right.imshow(per_neuron, aspect="auto", interpolation="nearest", vmin=0, vmax=1, cmap="viridis")
        right.set_xlabel("position")
        right.set_ylabel("neuron")
        figure.colorbar(image, ax=right, label="fraction chosen")
    elif neuron == "binary":
        figure, (left, right) = plt.subplots(1, 2, figsize=FIGURE_SIZE, dpi=DPI)
        rate = hidden.mean()
        left.bar([0, 1], [1 - rate, rate])
        left.set_xticks([0, 1])
        left.set_xlabel("output")
        left.set_ylabel("fraction")
        right.hist(hidden.mean(axis=0), bins=np.linspace(0, 1, 21))
        right.set_xlabel("firing rate of a neuron")
        right.set_ylabel("neurons")
    elif neuron in ("ternary", "nary"):
        figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
        levels = np.arange(-1, 2) if neuron == "ternary" else np.arange(int(arrays["levels"]))
        axes.bar(levels, [(hidden == level).sum() for level in levels])
        axes.set_xticks(levels)
        axes.set_xlabel("output level")
        axes.set_ylabel("count (validation images x neurons)")
    else:
        figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
        axes.hist(hidden.ravel(), bins=50)
        axes.set_xlabel("output")
        axes.set_ylabel("count")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def save(figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix[1:])
    plt.close(figure)
    results.atomic_write_bytes(path, buffer.getvalue())
    return path


def _figure_groups(config_file: Path, grid_name: str | None, report: Report):
    """(grid, index, figure) for the figure groups of `grid_name`, or of every grid when it is None."""
    from .grid import load_grids

    if not Path(config_file).exists():
        report.missing.append(f"no experiments file {config_file}, so no figure groups")
        return []
    grids = load_grids(config_file)
    if grid_name is not None and grid_name not in grids:
        raise ConfigError(f"{config_file} has no grid {grid_name!r}; it has: {', '.join(grids)}")
    chosen = [grid_name] if grid_name is not None else list(grids)
    return [(name, index, figure) for name in chosen for index, figure in enumerate(grids[name].figures)]


def plot(
    results_dir: Path,
    out: Path,
    *,
    image_format: str = "png",
    runs: Sequence[str] | None = None,
    config_file: Path = Path("experiments.yaml"),
    grid_name: str | None = None,
    ylim: float | None = None,
) -> Report:
    """Draw the figure groups of a grid, or of every grid (for all data sets found), and one curve and
    one activation figure per run; with `runs`, only those runs. Missing pieces are reported, and what
    can be drawn is drawn."""
    if image_format not in FORMATS:
        raise ConfigError(f"unknown format {image_format!r}; choose one of: {', '.join(FORMATS)}")
    if ylim is not None and not 0 <= ylim < 1:
        raise ConfigError(f"--ylim must be in [0, 1), got {ylim}")
    results_dir, out = Path(results_dir), Path(out)
    report = Report()
    available = {run.name: run for run in results.list_runs(results_dir)}
    if runs:
        for name in runs:
            if name not in available:
                report.missing.append(f"run {name!r} not found in {results.runs_dir(results_dir)}")
        chosen = [available[name] for name in runs if name in available]
    else:
        chosen = list(available.values())
        by_experiment: dict[tuple[str, str], list[results.Run]] = defaultdict(list)
        for run in chosen:
            if run.status == results.COMPLETE:
                by_experiment[(run.summary["dataset"]["name"], run.experiment)].append(run)
        datasets = sorted({dataset for dataset, _ in by_experiment})
        for grid, index, figure in _figure_groups(config_file, grid_name, report):
            for dataset in datasets:
                curves = [
                    experiment_curve(name, by_experiment[(dataset, name)])
                    for name in figure.experiments
                    if by_experiment.get((dataset, name))
                ]
                absent = [name for name in figure.experiments if not by_experiment.get((dataset, name))]
                if absent:
                    report.missing.append(f"figure {figure.title!r} on {dataset}: no complete runs of {', '.join(absent)}")
                if curves:
                    path = out / f"{grid}-{index + 1}-{dataset}.{image_format}"
                    report.written.append(save(learning_curve_figure(curves, f"{figure.title} ({dataset})", ylim), path))
    for run in chosen:
        title = f"{run.summary.get('description', run.name)} on {run.summary['dataset']['name']}, seed {run.summary.get('seed')}"
        try:
            curves = run_curves(run)
        except (OSError, KeyError, ValueError):
            report.missing.append(f"run {run.name}: no readable {results.METRICS_FILE}")
            continue
        report.written.append(save(learning_curve_figure(curves, title, ylim, "accuracy"), out / f"{run.name}.curves.{image_format}"))
        activations = run.folder / results.ACTIVATIONS_FILE
        if not activations.exists():
            report.missing.append(f"run {run.name}: no {results.ACTIVATIONS_FILE} (status {run.status})")
            continue
        try:
            with np.load(activations) as arrays:
                figure = activation_figure(dict(arrays), title)
        except (OSError, ValueError, KeyError) as error:
            raise StnError(f"{activations}: unreadable ({error})") from None
        report.written.append(save(figure, out / f"{run.name}.activations.{image_format}"))
    return report
