"""The one configuration object. `stn train` flags and an `experiments.yaml` entry both become a
`RunConfig` through `RunConfig.from_mapping`, which rejects unknown keys and wrong types by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from . import registry
from .errors import ConfigError

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "mnist-5k")

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str, what: str = "name") -> str:
    """A run or experiment name becomes a folder name: letters, digits, '.', '_' and '-' only."""
    if not _SAFE_NAME.fullmatch(name) or len(name) > 100:
        raise ConfigError(
            f"{what} {name!r} is not a safe folder name (letters, digits, '.', '_', '-'; at most 100; no path separators)"
        )
    return name


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a training run computes. Defaults are the study's protocol."""

    neuron: str = "tanh"
    hidden: int = 100  # neurons; a one-hot neuron is `dims` units wide
    dims: int = 5  # one-hot: logits per neuron
    levels: int = 3  # nary: number of output levels
    spacing: float = 6.0  # nary: distance between step centres (see neurons.staircase)
    estimator: str = "st"  # one-hot gradient estimator
    samples: int = 10  # gumbel-rao: conditional samples K
    gap: float = 1.0  # gst: margin of the chosen logit
    slope: float = 1.0  # initial slope; one-hot temperature = 1 / slope
    anneal: float = 1.0  # slope *= anneal after every epoch (the study's schedule)
    anneal_rate: float = 0.0  # or: temperature = max(min_temperature, exp(-anneal_rate * step) / slope)
    min_temperature: float = 0.5  # floor of the per-step schedule
    stochastic_train: bool = True
    stochastic_eval: bool = False
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 20
    steps_per_epoch: int = 1000
    batch_size: int = 50
    lr: float = 0.1  # on the study's loss, sum over the batch of mean-over-classes cross-entropy
    eval_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        kind = registry.neuron(self.neuron)
        registry.choose("estimator", self.estimator, registry.ESTIMATOR_NAMES)
        registry.choose("dataset", self.dataset, DATASETS)
        for name, low in (
            ("hidden", 1), ("dims", 2), ("levels", 2), ("samples", 1), ("epochs", 1),
            ("steps_per_epoch", 1), ("batch_size", 1), ("eval_every", 1), ("seed", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        for name in ("spacing", "slope", "lr", "anneal", "min_temperature"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.anneal_rate) and self.anneal_rate >= 0):
            raise ConfigError(f"anneal_rate must be >= 0, got {self.anneal_rate}")
        if self.gap < 0:
            raise ConfigError(f"gap must be >= 0, got {self.gap}")
        if self.anneal != 1.0 and self.anneal_rate > 0:
            raise ConfigError("choose one annealing schedule: anneal (per epoch) or anneal_rate (per step), not both")
        if not kind.discrete and self.anneals:
            raise ConfigError(f"neuron {self.neuron!r} has no slope to anneal; annealing applies to discrete neurons")
        floor = registry.MIN_TEMPERATURE.get(self.estimator, 0.0) if kind.onehot else 0.0
        if self.lowest_temperature < floor:
            raise ConfigError(
                f"estimator {self.estimator!r} needs temperature >= {floor:g} throughout training, "
                f"but this schedule reaches {self.lowest_temperature:.3g}"
            )

    @property
    def anneals(self) -> bool:
        return self.anneal != 1.0 or self.anneal_rate > 0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def units(self) -> int:
        """Width of the hidden layer in units (a one-hot neuron has `dims` of them)."""
        return self.hidden * self.dims if registry.neuron(self.neuron).onehot else self.hidden

    def slope_at(self, step: int) -> float:
        """The slope the network trains with at `step` (one-hot temperature is its inverse)."""
        if self.anneal_rate > 0:
            return 1.0 / max(self.min_temperature, math.exp(-self.anneal_rate * step) / self.slope)
        return self.slope * self.anneal ** (step // self.steps_per_epoch)

    @property
    def lowest_temperature(self) -> float:
        return min(1.0 / self.slope_at(0), 1.0 / self.slope_at(self.total_steps - 1))

    def describe(self) -> str:
        """A short human label, e.g. 'onehot 100x5 st' or 'nary 100 L4'."""
        kind = registry.neuron(self.neuron)
        label = f"{self.neuron} {self.hidden}"
        if kind.onehot:
            label += f"x{self.dims} {self.estimator}"
        if self.neuron == "nary":
            label += f" L{self.levels}"
        return label

    def default_name(self) -> str:
        return check_name(self.describe().replace(" ", "-") + f"-seed{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A hash of everything that decides the result, so a changed config never reuses a run."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "config") -> "RunConfig":
        """Build a config from YAML or flag values, naming `where` and the field in any error."""
        checked = check_fields(values, where)
        try:
            return cls(**checked)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None


def _expected_type(field: dataclasses.Field) -> tuple[type, ...]:
    annotation = str(field.type)
    if annotation.startswith("bool"):
        return (bool,)
    if annotation.startswith("int"):
        return (int,)
    if annotation.startswith("float"):
        return (int, float)
    return (str,)


def check_fields(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check keys and value types against `RunConfig`; return the values with YAML-isms removed."""
    known = {field.name: field for field in fields(RunConfig)}
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown field {key!r}; valid fields: {', '.join(known)}")
        field = known[key]
        optional = "None" in str(field.type)
        if value is None and optional:
            checked[key] = None
            continue
        expected = _expected_type(field)
        # bool is an int subclass in Python; `hidden: true` must not pass as 1.
        if isinstance(value, bool) and bool not in expected or not isinstance(value, expected):
            names = " or ".join(t.__name__ for t in expected)
            raise ConfigError(f"{where}: field {key!r} must be {names}, got {value!r}")
        checked[key] = float(value) if float in expected else value
    return checked
