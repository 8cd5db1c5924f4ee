"""`make bench`: training throughput per neuron type on full-size synthetic data (55,000 x 784).

For each neuron: examples/s of stn's compiled trainer (100 steps per XLA call); of a plain loop with one
`tf.function` call per step; their ratio; and the share of a matmul-only ceiling, i.e. the step's FLOPs
divided by the FLOP rate of a loop that does only the step's two big matmuls at the same shapes,
measured in the same run. Then S seeds side by side. All figures are medians of repeated timings, and
only ratios measured in one run are meant to be compared: the machines are shared and noisy.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import tensorflow as tf

from .config import RunConfig
from .data import Dataset, Split
from .quiet import hide_native_stderr
from .training import Trainer

BLOCK, REPEATS = 100, 7
CASES = [
    RunConfig(neuron="tanh"),
    RunConfig(neuron="binary"),
    RunConfig(neuron="ternary"),
    RunConfig(neuron="nary", levels=4),
    RunConfig(neuron="onehot", dims=5),
    RunConfig(neuron="onehot", dims=5, estimator="gumbel-rao"),
]
#: The study's own TF1 code on this machine, steps per second (from the project brief).
STUDY_STEPS_PER_SECOND = {"tanh": 1200, "onehot": 470}


def synthetic(train: int = 55_000) -> Dataset:
    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32))  # noqa: E731
    return Dataset("synthetic", "bench", split(train), split(1000), split(1000))


def median_seconds(function, repeats: int = REPEATS) -> float:
    function()  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_rate(config: RunConfig, data: Dataset, seeds: int = 1) -> float:
    trainer = Trainer(config, data, list(range(seeds)))
    seconds = median_seconds(lambda: trainer.train_block(tf.constant(0), tf.constant(BLOCK))[0].numpy())
    return BLOCK * config.batch_size * seeds / seconds


def per_step_rate(config: RunConfig, data: Dataset) -> float:
    trainer = Trainer(config, data, [0], jit_compile=False)

    def steps():
        for step in range(BLOCK):
            result = trainer.train_block(tf.constant(step), tf.constant(1))
        result[0].numpy()

    return BLOCK * config.batch_size / median_seconds(steps)


def step_flops(config: RunConfig) -> float:
    """Forward and backward multiply-adds of one step, x2: both big matmuls of the first layer and the
    three small ones of the second (forward, weight gradient, input gradient)."""
    b, u = config.batch_size, config.units
    return 2 * (2 * b * 784 * u + 3 * b * u * 10)


def ceiling_flop_rate(config: RunConfig) -> float:
    """FLOP/s of a compiled loop doing only x @ W1 and x^T @ G at the step's shapes."""
    b, u = config.batch_size, config.units
    x = tf.constant(np.random.default_rng(1).random((b, 784), dtype=np.float32))
    w = tf.Variable(tf.zeros((784, u)))
    g = tf.constant(np.random.default_rng(2).random((b, u), dtype=np.float32))

    @tf.function(jit_compile=True)
    def loop():
        def body(i):
            h = tf.matmul(x, w)
            w.assign_sub(1e-9 * tf.matmul(x, g * h[:1, :1], transpose_a=True))
            return (i + 1,)

        return tf.while_loop(lambda i: i < BLOCK, body, (tf.constant(0),))[0]

    return BLOCK * 2 * 2 * b * 784 * u / median_seconds(lambda: loop().numpy())


def main() -> None:
    hide_native_stderr()
    data = synthetic()
    print(f"TensorFlow {tf.__version__}; {BLOCK} steps per timing, median of {REPEATS}; batch 50, 55,000 x 784\n")
    header = f"{'neuron':<26}{'compiled ex/s':>14}{'steps/s':>9}{'per-step ex/s':>15}{'ratio':>7}{'% ceiling':>10}{'vs study':>10}"
    print(header)
    for config in CASES:
        compiled = compiled_rate(config, data)
        plain = per_step_rate(config, data)
        ceiling = ceiling_flop_rate(config)
        steps = compiled / config.batch_size
        share = steps * step_flops(config) / ceiling
        study = STUDY_STEPS_PER_SECOND.get(config.neuron) if config.estimator == "st" else None
        versus = f"{steps / study:.1f}x" if study else ""
        print(f"{config.describe():<26}{compiled:>14,.0f}{steps:>9,.0f}{plain:>15,.0f}{compiled / plain:>7.1f}"
              f"{100 * share:>9.0f}%{versus:>10}")
    print("\nSeeds side by side (one compiled call trains all): per-run examples/s and speed-up over one seed")
    for config in (CASES[0], CASES[4]):
        single = compiled_rate(config, data)
        for seeds in (2, 4):
            total = compiled_rate(config, data, seeds)
            print(f"  {config.describe():<24}{seeds} seeds: {total / seeds:>10,.0f} per run, "
                  f"{total:>10,.0f} in all, {total / single:.2f}x one seed's throughput")


if __name__ == "__main__":
    main()
