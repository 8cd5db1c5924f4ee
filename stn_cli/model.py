"""The study's classifier, 784 -> hidden neurons -> softmax 10, as pure functions of stacked weights.

Every weight carries a leading seed axis, so S independently seeded networks train in one call: the
same code serves one run and many. Seeds never mix: each has its own initial weights, minibatch order
and neuron noise, all derived from its own seed, so a seed's run does not depend on which seeds share
its call (up to floating-point summation order).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from . import neurons
from .config import RunConfig

INPUTS, CLASSES = 784, 10


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """TF1's default initializer, which the study's `tf.get_variable` used for weights and biases alike.

    For a bias (rank 1) TF1 took fan_in = fan_out = its length, so it is uniform on +-sqrt(3 / n).
    """
    fan_in, fan_out = (shape[0], shape[0]) if len(shape) == 1 else shape
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def initial_params(config: RunConfig, seeds: Sequence[int]) -> list[np.ndarray]:
    """[W1, b1, W2, b2], each stacked over `seeds`."""
    shapes = [(INPUTS, config.units), (config.units,), (config.units, CLASSES), (CLASSES,)]
    per_seed = []
    for seed in seeds:
        rng = np.random.default_rng([seed, 0])
        per_seed.append([glorot_uniform(rng, shape) for shape in shapes])
    return [np.stack(tensors) for tensors in zip(*per_seed)]


def batch_order(config: RunConfig, train_size: int, seeds: Sequence[int]) -> np.ndarray:
    """(S, total steps, batch) training indices: reshuffled passes over the training set, like the
    study's `next_batch`, each seed with its own order."""
    needed = config.total_steps * config.batch_size
    orders = []
    for seed in seeds:
        rng = np.random.default_rng([seed, 1])
        passes = -(-needed // train_size)
        order = np.concatenate([rng.permutation(train_size) for _ in range(passes)])[:needed]
        orders.append(order.reshape(config.total_steps, config.batch_size))
    return np.stack(orders).astype(np.int32)


def activation(config: RunConfig) -> Callable:
    """The hidden layer's function (pre-activations, slope, noise or None) -> outputs."""
    name = config.neuron
    if name == "tanh":
        return lambda x, slope, noise: tf.tanh(x)
    if name == "sigmoid":
        return lambda x, slope, noise: tf.sigmoid(x)
    if name == "binary":
        return neurons.binary
    if name == "ternary":
        return neurons.ternary
    if name == "nary":
        return lambda x, slope, noise: neurons.nary(x, config.levels, slope, noise, config.spacing)
    return lambda x, slope, noise: neurons.onehot(
        x, config.dims, 1.0 / slope, noise, config.estimator, config.samples, config.gap
    )


def noise_shape(config: RunConfig, batch: int) -> tuple[int, ...]:
    """Shape of one seed's uniform noise for one hidden-layer call on `batch` examples."""
    if config.neuron == "onehot":
        draws = neurons.onehot_noise_draws(config.estimator, config.samples)
        return (draws, batch, config.hidden, config.dims)
    return (batch, config.units)


def draw_noise(config: RunConfig, seeds: tf.Tensor, counter, batch: int) -> tf.Tensor:
    """Uniform noise for all seeds, from stateless streams keyed by (seed, counter): reproducible,
    independent across seeds, and the same for a seed whatever other seeds it trains beside."""
    shape = noise_shape(config, batch)
    per_seed = [
        tf.random.stateless_uniform(shape, tf.stack([seeds[i], tf.cast(counter, seeds.dtype)]))
        for i in range(seeds.shape[0])
    ]
    return tf.stack(per_seed, axis=1 if config.neuron == "onehot" else 0)


def forward(params, x: tf.Tensor, hidden_fn: Callable, slope, noise):
    """(logits, hidden outputs) for inputs x of shape (S or 1, batch, 784)."""
    w1, b1, w2, b2 = params
    hidden = hidden_fn(tf.matmul(x, w1) + b1[:, None, :], slope, noise)
    return tf.matmul(hidden, w2) + b2[:, None, :], hidden
