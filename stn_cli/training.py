"""The study's training protocol, compiled, for one seed or several side by side.

Protocol (defaults of `RunConfig`): SGD, batch 50, 1000 steps an epoch, 20 epochs; stochastic neurons
in training and deterministic ones at evaluation; validation accuracy at step 0 and every 100 steps
(so at every epoch start); training accuracy averaged over those 100 steps; test accuracy at the end.

The loss is the study's: -mean over the 10 classes of y log p, summed over the batch, i.e. the
batch's summed cross-entropy divided by 10. Its SGD step at learning rate lr equals the step of mean
cross-entropy at lr * batch_size / 10 (0.5 for the study's 0.1 and 50). The metrics record the plain
mean cross-entropy per example, which is what people compare.

Speed: the training data stay resident as tensors and each call into TensorFlow runs a whole block of
`eval_every` steps inside one XLA-compiled while loop, so Python runs once per 100 steps.
What stays non-deterministic: nothing on one machine (stateless random streams, fixed data order);
across machines or TensorFlow versions, floating-point summation order may differ.
"""

from __future__ import annotations

import io
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from . import __version__, model, registry, results
from .config import RunConfig
from .data import Dataset
from .errors import StnError

# Evaluation runs over the validation and test sets in slices of this many images to bound memory
# (a one-hot 100x10 layer on 10,000 images would otherwise hold 10,000 x 1,000 activations per seed).
EVAL_SLICE = 5000
_EVAL_STREAM = 1 << 30  # noise counters for stochastic evaluation start here, far from training steps


@dataclass
class Progress:
    step: int
    total_steps: int
    validation_accuracy: list[float]  # one per seed


@dataclass
class RunResult:
    name: str
    folder: Path
    seed: int
    status: str
    final_validation_accuracy: float
    test_accuracy: float | None
    wall_seconds: float
    examples_per_second: float
    diverged_step: int | None = None
    summary: dict = field(default_factory=dict)


