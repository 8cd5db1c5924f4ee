"""The neuron math: output alphabets, tie cases, straight-through gradients against NumPy references of
each documented formula, and sampling distributions at fixed seeds with binomial tolerances."""

import numpy as np
import pytest
import tensorflow as tf

from stn_cli import neurons
from stn_cli.registry import ESTIMATOR_NAMES


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def uniform(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).random(shape), tf.float32)


def tape_gradient(function, x, upstream):
    x = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    return y.numpy(), tape.gradient(y, x, output_gradients=tf.constant(upstream, tf.float32)).numpy()


def tolerance(p, n, sigmas=4.5):
    """Half-width of a binomial acceptance band for a frequency estimated from n draws."""
    return sigmas * np.sqrt(p * (1 - p) / n) + 1e-9


X = np.array([-4.0, -1.0, -0.3, 0.0, 0.3, 1.0, 4.0], np.float32)


# --- binary, ternary, n-ary -------------------------------------------------------------------------

@pytest.mark.parametrize("slope", [1.0, 2.5])
@pytest.mark.parametrize("stochastic", [False, True])
def test_binary_outputs_and_gradient(slope, stochastic):
    noise = uniform(X.shape) if stochastic else None
    g = np.linspace(-1, 1, X.size).astype(np.float32)
    y, grad = tape_gradient(lambda x: neurons.binary(x, slope, noise), X, g)
    assert set(np.unique(y)) <= {0.0, 1.0}
    p = sigmoid(slope * X)
    if not stochastic:
        np.testing.assert_array_equal(y, (p >= 0.5).astype(np.float32))
    else:
        np.testing.assert_array_equal(y, (noise.numpy() < p).astype(np.float32))
    np.testing.assert_allclose(grad, g * slope * p * (1 - p), rtol=1e-5, atol=1e-7)


def test_binary_tie_goes_up():
    assert neurons.binary(tf.constant([0.0])).numpy()[0] == 1.0


def test_binary_sampling_frequency():
    n = 20000
    x = tf.fill([n], 0.4)
    y = neurons.binary(x, 1.0, uniform([n], seed=3)).numpy()
    p = sigmoid(0.4)
    assert abs(y.mean() - p) < tolerance(p, n)


def ternary_reference(x, s=1.0):
    f = 1.5 * np.tanh(s * x) + 0.5 * np.tanh(-3 * s * x)
    df = 1.5 * s / np.cosh(s * x) ** 2 - 1.5 * s / np.cosh(3 * s * x) ** 2
    return f, df


@pytest.mark.parametrize("stochastic", [False, True])
def test_ternary_outputs_and_gradient(stochastic):
    noise = uniform(X.shape, seed=1) if stochastic else None
    g = np.ones_like(X)
    y, grad = tape_gradient(lambda x: neurons.ternary(x, 1.0, noise), X, g)
    f, df = ternary_reference(X)
    assert set(np.unique(y)) <= {-1.0, 0.0, 1.0}
    if stochastic:
        assert np.all(np.abs(y - f) < 1)  # only the two levels next to f
    else:
        np.testing.assert_array_equal(y, np.floor(f + 0.5))
    np.testing.assert_allclose(grad, df, rtol=1e-5, atol=1e-6)


def test_ternary_is_the_study_formula_and_flat_at_zero():
    f, df = ternary_reference(np.array([0.0, 0.7, -2.0]))
    np.testing.assert_allclose(neurons.ternary_activation(tf.constant([0.0, 0.7, -2.0])).numpy(), f, rtol=1e-6)
    assert df[0] == 0.0


def test_ternary_stochastic_mean_equals_activation():
    n = 20000
    x = tf.fill([n], 0.5)
    y = neurons.ternary(x, 1.0, uniform([n], seed=4)).numpy()
    f, _ = ternary_reference(0.5)
    frac = f - np.floor(f)
    assert set(np.unique(y)) == {np.floor(f), np.floor(f) + 1}
    assert abs((y - np.floor(f)).mean() - frac) < tolerance(frac, n)


