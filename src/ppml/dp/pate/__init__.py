"""PATE: private aggregation of teacher ensembles (Papernot et al. 2017, 2018).

* :mod:`ppml.dp.pate.aggregators`: :func:`votes_from_predictions` and the noisy aggregators
  :class:`LNMax`, :class:`GNMax`, :class:`ConfidentGNMax`, :class:`InteractiveGNMax`, whose
  ``answer`` returns :class:`Answers` (labels, and what each query cost).
* :mod:`ppml.dp.pate.analysis`: per-query data-independent and data-dependent Renyi DP,
  :class:`PATEAccountant` (budget on the data-independent epsilon), RDP-to-epsilon conversions and
  the smooth-sensitivity release of the data-dependent epsilon.
"""

from .aggregators import (
    Answers,
    ConfidentGNMax,
    GNMax,
    InteractiveGNMax,
    LNMax,
    PATEBudgetExceededError,
    votes_from_predictions,
)
from .analysis import (
    CONVERSIONS,
    PATEAccountant,
    SmoothSensitivityRelease,
    best_order,
    epsilon_from_rdp,
    local_sensitivity_gnmax,
    local_sensitivity_threshold,
    log_pr_answered,
    log_q0_gnmax,
    log_q_gnmax,
    log_q_lnmax,
    rdp_gnmax_data_dependent,
    rdp_gnmax_data_independent,
    rdp_lnmax_data_dependent,
    rdp_lnmax_data_independent,
    rdp_smooth_sensitivity_release,
    rdp_threshold_data_dependent,
    rdp_threshold_data_independent,
    release_data_dependent_epsilon,
    smooth_sensitivity,
)
from .estimator import DEFAULT_RELEASE, PATE
from .student import AUGMENTATIONS, SEMI_SUPERVISED, PATEStudent
from .teachers import (
    TeacherEnsemble,
    check_no_overlap,
    check_partitions,
    overlap_mask,
    partition_by_owner,
    row_hashes,
    shifted_copies,
    train_teachers,
)

__all__ = [
    "PATE",
    "DEFAULT_RELEASE",
    "PATEStudent",
    "SEMI_SUPERVISED",
    "AUGMENTATIONS",
    "TeacherEnsemble",
    "check_no_overlap",
    "check_partitions",
    "overlap_mask",
    "partition_by_owner",
    "row_hashes",
    "shifted_copies",
    "train_teachers",
    "Answers",
    "ConfidentGNMax",
    "GNMax",
    "InteractiveGNMax",
    "LNMax",
    "PATEBudgetExceededError",
    "votes_from_predictions",
    "CONVERSIONS",
    "PATEAccountant",
    "SmoothSensitivityRelease",
    "best_order",
    "epsilon_from_rdp",
    "local_sensitivity_gnmax",
    "local_sensitivity_threshold",
    "log_pr_answered",
    "log_q0_gnmax",
    "log_q_gnmax",
    "log_q_lnmax",
    "rdp_gnmax_data_dependent",
    "rdp_gnmax_data_independent",
    "rdp_lnmax_data_dependent",
    "rdp_lnmax_data_independent",
    "rdp_smooth_sensitivity_release",
    "rdp_threshold_data_dependent",
    "rdp_threshold_data_independent",
    "release_data_dependent_epsilon",
    "smooth_sensitivity",
]
