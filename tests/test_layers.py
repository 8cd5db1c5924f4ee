"""The Keras layers: training flag behaviour, seeds, annealable variables, config and .keras round trips,
argument errors."""

import keras
import numpy as np
import pytest

from stn_cli import layers, neurons

LAYERS = [
    lambda **kw: layers.BinaryNeuron(slope=1.5, **kw),
    lambda **kw: layers.TernaryNeuron(**kw),
    lambda **kw: layers.NaryNeuron(levels=4, slope=2.0, **kw),
    lambda **kw: layers.OneHotNeuron(dims=5, temperature=0.7, **kw),
    lambda **kw: layers.OneHotNeuron(dims=5, estimator="gumbel-rao", samples=3, **kw),
    lambda **kw: layers.OneHotNeuron(dims=5, estimator="reinmax", temperature=1.0, **kw),
]
X = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")


@pytest.mark.parametrize("make", LAYERS)
def test_deterministic_without_training_and_stochastic_with_it(make):
    layer = make(seed=1)
    first, second = np.asarray(layer(X)), np.asarray(layer(X))
    np.testing.assert_array_equal(first, second)
    sampled = [np.asarray(layer(X, training=True)) for _ in range(3)]
    assert any(not np.array_equal(s, first) for s in sampled)


@pytest.mark.parametrize("make", LAYERS)
def test_same_seed_same_samples(make):
    a, b = make(seed=7), make(seed=7)
    np.testing.assert_array_equal(np.asarray(a(X, training=True)), np.asarray(b(X, training=True)))


def test_switches_override_the_training_flag():
    layer = layers.BinaryNeuron(stochastic_train=False, stochastic_eval=True, seed=3)
    np.testing.assert_array_equal(np.asarray(layer(X, training=True)), np.asarray(neurons.binary(X)))
    assert not np.array_equal(np.asarray(layer(X)), np.asarray(neurons.binary(X)))


def test_deterministic_layer_equals_the_pure_function():
    layer = layers.NaryNeuron(levels=5, slope=0.5)
    np.testing.assert_array_equal(np.asarray(layer(X)), np.asarray(neurons.nary(X, 5, 0.5)))


def test_slope_is_an_annealable_non_trainable_variable():
    layer = layers.BinaryNeuron(slope=1.0)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 1
    x = np.array([[0.5]], "float32")
    layer.slope.assign(4.0)
    # deterministic output is slope-invariant for binary; the gradient is not, so read the surrogate
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
    p = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(tape.gradient(y, xt).numpy(), [[4.0 * p * (1 - p)]], rtol=1e-5)


@pytest.mark.parametrize("make", LAYERS)
def test_get_config_round_trip(make):
    layer = make(seed=5)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_keras_file_round_trip_predicts_identically(tmp_path):
    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(15),
        layers.OneHotNeuron(dims=5, estimator="gst", seed=1),
        keras.layers.Dense(12),
        layers.NaryNeuron(levels=3, seed=2),
        keras.layers.Dense(10),
        layers.BinaryNeuron(slope=2.0),
    ])
    model.layers[1].temperature.assign(0.3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict(X, verbose=0), loaded.predict(X, verbose=0))
    assert float(loaded.layers[1].temperature.numpy()) == pytest.approx(0.3)


def test_layers_train_inside_a_keras_model():
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(50), layers.OneHotNeuron(dims=5, seed=0),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.5), "sparse_categorical_crossentropy", metrics=["accuracy"])
    y = (X[:, 0] > 0).astype("int32")
    before = model.get_weights()[0].copy()
    history = model.fit(X, y, epochs=30, batch_size=16, verbose=0)
    assert not np.array_equal(before, model.get_weights()[0])
    assert history.history["accuracy"][-1] > 0.8


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: layers.OneHotNeuron(dims=1), "dims must be an integer >= 2"),
        (lambda: layers.NaryNeuron(levels=1), "levels must be an integer >= 2"),
        (lambda: layers.BinaryNeuron(slope=0), "slope must be > 0"),
        (lambda: layers.OneHotNeuron(temperature=-1), "temperature must be > 0"),
        (lambda: layers.OneHotNeuron(estimator="nope"), "unknown estimator 'nope'"),
        (lambda: layers.OneHotNeuron(estimator="reinmax", temperature=0.5), "needs temperature >= 1"),
    ],
)
def test_bad_arguments_raise_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_input_width_must_be_a_multiple_of_dims():
    with pytest.raises(ValueError, match="input width 12 is not a multiple of dims=5"):
        layers.OneHotNeuron(dims=5)(np.zeros((2, 12), "float32"))


def test_annealing_callback_sharpens_every_neuron_between_epochs():
    inner = keras.Sequential([keras.Input((20,)), keras.layers.Dense(12), layers.NaryNeuron(levels=3, seed=0)])
    model = keras.Sequential([
        keras.Input((20,)), inner, keras.layers.Dense(10), layers.OneHotNeuron(dims=5, temperature=1.0, seed=1),
        keras.layers.Dense(10), layers.OneHotNeuron(dims=5, estimator="reinmax", temperature=1.5, seed=2),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    model.fit(X, (X[:, 0] > 0).astype("int32"), epochs=3, verbose=0, callbacks=[layers.Annealing(2.0)])
    assert float(inner.layers[1].slope.numpy()) == pytest.approx(8.0)
    assert float(model.layers[2].temperature.numpy()) == pytest.approx(1 / 8)
    assert float(model.layers[4].temperature.numpy()) == pytest.approx(1.0)  # ReinMax's floor
