"""stn: explicit discrete neurons trained with the straight-through estimator."""

__version__ = "0.1.0"
