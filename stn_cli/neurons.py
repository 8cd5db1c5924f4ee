"""Discrete straight-through neurons as pure TensorFlow functions.

Each neuron is a function of its pre-activations and, when it is stochastic, of a tensor of uniform
noise in [0, 1) drawn by the caller: a Keras layer draws it from its own `SeedGenerator`, the trainer
from stateless per-step seeds. `noise=None` selects the deterministic neuron. Keeping the randomness
outside makes every function here a pure function of its inputs, so tests can pin exact outputs and the
trainer can run many seeds side by side.

Straight-through estimation (Bengio, Léonard & Courville 2013, "Estimating or propagating gradients
through stochastic neurons for conditional computation"): the forward pass emits a discrete value D,
the backward pass differentiates a soft surrogate S as if the output had been S. Written as
S + stop_gradient(D - S), which is D forward and has the gradient of S.

The binary, ternary and one-hot `st` neurons follow R2RT's study "Beyond Binary: Ternary and One-hot
Neurons" (2017) and its predecessor "Binary Stochastic Neurons in Tensorflow" (2016).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

# Uniform noise is clipped away from 0 before taking logs so a Gumbel draw is always finite.
_TINY = 1e-20


def straight_through(soft: tf.Tensor, hard: tf.Tensor) -> tf.Tensor:
    """`hard` on the forward pass, the gradient of `soft` on the backward pass."""
    return soft + tf.stop_gradient(hard - soft)


def round_or_sample(f: tf.Tensor, noise: tf.Tensor | None = None) -> tf.Tensor:
    """Snap a real activation f to an integer level, with an identity gradient.

    Deterministic (noise None): floor(f + 1/2), so a tie goes to the upper level.
    Stochastic: floor(f) + 1 with probability f - floor(f), else floor(f); only the two levels next to
    f can come out, and E[output] = f.
    """
    if noise is None:
        hard = tf.floor(f + 0.5)
    else:
        lower = tf.floor(f)
        hard = lower + tf.cast(noise < f - lower, f.dtype)
    return straight_through(f, hard)


def binary(x: tf.Tensor, slope=1.0, noise: tf.Tensor | None = None) -> tf.Tensor:
    """Binary neuron with outputs {0, 1}.

    Forward: p = sigmoid(slope * x); deterministic round(p) (x = 0 gives 1), stochastic Bernoulli(p).
    Backward: identity into p, so d out / dx = slope * sigmoid'(slope * x).
    Slope annealing (raising the slope during training) brings the surrogate closer to the step.
    """
    return round_or_sample(tf.sigmoid(slope * x), noise)


def ternary_activation(x: tf.Tensor, slope=1.0) -> tf.Tensor:
    """The study's soft staircase f(x) = 1.5 tanh(s x) + 0.5 tanh(-3 s x), on (-1, 1).

    f'(0) = 0, so a neuron can rest on its middle level; at s = 1 this is the study's formula exactly.
    """
    sx = slope * x
    return 1.5 * tf.tanh(sx) + 0.5 * tf.tanh(-3.0 * sx)


def ternary(x: tf.Tensor, slope=1.0, noise: tf.Tensor | None = None) -> tf.Tensor:
    """The study's ternary neuron with outputs {-1, 0, 1}: `round_or_sample` of `ternary_activation`."""
    return round_or_sample(ternary_activation(x, slope), noise)


#: Distance between neighbouring step centres of the n-ary staircase, in pre-activation units.
DEFAULT_SPACING = 6.0


def staircase(x: tf.Tensor, levels: int, slope=1.0, spacing: float = DEFAULT_SPACING) -> tf.Tensor:
    """The general n-ary soft staircase on (0, levels - 1).

        f(x) = sum_{k=1}^{n-1} sigmoid(s * (x - c_k)),   c_k = spacing * (k - n/2)

    One sigmoid step per boundary between two levels, centred symmetrically about 0. Properties:
    it spans exactly the n levels (f -> 0 and f -> n - 1 at the ends); f is monotone; at the midpoint
    between two step centres f equals the level up to tails that cancel by symmetry, and its slope there
    is about 2 s sigmoid'(s * spacing / 2), which falls like exp(-s * spacing / 2): raising the slope
    flattens every level while sharpening every step, which is what slope annealing asks of it.
    For n = 2 there is one step at 0 and f(x) = sigmoid(s x): the binary neuron exactly.
    """
    centres = spacing * (tf.range(1, levels, dtype=x.dtype) - levels / 2)
    return tf.reduce_sum(tf.sigmoid(slope * (x[..., None] - centres)), axis=-1)