def staircase_reference(x, levels, s, spacing=neurons.DEFAULT_SPACING):
    centres = spacing * (np.arange(1, levels) - levels / 2)
    z = s * (np.asarray(x)[..., None] - centres)
    return sigmoid(z).sum(-1), (s * sigmoid(z) * (1 - sigmoid(z))).sum(-1)


@pytest.mark.parametrize("levels", [2, 3, 4, 8])
@pytest.mark.parametrize("stochastic", [False, True])
def test_nary_outputs_and_gradient(levels, stochastic):
    x = (np.linspace(-30, 30, 41) + 0.37).astype(np.float32)  # off the exact ties at level + 1/2
    noise = uniform(x.shape, seed=2) if stochastic else None
    g = np.linspace(1, 2, x.size).astype(np.float32)
    y, grad = tape_gradient(lambda v: neurons.nary(v, levels, 1.5, noise), x, g)
    f, df = staircase_reference(x, levels, 1.5)
    assert set(np.unique(y)) <= set(range(levels))
    if stochastic:
        assert np.all(np.abs(y - f) < 1)
    else:
        np.testing.assert_array_equal(y, np.floor(f + 0.5))
    np.testing.assert_allclose(grad, g * df, rtol=1e-4, atol=1e-6)


def test_nary_two_levels_is_the_binary_sigmoid_exactly():
    x = tf.constant(np.linspace(-5, 5, 11), tf.float32)
    np.testing.assert_array_equal(neurons.staircase(x, 2, 1.7).numpy(), tf.sigmoid(1.7 * x).numpy())


@pytest.mark.parametrize("levels", [3, 5, 8])
def test_nary_spans_the_levels_and_is_flat_at_every_level(levels):
    spacing = neurons.DEFAULT_SPACING
    centres = spacing * (np.arange(1, levels) - levels / 2)
    ends = neurons.staircase(tf.constant([-1e3, 1e3]), levels).numpy()
    np.testing.assert_allclose(ends, [0, levels - 1], atol=1e-6)
    # Interior levels sit midway between step centres: the value is the level, and the slope there is
    # small next to the slope at a step, and shrinks as the slope parameter grows.
    midpoints = (centres[:-1] + centres[1:]) / 2
    for s in (1.0, 2.0, 4.0):
        values, slopes = staircase_reference(midpoints, levels, s)
        _, at_steps = staircase_reference(centres, levels, s)
        np.testing.assert_allclose(values, np.arange(1, levels - 1), atol=0.02)
        assert np.all(slopes / at_steps.min() < {1.0: 0.4, 2.0: 0.02, 4.0: 1e-4}[s])


def test_round_or_sample_only_neighbouring_levels_with_right_probability():
    n = 40000
    f = tf.fill([n], 2.3)
    y = neurons.round_or_sample(f, uniform([n], seed=5)).numpy()
    assert set(np.unique(y)) == {2.0, 3.0}
    assert abs((y == 3).mean() - 0.3) < tolerance(0.3, n)


# --- one-hot ----------------------------------------------------------------------------------------

LOGITS = np.array([[1.0, 0.2, -0.5, 0.0, 2.0], [0.3, 0.3, -1.0, 1.5, 0.1]], np.float32)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_vjp(p, g):
    return p * g - p * (p * g).sum(-1, keepdims=True)


def gumbel_np(u):
    return -np.log(-np.log(u))


@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
@pytest.mark.parametrize("stochastic", [False, True])
def test_onehot_rows_are_one_hot_and_flattened(estimator, stochastic):
    x = np.random.default_rng(0).normal(size=(3, 4 * 5)).astype(np.float32)
    draws = neurons.onehot_noise_draws(estimator, 4)
    noise = uniform((draws, 3, 4, 5)) if stochastic else None
    y = neurons.onehot(tf.constant(x), 5, 1.0, noise, estimator, samples=4).numpy()
    assert y.shape == (3, 20)
    groups = y.reshape(3, 4, 5)
    assert set(np.unique(groups)) <= {0.0, 1.0}
    np.testing.assert_array_equal(groups.sum(-1), 1.0)
    if not stochastic:
        np.testing.assert_array_equal(groups.argmax(-1), x.reshape(3, 4, 5).argmax(-1))