class Trainer:
    """Compiled training and evaluation of one config for a group of seeds."""

    def __init__(self, config: RunConfig, data: Dataset, seeds: Sequence[int], jit_compile: bool = True):
        self.config, self.data, self.seeds = config, data, list(seeds)
        self.hidden_fn = model.activation(config)
        discrete = registry.neuron(config.neuron).discrete
        self.noisy_train = discrete and config.stochastic_train
        self.noisy_eval = discrete and config.stochastic_eval
        self.params = [tf.Variable(p) for p in model.initial_params(config, self.seeds)]
        self.seed_tensor = tf.constant(self.seeds, tf.int64)
        self.order = tf.constant(model.batch_order(config, len(data.train), self.seeds))
        self.slopes = tf.constant([config.slope_at(step) for step in range(config.total_steps)], tf.float32)
        self.x_train = tf.constant(data.train.images)
        self.y_train = tf.constant(data.train.labels)
        self.train_block = tf.function(self._train_block, jit_compile=jit_compile)
        self.evaluate_slice = tf.function(self._evaluate_slice, jit_compile=jit_compile)

    def _train_block(self, start, count):
        """Run `count` steps from `start`; return per-seed (correct predictions, summed mean loss, first
        step whose loss was not finite or -1)."""
        config, seeds = self.config, len(self.seeds)
        lr = tf.constant(config.lr, tf.float32)

        def body(t, correct, loss_sum, first_bad):
            step = start + t
            # Index with tf.gather only: a dynamic slice such as `self.slopes[step]` in this XLA loop
            # made every step ten times slower on TensorFlow 2.21.
            indices = tf.gather(self.order, step, axis=1)
            x, y = tf.gather(self.x_train, indices), tf.gather(self.y_train, indices)
            noise = (
                model.draw_noise(config, self.seed_tensor, step, config.batch_size)
                if self.noisy_train
                else None
            )
            with tf.GradientTape() as tape:
                logits, _ = model.forward(self.params, x, self.hidden_fn, tf.gather(self.slopes, step), noise)
                cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
                loss = tf.reduce_sum(cross_entropy) / model.CLASSES
            for variable, gradient in zip(self.params, tape.gradient(loss, self.params)):
                variable.assign_sub(lr * gradient)
            hits = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32) == y, tf.int32)
            mean_loss = tf.reduce_mean(cross_entropy, axis=1)
            newly_bad = tf.logical_and(~tf.math.is_finite(mean_loss), first_bad < 0)
            return (
                t + 1,
                correct + tf.reduce_sum(hits, axis=1),
                loss_sum + mean_loss,
                tf.where(newly_bad, step, first_bad),
            )

        initial = (tf.constant(0), tf.zeros(seeds, tf.int32), tf.zeros(seeds), -tf.ones(seeds, tf.int32))
        _, correct, loss_sum, first_bad = tf.while_loop(lambda t, *_: t < count, body, initial)
        return correct, loss_sum, first_bad

    def _evaluate_slice(self, images, labels, slope, counter):
        noise = (
            model.draw_noise(self.config, self.seed_tensor, counter, images.shape[0])
            if self.noisy_eval
            else None
        )
        logits, hidden = model.forward(self.params, images[None], self.hidden_fn, slope, noise)
        hits = tf.cast(tf.argmax(logits, axis=-1, output_type=tf.int32) == labels, tf.int32)
        return tf.reduce_sum(hits, axis=1), hidden

    def evaluate(self, split, step: int, keep_hidden: bool = False):
        """Per-seed accuracy on a split (and, if asked, the hidden outputs, (S, n, units))."""
        slope = tf.constant(self.config.slope_at(max(step - 1, 0)), tf.float32)
        correct = np.zeros(len(self.seeds), np.int64)
        hidden = []
        for begin in range(0, len(split), EVAL_SLICE):
            counter = tf.constant(_EVAL_STREAM + step * 1000 + begin // EVAL_SLICE, tf.int64)
            hits, outputs = self.evaluate_slice(
                tf.constant(split.images[begin : begin + EVAL_SLICE]),
                tf.constant(split.labels[begin : begin + EVAL_SLICE]),
                slope,
                counter,
            )
            correct += hits.numpy()
            if keep_hidden:
                hidden.append(outputs.numpy())
        accuracy = correct / len(split)
        return (accuracy, np.concatenate(hidden, axis=1)) if keep_hidden else accuracy


def _metric_row(config: RunConfig, step: int, train_accuracy, validation_accuracy, loss) -> dict:
    slope = config.slope_at(max(step - 1, 0))
    kind = registry.neuron(config.neuron)
    return {
        results.STEP: step,
        results.EPOCH: round(step / config.steps_per_epoch, 6),
        results.TRAIN_ACCURACY: "" if train_accuracy is None else f"{train_accuracy:.6f}",
        results.VALIDATION_ACCURACY: f"{validation_accuracy:.6f}",
        results.LOSS: "" if loss is None else f"{loss:.6f}",
        results.SLOPE: f"{slope:.6g}" if kind.discrete and not kind.onehot else "",
        results.TEMPERATURE: f"{1.0 / slope:.6g}" if kind.onehot else "",
    }


def versions() -> dict[str, str]:
    import keras

    return {
        "stn": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _activation_arrays(config: RunConfig, hidden: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    kind = registry.neuron(config.neuron)
    values = np.rint(hidden).astype(np.int8) if kind.discrete else hidden.astype(np.float32)
    return {
        "hidden": values,
        "labels": labels,
        "neuron": np.array(config.neuron),
        "dims": np.array(config.dims if kind.onehot else 1),
        "levels": np.array(config.levels if config.neuron == "nary" else 0),
    }


@dataclass
class _SeedRun:
    """The files of one seed's run while it is being assembled in its hidden folder."""

    name: str
    config: RunConfig
    folder: Path
    writer: object = None  # a tf.summary writer with --tensorboard
    rows: list = field(default_factory=list)
    diverged_at: int | None = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        results.write_csv(self.folder / results.METRICS_FILE, results.METRIC_COLUMNS, self.rows)
        if self.writer is not None:
            with self.writer.as_default():
                for name, value in row.items():
                    if name not in (results.STEP, results.EPOCH) and value != "":
                        tf.summary.scalar(name, float(value), step=row[results.STEP])

    def summary(self, status: str, data: Dataset, step: int, test_accuracy, timing: dict, extra: dict) -> dict:
        accuracies = [float(row[results.VALIDATION_ACCURACY]) for row in self.rows]
        return _finite_or_none({
            "name": self.name,
            "seed": self.config.seed,
            "status": status,
            "diverged_step": self.diverged_at,
            "config": self.config.to_dict(),
            "config_fingerprint": self.config.fingerprint(),
            "description": self.config.describe(),
            "dataset": {"name": data.name, "source": data.source, "sizes": data.sizes()},
            "steps_completed": step,
            "final_validation_accuracy": accuracies[-1] if accuracies else float("nan"),
            "best_validation_accuracy": max(accuracies) if accuracies else float("nan"),
            "test_accuracy": test_accuracy,
            **timing,
            **extra,
        })


def train(
    config: RunConfig,
    data: Dataset,
    results_dir: Path,
    *,
    seeds: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    experiment: str | None = None,
    jit_compile: bool = True,
    tensorboard: bool = False,
    save_model: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[RunResult]:
    """Train `config` once per seed (default: `config.seed`), all seeds in one compiled computation,
    and publish one run folder per seed under `results_dir/runs/`.

    A seed whose loss stops being finite is recorded as diverged at that step; training stops when
    every seed has diverged. KeyboardInterrupt (the CLI maps SIGTERM to it) publishes the runs as
    interrupted, with the metrics so far, and is re-raised. `save_model` also writes each complete run's
    network as a Keras model built from `stn_cli.layers` (load it with `keras.saving.load_model`).
    """
    if tensorboard:
        try:
            import tensorboard  # noqa: F401  (tf.summary writes nothing without it)
        except ImportError:
            raise StnError("--tensorboard needs the tensorboard package: pip install 'stn[tensorboard]'") from None
    seeds = list(seeds) if seeds is not None else [config.seed]
    configs = [config.replace(seed=seed) for seed in seeds]
    names = list(names) if names is not None else [c.default_name() for c in configs]
    started = time.time()
    trainer = Trainer(config, data, seeds, jit_compile=jit_compile)
    runs = []
    for name, run_config in zip(names, configs):
        folder = results.partial_dir(results_dir, name)
        results.write_yaml(folder / results.CONFIG_FILE, run_config.to_dict())
        writer = tf.summary.create_file_writer(str(folder / results.TENSORBOARD_DIR)) if tensorboard else None
        runs.append(_SeedRun(name, run_config, folder, writer))

    def record(step, train_accuracy, validation_accuracy, loss):
        for i, run in enumerate(runs):
            if run.diverged_at is None or run.diverged_at >= step:  # nothing after its divergence
                run.add(_metric_row(
                    config, step,
                    None if train_accuracy is None else train_accuracy[i],
                    validation_accuracy[i],
                    None if loss is None else loss[i],
                ))
        if on_progress:
            on_progress(Progress(step, config.total_steps, [float(v) for v in validation_accuracy]))

    train_seconds, step, status = 0.0, 0, results.INTERRUPTED
    try:
        record(0, None, trainer.evaluate(data.validation, 0), None)
        while step < config.total_steps and any(run.diverged_at is None for run in runs):
            count = min(config.eval_every, config.total_steps - step)
            tick = time.perf_counter()
            correct, loss_sum, first_bad = (t.numpy() for t in trainer.train_block(tf.constant(step), tf.constant(count)))
            train_seconds += time.perf_counter() - tick
            step += count
            for run, bad in zip(runs, first_bad):
                if bad >= 0 and run.diverged_at is None:
                    run.diverged_at = int(bad)
            record(step, correct / (count * config.batch_size), trainer.evaluate(data.validation, step), loss_sum / count)
        status = results.COMPLETE
    finally:
        # Runs the same way on completion and on an interrupt, so an interrupted run is published too.
        test_accuracy = hidden = None
        if status == results.COMPLETE:
            test_accuracy = trainer.evaluate(data.test, step)
            _, hidden = trainer.evaluate(data.validation, step, keep_hidden=True)
        wall = time.time() - started
        timing = {
            "wall_seconds": round(wall, 3),
            "examples_per_second": round(step * config.batch_size / wall, 1),
            "train_examples_per_second": round(step * config.batch_size / train_seconds, 1) if train_seconds else None,
        }
        extra = {"seeds_trained_together": len(seeds), "jit_compile": jit_compile, "versions": versions()}
        outcomes = []
        for i, run in enumerate(runs):
            run_status = results.DIVERGED if run.diverged_at is not None else status
            complete = run_status == results.COMPLETE
            seed_test = float(test_accuracy[i]) if complete else None
            summary = run.summary(run_status, data, step, seed_test, timing, {"experiment": experiment or run.name, **extra})
            if complete:
                arrays = _activation_arrays(run.config, hidden[i], data.validation.labels)
                _save_npz(run.folder / results.ACTIVATIONS_FILE, arrays)
                if save_model:
                    _save_keras(run.folder / results.MODEL_FILE, run.config, [p[i].numpy() for p in trainer.params])
            results.write_json(run.folder / results.SUMMARY_FILE, summary)
            if run.writer is not None:
                run.writer.close()
            published = results.publish(run.folder, results_dir, run.name)
            outcomes.append(RunResult(
                run.name, published, run.config.seed, run_status, summary["final_validation_accuracy"], seed_test,
                wall, timing["examples_per_second"], run.diverged_at, summary,
            ))
    return outcomes


def _save_keras(path: Path, config: RunConfig, weights: list[np.ndarray]) -> None:
    from .layers import classifier

    temporary = path.with_name(f".{path.stem}.tmp.keras")  # Keras wants the .keras suffix
    classifier(config, weights).save(temporary)
    temporary.replace(path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    results.atomic_write_bytes(path, buffer.getvalue())


def _finite_or_none(value):
    """JSON has no NaN: unknown numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value