def nary(
    x: tf.Tensor, levels: int, slope=1.0, noise: tf.Tensor | None = None, spacing: float = DEFAULT_SPACING
) -> tf.Tensor:
    """n-ary neuron with outputs {0, 1, ..., levels - 1}: `round_or_sample` of `staircase`."""
    return round_or_sample(staircase(x, levels, slope, spacing), noise)


# ---------------------------------------------------------------------------------------------------
# One-hot neurons. Logits come grouped as (..., groups, d); noise as (draws, ..., groups, d).


def gumbel(noise: tf.Tensor) -> tf.Tensor:
    """Standard Gumbel draws from uniform noise: -log(-log u)."""
    return -tf.math.log(-tf.math.log(tf.maximum(noise, _TINY)))


def _argmax_one_hot(scores: tf.Tensor) -> tf.Tensor:
    return tf.one_hot(tf.argmax(scores, axis=-1), tf.shape(scores)[-1], dtype=scores.dtype)


def _sample_or_argmax(logits: tf.Tensor, noise: tf.Tensor | None) -> tf.Tensor:
    """One-hot of a Cat(softmax(logits)) draw by the Gumbel-max trick, or of argmax(logits)."""
    if noise is None:
        return _argmax_one_hot(logits)
    return _argmax_one_hot(logits + gumbel(noise[0]))


def onehot_st(logits, temperature, noise=None):
    """The study's straight-through one-hot neuron.

    Forward: D ~ Cat(softmax(logits / tau)) (stochastic) or one-hot of the argmax (deterministic).
    Backward: identity from D into softmax(logits / tau), then through the softmax.
    """
    soft = tf.nn.softmax(logits / temperature)
    return straight_through(soft, _sample_or_argmax(logits / temperature, noise))


def onehot_gumbel(logits, temperature, noise=None):
    """Straight-through Gumbel-Softmax (Jang, Gu & Poole 2016; Maddison, Mnih & Teh 2016).

    Forward: D = one_hot(argmax(logits + g)), so D ~ Cat(softmax(logits)) whatever tau is.
    Backward: through y = softmax((logits + g) / tau). Deterministic: as `onehot_st`.
    """
    if noise is None:
        return onehot_st(logits, temperature)
    perturbed = logits + gumbel(noise[0])
    return straight_through(tf.nn.softmax(perturbed / temperature), _argmax_one_hot(perturbed))


def _conditional_gumbels(logits, hard, noise):
    """Perturbed logits z = logits + g drawn conditionally on argmax(z) being the index in `hard`.

    The maximum of logits + g is Gumbel with location logsumexp(logits) and sits at the chosen index;
    every other coordinate is a Gumbel(logits_i) truncated above at that maximum, drawn by inversion:
    z_i = -log(exp(-top) + exp(-logits_i) * E_i) with E_i = -log u_i exponential.
    """
    # The maximum takes the uniform at the chosen index, which no truncated draw uses: sharing another
    # position's uniform would correlate that position with the maximum.
    chosen_uniform = tf.reduce_sum(hard * noise, axis=-1, keepdims=True)
    top = tf.reduce_logsumexp(logits, axis=-1, keepdims=True) + gumbel(chosen_uniform)
    log_exponential = tf.math.log(-tf.math.log(tf.maximum(noise, _TINY)))
    below = -tf.reduce_logsumexp(
        tf.stack([tf.broadcast_to(-top, tf.shape(noise)), log_exponential - logits]), axis=0
    )
    return hard * top + (1.0 - hard) * below


def onehot_gumbel_rao(logits, temperature, noise=None, samples: int = 10):
    """Gumbel-Rao straight-through (Paulus, Maddison & Krause 2021, "Rao-Blackwellizing the
    straight-through Gumbel-Softmax gradient estimator").

    Forward: D = one_hot(argmax(logits + g)) ~ Cat(softmax(logits)); `noise` holds 1 + `samples` draws.
    Backward: the average over K = `samples` conditional draws g_k ~ (g | D) of the ST-Gumbel gradient,
    i.e. through mean_k softmax((logits + sg(g_k)) / tau). K = 1 is ST-Gumbel-Softmax in distribution.
    Deterministic: as `onehot_st`.
    """
    if noise is None:
        return onehot_st(logits, temperature)
    hard = _sample_or_argmax(logits, noise)
    # The conditional noise is a constant, as in ST-Gumbel: the gradient is the softmax Jacobian at each
    # conditional sample, not a derivative through the truncated-Gumbel sampler.
    conditional_noise = tf.stop_gradient(_conditional_gumbels(logits, hard, noise[1 : 1 + samples]) - logits)
    surrogate = tf.reduce_mean(tf.nn.softmax((logits + conditional_noise) / temperature), axis=0)
    return straight_through(surrogate, hard)