def test_onehot_argmax_tie_takes_the_first_index():
    y = neurons.onehot(tf.constant([[0.5, 0.5, 0.1]]), 3).numpy()
    np.testing.assert_array_equal(y, [[1.0, 0.0, 0.0]])


def reference_gradient(estimator, z, tau, u, g, hard):
    """NumPy gradients of the documented backward rules, given the noise u and the sampled one-hot."""
    if estimator == "st":
        return softmax_vjp(softmax(z / tau), g) / tau
    if estimator == "gumbel":
        return softmax_vjp(softmax((z + gumbel_np(u[0])) / tau), g) / tau
    if estimator == "gst":
        top = z.max(-1, keepdims=True)
        raised = z + hard * (top - z)
        shift = raised - z - (1 - hard) * np.maximum(raised - (top - 1.0), 0)
        return softmax_vjp(softmax((z + shift) / tau), g) / tau
    if estimator == "reinmax":
        pi1 = 0.5 * (softmax(z / tau) + hard)
        grad = 2 * softmax_vjp(pi1, g) - 0.5 * softmax_vjp(softmax(z), g)
        return grad - grad.mean(-1, keepdims=True)
    raise AssertionError(estimator)


@pytest.mark.parametrize("estimator", ["st", "gumbel", "gst", "reinmax"])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("stochastic", [False, True])
def test_onehot_gradients_match_their_formulas(estimator, tau, stochastic):
    u = np.random.default_rng(7).random((1, 2, 1, 5)).astype(np.float32)  # (draws, batch, groups, dims)
    noise = tf.constant(u) if stochastic else None
    g = np.array([[0.5, -1.0, 0.2, 0.3, 0.1], [1.0, 0.0, -0.4, 0.2, -0.3]], np.float32)
    y, grad = tape_gradient(lambda z: neurons.onehot(z, 5, tau, noise, estimator), LOGITS, g)
    if not stochastic and estimator == "gumbel":
        expected = reference_gradient("st", LOGITS, tau, u[:, :, 0], g, y)  # deterministic gumbel is plain ST
    else:
        expected = reference_gradient(estimator, LOGITS, tau, u[:, :, 0], g, y)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def conditional_gumbel_np(z, u, hard):
    """NumPy draws of z + g conditioned on argmax = the index in `hard` (u: (K, ..., dims))."""
    top = np.log(np.exp(z).sum(-1, keepdims=True)) + gumbel_np((hard * u).sum(-1, keepdims=True))
    below = -np.log(np.exp(-top) + np.exp(-z) * -np.log(u))
    return hard * top + (1 - hard) * below


def test_gumbel_rao_gradient_is_the_mean_st_gumbel_gradient_at_conditional_samples():
    k, tau = 3, 1.5
    u = np.random.default_rng(11).random((1 + k, 2, 1, 5))
    g = np.array([[0.5, -1.0, 0.2, 0.3, 0.1], [1.0, 0.0, -0.4, 0.2, -0.3]])
    y, grad = tape_gradient(
        lambda z: neurons.onehot(z, 5, tau, tf.constant(u, tf.float32), "gumbel-rao", samples=k), LOGITS, g
    )
    np.testing.assert_array_equal(y.argmax(-1), (LOGITS + gumbel_np(u[0, :, 0])).argmax(-1))
    samples = conditional_gumbel_np(LOGITS.astype(np.float64), u[1:, :, 0], y)
    expected = np.mean([softmax_vjp(softmax(sample / tau), g) / tau for sample in samples], axis=0)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_conditional_gumbels_keep_the_chosen_index_on_top():
    z = tf.constant(np.random.default_rng(1).normal(size=(50, 6)), tf.float32)
    hard = tf.one_hot(np.random.default_rng(2).integers(0, 6, 50), 6)
    draws = neurons._conditional_gumbels(z, hard, uniform((4, 50, 6), seed=9)).numpy()
    assert np.all(draws.argmax(-1) == hard.numpy().argmax(-1))


