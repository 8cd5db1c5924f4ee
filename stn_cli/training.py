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

# A dynamic slice such as `slopes[step]` inside the XLA loop costs ten times the whole step here;
# `tf.gather` with a scalar index does not, so the loop indexes with gather only.

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
    on_progress: Callable[[Progress], None] | None = None,
) -> list[RunResult]:
    """Train `config` once per seed (default: `config.seed`), all seeds in one compiled computation,
    and publish one run folder per seed under `results_dir/runs/`.

    A seed whose loss stops being finite is recorded as diverged at that step; training stops when
    every seed has diverged. KeyboardInterrupt (the CLI maps SIGTERM to it) publishes the runs as
    interrupted, with the metrics so far, and is re-raised.
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
    folders = [results.partial_dir(results_dir, name) for name in names]
    for folder, run_config in zip(folders, configs):
        results.write_yaml(folder / results.CONFIG_FILE, run_config.to_dict())
    writers = [tf.summary.create_file_writer(str(f / results.TENSORBOARD_DIR)) for f in folders] if tensorboard else []
    rows: list[list[dict]] = [[] for _ in seeds]
    diverged_at: list[int | None] = [None] * len(seeds)
    train_seconds, step, status = 0.0, 0, results.INTERRUPTED

    def record(step, train_accuracy, validation_accuracy, loss):
        for i in range(len(seeds)):
            if diverged_at[i] is not None and diverged_at[i] < step:
                continue
            row = _metric_row(
                config,
                step,
                None if train_accuracy is None else train_accuracy[i],
                validation_accuracy[i],
                None if loss is None else loss[i],
            )
            rows[i].append(row)
            for name, value in row.items():
                if writers and name not in (results.STEP, results.EPOCH) and value != "":
                    with writers[i].as_default():
                        tf.summary.scalar(name, float(value), step=step)
        for folder, seed_rows in zip(folders, rows):
            results.write_csv(folder / results.METRICS_FILE, results.METRIC_COLUMNS, seed_rows)
        if on_progress:
            on_progress(Progress(step, config.total_steps, [float(v) for v in validation_accuracy]))

    try:
        record(0, None, trainer.evaluate(data.validation, 0), None)
        while step < config.total_steps:
            count = min(config.eval_every, config.total_steps - step)
            tick = time.perf_counter()
            correct, loss_sum, first_bad = trainer.train_block(tf.constant(step), tf.constant(count))
            correct, loss_sum, first_bad = correct.numpy(), loss_sum.numpy(), first_bad.numpy()
            train_seconds += time.perf_counter() - tick
            step += count
            for i, bad in enumerate(first_bad):
                if bad >= 0 and diverged_at[i] is None:
                    diverged_at[i] = int(bad)
            record(step, correct / (count * config.batch_size), trainer.evaluate(data.validation, step), loss_sum / count)
            if all(d is not None for d in diverged_at):
                break
        status = results.COMPLETE
    finally:
        test_accuracy, hidden = (None, None)
        if status == results.COMPLETE:
            test_accuracy = trainer.evaluate(data.test, step)
            _, hidden = trainer.evaluate(data.validation, step, keep_hidden=True)
        wall = time.time() - started
        run_results = []
        for i, (seed, name, folder, run_config) in enumerate(zip(seeds, names, folders, configs)):
            seed_status = results.DIVERGED if diverged_at[i] is not None else status
            final_validation = float(rows[i][-1][results.VALIDATION_ACCURACY]) if rows[i] else float("nan")
            seed_test = float(test_accuracy[i]) if test_accuracy is not None and seed_status == results.COMPLETE else None
            summary = {
                "name": name,
                "experiment": experiment or name,
                "seed": seed,
                "status": seed_status,
                "diverged_step": diverged_at[i],
                "config": run_config.to_dict(),
                "config_fingerprint": run_config.fingerprint(),
                "description": run_config.describe(),
                "dataset": {"name": data.name, "source": data.source, "sizes": data.sizes()},
                "steps_completed": step,
                "final_validation_accuracy": final_validation,
                "best_validation_accuracy": max(float(r[results.VALIDATION_ACCURACY]) for r in rows[i]) if rows[i] else float("nan"),
                "test_accuracy": seed_test,
                "wall_seconds": round(wall, 3),
                "examples_per_second": round(step * config.batch_size / wall, 1),
                "train_examples_per_second": round(step * config.batch_size / train_seconds, 1) if train_seconds else None,
                "seeds_trained_together": len(seeds),
                "jit_compile": jit_compile,
                "versions": versions(),
            }
            if hidden is not None and seed_status == results.COMPLETE:
                arrays = _activation_arrays(run_config, hidden[i], data.validation.labels)
                _save_npz(folder / results.ACTIVATIONS_FILE, arrays)
            results.write_json(folder / results.SUMMARY_FILE, _finite_or_none(summary))
            if writers:
                writers[i].close()
            published = results.publish(folder, results_dir, name)
            run_results.append(
                RunResult(name, published, seed, seed_status, final_validation, seed_test, wall,
                          summary["examples_per_second"], diverged_at[i], summary)
            )
    return run_results


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

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
