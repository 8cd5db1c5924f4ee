"""Keras 3 layers over the pure neuron functions of `stn_cli.neurons`.

Each layer is stochastic when called with `training=True` and deterministic otherwise (the Keras
convention), unless `stochastic_train` / `stochastic_eval` say otherwise. The slope (or temperature)
lives in a non-trainable variable, so a callback can anneal it between epochs without retracing:

    layer.slope.assign(layer.slope * 1.1)

Sampling draws uniform noise from the layer's own `keras.random.SeedGenerator`, so a seeded layer
repeats its samples. The layers need the TensorFlow backend (the neuron math is TensorFlow code).
"""

from __future__ import annotations

import keras

from . import neurons, registry


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


class _DiscreteNeuron(keras.layers.Layer):
    """Shared behaviour: when to sample, the seed generator, and the annealable variable."""

    variable_name = "slope"

    def __init__(self, value: float, stochastic_train=True, stochastic_eval=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.stochastic_train = bool(stochastic_train)
        self.stochastic_eval = bool(stochastic_eval)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.initial_value = value
        self.sharpness = self.add_weight(
            name=self.variable_name, shape=(), initializer=keras.initializers.Constant(value), trainable=False
        )

    def _noise(self, shape, training):
        stochastic = self.stochastic_train if training else self.stochastic_eval
        return keras.random.uniform(shape, seed=self.seed_generator) if stochastic else None

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "stochastic_train": self.stochastic_train,
            "stochastic_eval": self.stochastic_eval,
            "seed": self.seed,
        }


class _SlopeNeuron(_DiscreteNeuron):
    """A neuron whose activation takes (pre-activations, slope, noise); subclasses name the function."""

    def __init__(self, slope: float = 1.0, **kwargs):
        super().__init__(_positive("slope", slope), **kwargs)

    @property
    def slope(self):
        return self.sharpness

    def activate(self, inputs, slope, noise):
        raise NotImplementedError

    def call(self, inputs, training=False):
        return self.activate(inputs, self.sharpness, self._noise(keras.ops.shape(inputs), training))

    def get_config(self):
        return {**super().get_config(), "slope": self.initial_value}


@keras.saving.register_keras_serializable(package="stn")
class BinaryNeuron(_SlopeNeuron):
    """Binary stochastic neuron, outputs {0, 1}; see `stn_cli.neurons.binary`."""

    def activate(self, inputs, slope, noise):
        return neurons.binary(inputs, slope, noise)


@keras.saving.register_keras_serializable(package="stn")
class TernaryNeuron(_SlopeNeuron):
    """The study's ternary neuron, outputs {-1, 0, 1}; see `stn_cli.neurons.ternary`."""

    def activate(self, inputs, slope, noise):
        return neurons.ternary(inputs, slope, noise)


@keras.saving.register_keras_serializable(package="stn")
class NaryNeuron(_SlopeNeuron):
    """n-ary neuron, outputs {0, ..., levels - 1}; see `stn_cli.neurons.staircase`."""

    def __init__(self, levels: int = 3, slope: float = 1.0, spacing: float = neurons.DEFAULT_SPACING, **kwargs):
        if int(levels) != levels or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels}")
        self.levels = int(levels)
        self.spacing = _positive("spacing", spacing)
        super().__init__(slope, **kwargs)

    def activate(self, inputs, slope, noise):
        return neurons.nary(inputs, self.levels, slope, noise, self.spacing)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels, "spacing": self.spacing}