def test_conditional_gumbels_match_rejection_sampling():
    """z + g given argmax = 1, drawn directly, has the distribution of unconditional draws that happen to
    have argmax 1 (compared by the mean and sd of every coordinate)."""
    n, z = 60000, np.array([1.0, 0.0, -0.5], np.float32)
    free = z + gumbel_np(np.random.default_rng(31).random((n, 3)))
    accepted = free[free.argmax(-1) == 1]
    hard = tf.one_hot(np.ones(n, int), 3)
    direct = neurons._conditional_gumbels(tf.constant(np.tile(z, (n, 1))), hard, uniform((n, 3), seed=32)).numpy()
    for i in range(3):
        se = np.sqrt(accepted[:, i].var() / len(accepted) + direct[:, i].var() / n)
        assert abs(accepted[:, i].mean() - direct[:, i].mean()) < 4.5 * se, i
        assert direct[:, i].std() == pytest.approx(accepted[:, i].std(), rel=0.05), i


@pytest.mark.parametrize("estimator,tau", [("st", 2.0), ("gumbel", 2.0), ("gumbel-rao", 2.0), ("gst", 2.0), ("reinmax", 2.0)])
def test_onehot_sampling_distribution(estimator, tau):
    """st samples Cat(softmax(z / tau)); every other estimator samples Cat(softmax(z)) whatever tau is."""
    n = 20000
    z = np.array([1.0, 0.0, -1.0, 0.5], np.float32)
    x = tf.constant(np.tile(z, (n, 1)))
    draws = neurons.onehot_noise_draws(estimator, 2)
    y = neurons.onehot(x, 4, tau, uniform((draws, n, 1, 4), seed=12), estimator, samples=2).numpy()
    expected = softmax(z / tau) if estimator == "st" else softmax(z)
    frequencies = y.mean(0)
    assert np.all(np.abs(frequencies - expected) < tolerance(expected, n)), (frequencies, expected)


def test_gumbel_rao_with_one_sample_matches_st_gumbel_on_average():
    """K = 1 is ST-Gumbel in distribution: their mean gradients agree within Monte Carlo error."""
    n, tau = 4000, 0.7
    z = np.tile(np.array([[0.8, 0.1, -0.4]], np.float32), (n, 1))
    g = np.tile(np.array([[1.0, -0.5, 0.25]], np.float32), (n, 1))
    _, rao = tape_gradient(lambda v: neurons.onehot(v, 3, tau, uniform((2, n, 1, 3), 21), "gumbel-rao", samples=1), z, g)
    _, plain = tape_gradient(lambda v: neurons.onehot(v, 3, tau, uniform((1, n, 1, 3), 22), "gumbel"), z, g)
    spread = np.sqrt(rao.var(0) / n + plain.var(0) / n)
    assert np.all(np.abs(rao.mean(0) - plain.mean(0)) < 4.5 * spread + 1e-6), (rao.mean(0), plain.mean(0), spread)


def test_compiled_and_eager_agree():
    x = tf.constant(np.random.default_rng(3).normal(size=(4, 15)), tf.float32)
    noise = uniform((1, 4, 3, 5), seed=4)
    eager = neurons.onehot(x, 5, 0.8, noise, "gst")
    compiled = tf.function(lambda v: neurons.onehot(v, 5, 0.8, noise, "gst"), jit_compile=True)(x)
    np.testing.assert_allclose(eager.numpy(), compiled.numpy())
    eager_b = neurons.nary(x, 4, 1.3, uniform((4, 15)))
    compiled_b = tf.function(lambda v: neurons.nary(v, 4, 1.3, uniform((4, 15))), jit_compile=True)(x)
    np.testing.assert_array_equal(eager_b.numpy(), compiled_b.numpy())
