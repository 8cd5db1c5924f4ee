"""The results folder: file and metric names defined once, atomic writes, and readers.

A run is a folder `results/runs/<name>/` of plain files. It is assembled in a hidden sibling
`.<name>.partial/` and published by renaming, so `compare` and `plot` (which read only these files and
never import TensorFlow) see either a whole run or none. A run killed outright leaves only the hidden
partial folder, which every reader ignores and the next run of that name replaces.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

RUNS = "runs"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
ACTIVATIONS_FILE = "activations.npz"
TENSORBOARD_DIR = "tensorboard"
MODEL_FILE = "model.keras"

# metrics.csv columns
STEP, EPOCH, TRAIN_ACCURACY, VALIDATION_ACCURACY, LOSS, SLOPE, TEMPERATURE = (
    "step", "epoch", "train_accuracy", "validation_accuracy", "loss", "slope", "temperature",
)
METRIC_COLUMNS = (STEP, EPOCH, TRAIN_ACCURACY, VALIDATION_ACCURACY, LOSS, SLOPE, TEMPERATURE)

# summary.json status values
COMPLETE, INTERRUPTED, DIVERGED = "complete", "interrupted", "diverged"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_yaml(path: Path, value: Any) -> None:
    atomic_write_text(path, yaml.safe_dump(value, sort_keys=False))


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def runs_dir(results_dir: Path) -> Path:
    return Path(results_dir) / RUNS


def partial_dir(results_dir: Path, name: str) -> Path:
    """A fresh hidden folder where run `name` is assembled before `publish`."""
    folder = runs_dir(results_dir) / f".{name}.partial"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def publish(folder: Path, results_dir: Path, name: str) -> Path:
    """Move an assembled run into place, replacing an older run of the same name."""
    final = runs_dir(results_dir) / name
    if final.exists():
        retired = final.with_name(f".{name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(final, retired)
        os.replace(folder, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(folder, final)
    return final


@dataclass(frozen=True)
class Run:
    """A published run as the files on disk describe it."""

    folder: Path
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def experiment(self) -> str:
        return self.summary.get("experiment") or self.name

    @property
    def status(self) -> str:
        return self.summary.get("status", "")

    def metrics(self) -> list[dict[str, float]]:
        """metrics.csv as a list of rows; empty cells (no training yet at step 0) become NaN."""
        with open(self.folder / METRICS_FILE, newline="") as file:
            return [
                {key: float(value) if value != "" else float("nan") for key, value in row.items()}
                for row in csv.DictReader(file)
            ]


def read_run(folder: Path) -> Run | None:
    """The run in `folder`, or None when it has no readable summary (not a finished run)."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return Run(folder, summary) if isinstance(summary, dict) else None


def list_runs(results_dir: Path) -> list[Run]:
    """Every published run under `results_dir`, by name; hidden partial folders are skipped."""
    root = runs_dir(results_dir)
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [run for run in map(read_run, folders) if run is not None]