@keras.saving.register_keras_serializable(package="stn")
class OneHotNeuron(_DiscreteNeuron):
    """One-hot neurons over groups of `dims` consecutive inputs; see `stn_cli.neurons.onehot`.

    The input width must be a multiple of `dims`; the output has the same width, one one-hot vector per
    group. `estimator` picks the gradient estimator (`st`, `gumbel`, `gumbel-rao`, `gst`, `reinmax`).
    """

    variable_name = "temperature"

    def __init__(self, dims: int = 5, temperature: float = 1.0, estimator: str = "st", samples: int = 10,
                 gap: float = 1.0, **kwargs):
        if int(dims) != dims or dims < 2:
            raise ValueError(f"dims must be an integer >= 2, got {dims}")
        if estimator not in registry.ESTIMATOR_NAMES:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of: {', '.join(registry.ESTIMATOR_NAMES)}")
        floor = registry.MIN_TEMPERATURE.get(estimator)
        if floor is not None and temperature < floor:
            raise ValueError(f"estimator {estimator!r} needs temperature >= {floor:g}, got {temperature}")
        if int(samples) != samples or samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {samples}")
        self.dims, self.estimator, self.samples, self.gap = int(dims), estimator, int(samples), float(gap)
        super().__init__(_positive("temperature", temperature), **kwargs)

    @property
    def temperature(self):
        return self.sharpness

    def build(self, input_shape):
        width = input_shape[-1]
        if width is not None and width % self.dims:
            raise ValueError(f"input width {width} is not a multiple of dims={self.dims}")

    def call(self, inputs, training=False):
        shape = keras.ops.shape(inputs)
        draws = neurons.onehot_noise_draws(self.estimator, self.samples)
        noise_shape = (draws, *shape[:-1], shape[-1] // self.dims, self.dims)
        return neurons.onehot(
            inputs, self.dims, self.sharpness, self._noise(noise_shape, training), self.estimator, self.samples, self.gap
        )

    def get_config(self):
        return {
            **super().get_config(),
            "dims": self.dims,
            "temperature": self.initial_value,
            "estimator": self.estimator,
            "samples": self.samples,
            "gap": self.gap,
        }


class Annealing(keras.callbacks.Callback):
    """Sharpen every stn neuron of the model after each epoch, as the study's slope annealing did:
    slopes are multiplied by `rate`, one-hot temperatures divided by it (ReinMax's never below 1). Only
    variables change, so the compiled training step is not retraced.

        model.fit(x, y, epochs=20, callbacks=[Annealing(1.1)])
    """

    def __init__(self, rate: float):
        super().__init__()
        self.rate = _positive("rate", rate)

    def on_epoch_end(self, epoch, logs=None):
        for layer in _all_layers(self.model):
            if isinstance(layer, OneHotNeuron):
                floor = registry.MIN_TEMPERATURE.get(layer.estimator, 0.0)  # ReinMax stops at tau = 1
                layer.sharpness.assign(keras.ops.maximum(layer.sharpness / self.rate, floor))
            elif isinstance(layer, _DiscreteNeuron):
                layer.sharpness.assign(layer.sharpness * self.rate)


def _all_layers(layer):
    """The layer and every layer nested in it, through the public `layers` of models."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _all_layers(inner)


def hidden_layer(config) -> keras.layers.Layer:
    """The Keras layer for a `RunConfig`'s hidden neurons, at the slope it ended training with."""
    slope = config.slope_at(config.total_steps - 1)
    if config.neuron in ("tanh", "sigmoid"):
        return keras.layers.Activation(config.neuron)
    if config.neuron == "binary":
        return BinaryNeuron(slope=slope, seed=config.seed)
    if config.neuron == "ternary":
        return TernaryNeuron(slope=slope, seed=config.seed)
    if config.neuron == "nary":
        return NaryNeuron(levels=config.levels, slope=slope, spacing=config.spacing, seed=config.seed)
    return OneHotNeuron(dims=config.dims, temperature=1.0 / slope, estimator=config.estimator,
                        samples=config.samples, gap=config.gap, seed=config.seed)


def classifier(config, weights=None) -> keras.Model:
    """The study's network, 784 -> hidden neurons -> softmax 10, built from these layers.

    `weights` ([W1, b1, W2, b2], e.g. a trained run's) are loaded if given.
    """
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(config.units, name="linear"),
        hidden_layer(config),
        keras.layers.Dense(10, activation="softmax", name="softmax"),
    ])
    if weights is not None:
        model.layers[0].set_weights(weights[:2])
        model.layers[2].set_weights(weights[2:])
    return model
