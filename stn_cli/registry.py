"""The one place that maps neuron and estimator names to what they are. Imports no TensorFlow, so the
CLI's option checking, the YAML loader and the plotter can use it without paying TensorFlow's start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class NeuronKind:
    name: str
    summary: str
    discrete: bool  # outputs a decision: stochastic/deterministic and annealing mean something
    onehot: bool = False  # a neuron is a group of `dims` units


NEURONS: dict[str, NeuronKind] = {
    kind.name: kind
    for kind in (
        NeuronKind("tanh", "real-valued tanh baseline", discrete=False),
        NeuronKind("sigmoid", "real-valued sigmoid baseline", discrete=False),
        NeuronKind("binary", "{0,1}: sigmoid(slope*x), rounded or Bernoulli-sampled", discrete=True),
        NeuronKind("ternary", "{-1,0,1}: the study's 1.5tanh(x)+0.5tanh(-3x), rounded or sampled", discrete=True),
        NeuronKind("nary", "{0..levels-1}: a sum-of-sigmoids staircase, rounded or sampled", discrete=True),
        NeuronKind("onehot", "one-hot over groups of dims logits: softmax(z/T), sampled or argmax", discrete=True, onehot=True),
    )
}

#: One-hot gradient estimators; their math lives in `stn_cli.neurons.ESTIMATORS` under the same names.
ESTIMATOR_NAMES: tuple[str, ...] = ("st", "gumbel", "gumbel-rao", "gst", "reinmax")

#: The only estimator with a temperature floor (ReinMax's second-order step needs tau >= 1).
MIN_TEMPERATURE = {"reinmax": 1.0}


def choose(kind: str, name: str, valid) -> str:
    """Return `name` if it is one of `valid`, else raise an error that lists the valid names."""
    if name not in valid:
        raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(valid)}")
    return name


def neuron(name: str) -> NeuronKind:
    return NEURONS[choose("neuron", name, NEURONS)]
