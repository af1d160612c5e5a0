"""Differential privacy: noise mechanisms and privacy accounting on dp-accounting.

* :mod:`ppml.dp.mechanisms`: :class:`GaussianMechanism`, :class:`LaplaceMechanism`,
  :class:`DiscreteGaussianMechanism` (each knows its sensitivity and its DP event; ``secure=True``
  for deployment).
* :mod:`ppml.dp.accounting`: :class:`PrivacyAccountant` (RDP or PLD, ledger, budget),
  :func:`compute_epsilon`, :func:`calibrate_noise_multiplier`, :func:`poisson_gaussian_event`.
* :mod:`ppml.dp.dpsgd`: :class:`DPSGD` (Poisson sampling; flat, ghost and per-layer clipping; virtual
  steps; shuffled batches only with a warning); :mod:`ppml.dp.ghost`: book-keeping clipping for Linear,
  Conv2d, Embedding, LayerNorm, GroupNorm.
* :mod:`ppml.dp.pate`: PATE aggregators (LNMax, GNMax, Confident-/Interactive-GNMax), data-independent
  and data-dependent RDP, :class:`~ppml.dp.pate.PATEAccountant`, smooth-sensitivity release.
"""

from . import pate
from .accounting import (
    BudgetExceededError,
    LedgerEntry,
    PrivacyAccountant,
    UnsupportedEventError,
    calibrate_noise_multiplier,
    compute_epsilon,
    event_from_dict,
    event_to_dict,
    poisson_gaussian_event,
)
from .dpsgd import (
    CLIPPING_METHODS,
    DPSGD,
    SAMPLING_METHODS,
    ClippedSum,
    check_dp_model,
    clipped_gradient_sum,
    layer_clip_norms,
    per_sample_gradients,
)
from .mechanisms import (
    DiscreteGaussianMechanism,
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    PrivacyWarning,
)

__all__ = [
    "pate",
    "CLIPPING_METHODS",
    "DPSGD",
    "SAMPLING_METHODS",
    "ClippedSum",
    "check_dp_model",
    "clipped_gradient_sum",
    "layer_clip_norms",
    "per_sample_gradients",
    "BudgetExceededError",
    "DiscreteGaussianMechanism",
    "GaussianMechanism",
    "LaplaceMechanism",
    "LedgerEntry",
    "Mechanism",
    "PrivacyAccountant",
    "PrivacyWarning",
    "UnsupportedEventError",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "event_from_dict",
    "event_to_dict",
    "poisson_gaussian_event",
]