def onehot_gst(logits, temperature, noise=None, gap: float = 1.0):
    """Gapped straight-through (Fan et al. 2022, "Training discrete deep generative models via
    gapped straight-through estimator").

    Forward: D ~ Cat(softmax(logits)) (stochastic) or the argmax. Backward: through
    p = softmax((logits + sg(m)) / tau), where the constant shift m raises the chosen logit to the
    maximum and lowers every other logit that is within `gap` of it to exactly max - gap, so the soft
    output agrees with D by a margin without sampling noise in the gradient.
    """
    hard = _sample_or_argmax(logits, noise)
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    raised = logits + hard * (top - logits)
    lowered = (1.0 - hard) * tf.nn.relu(raised - (top - gap))
    shift = tf.stop_gradient(raised - logits - lowered)
    return straight_through(tf.nn.softmax((logits + shift) / temperature), hard)


def onehot_reinmax(logits, temperature, noise=None):
    """ReinMax (Liu et al. 2023, "Bridging discrete and backpropagation: straight-through and beyond").

    Forward: D ~ Cat(pi), pi = softmax(logits) (stochastic) or the argmax. Backward, with upstream
    gradient g and pi1 = (softmax(logits / tau) + D) / 2, a second-order (Heun) estimate:
        grad = 2 [pi1 * g - pi1 (pi1 . g)] - 1/2 [pi * g - pi (pi . g)],  then centred over the d logits.
    Needs tau >= 1; callers check that (`stn_cli.registry.MIN_TEMPERATURE`).
    """
    hard = _sample_or_argmax(logits, noise)
    return _reinmax(logits, hard, tf.convert_to_tensor(temperature, logits.dtype))


@tf.custom_gradient
def _reinmax(logits, hard, temperature):
    def grad(upstream):
        def softmax_vjp(p):
            return p * upstream - p * tf.reduce_sum(p * upstream, axis=-1, keepdims=True)

        pi = tf.nn.softmax(logits)
        pi1 = 0.5 * (tf.nn.softmax(logits / temperature) + hard)
        g = 2.0 * softmax_vjp(pi1) - 0.5 * softmax_vjp(pi)
        return g - tf.reduce_mean(g, axis=-1, keepdims=True), tf.zeros_like(hard), tf.zeros_like(temperature)

    return tf.identity(hard), grad


#: One-hot gradient estimators by name; `stn_cli.registry.ESTIMATOR_NAMES` lists the same names.
ESTIMATORS: dict[str, Callable] = {
    "st": onehot_st,
    "gumbel": onehot_gumbel,
    "gumbel-rao": onehot_gumbel_rao,
    "gst": onehot_gst,
    "reinmax": onehot_reinmax,
}


def onehot(
    x: tf.Tensor,
    dims: int,
    temperature=1.0,
    noise: tf.Tensor | None = None,
    estimator: str = "st",
    samples: int = 10,
    gap: float = 1.0,
) -> tf.Tensor:
    """One-hot neurons over the last axis of x, read as consecutive groups of `dims` logits.

    x has shape (..., groups * dims); so has the output, one one-hot vector per group. `noise` has shape
    (draws, ..., groups, dims) with draws from `onehot_noise_draws`. `estimator` names the gradient
    estimator (see `ESTIMATORS`); `samples` is Gumbel-Rao's K and `gap` the GST margin.
    """
    shape = tf.shape(x)
    logits = tf.reshape(x, tf.concat([shape[:-1], [shape[-1] // dims, dims]], axis=0))
    function = ESTIMATORS[estimator]
    options = {"gumbel-rao": {"samples": samples}, "gst": {"gap": gap}}.get(estimator, {})
    return tf.reshape(function(logits, temperature, noise, **options), shape)


def onehot_noise_draws(estimator: str, samples: int = 10) -> int:
    """How many uniform draws per logit `onehot` consumes with this estimator."""
    return 1 + samples if estimator == "gumbel-rao" else 1
