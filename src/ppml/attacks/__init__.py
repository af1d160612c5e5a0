"""Attacks as audits: what an adversary with an explicit threat model learns from a model or its data.

Every attack is built with a :class:`ThreatModel`, returns an :class:`AttackResult` of scores or
guesses, and never sees ground truth; scorers such as :func:`score_membership` hold it.
"""

from .base import Access, Attack, AttackResult, ThreatModel, ThreatModelError
from .deanonymization import (
    NO_MATCH,
    AuxiliaryRatings,
    ReleasedRatings,
    Scoreboard,
    make_auxiliary,
    make_sparse_ratings,
    release_ratings,
    score_reidentification,
)
from .defences import RoundedConfidences, secure_aggregate_view
from .gradients import (
    DLG,
    AnalyticFCInversion,
    ClientUpdate,
    InvertingGradients,
    infer_labels,
    score_location_recovery,
    score_reconstruction,
    simulate_client_update,
)
from .image_metrics import psnr, ssim
from .inversion import (
    DenoiseSharpen,
    IdentityEvaluator,
    ModelInversion,
    PredictionAPI,
    normalized_cross_correlation,
    score_inversion,
    zscore_images,
)
from .label_only import LabelOnlyAttack
from .lira import LiRA, lira_scores
from .location import HomeInference, TraceReidentification, make_sightings, score_home_inference, top_places
from .membership import (
    LossObservations,
    LossThresholdAttack,
    ModelAPI,
    TargetQueries,
    aggregate_by_owner,
    count_overlap,
    logit_scaled_confidence,
    membership_audit,
    owner_membership,
    per_example_loss,
    run_membership_audit,
)
from .metrics import (
    advantage,
    auc,
    auc_bootstrap_ci,
    clopper_pearson,
    plot_roc,
    roc_curve,
    score_membership,
    tpr_at_fpr,
    tpr_at_fpr_ci,
)
from .rmia import RMIA, rmia_scores
from .shadow import ShadowModelAttack, ShadowModels
from .stored import StoredVectorExtraction, register_extractor, row_hashes, score_extraction

# Other attack families (inversion, gradients, ...) add their exports here.

__all__ = [
    # base types
    "Access",
    "Attack",
    "AttackResult",
    "ThreatModel",
    "ThreatModelError",
    # de-anonymisation
    "NO_MATCH",
    "AuxiliaryRatings",
    "ReleasedRatings",
    "Scoreboard",
    "make_auxiliary",
    "make_sparse_ratings",
    "release_ratings",
    "score_reidentification",
    # defences as views of the target
    "RoundedConfidences",
    "secure_aggregate_view",
    # reconstruction from client updates
    "AnalyticFCInversion",
    "ClientUpdate",
    "DLG",
    "InvertingGradients",
    "infer_labels",
    "score_location_recovery",
    "score_reconstruction",
    "simulate_client_update",
    "psnr",
    "ssim",
    # model inversion
    "DenoiseSharpen",
    "IdentityEvaluator",
    "ModelInversion",
    "PredictionAPI",
    "normalized_cross_correlation",
    "score_inversion",
    "zscore_images",
    # stored training vectors
    "StoredVectorExtraction",
    "register_extractor",
    "row_hashes",
    "score_extraction",
    # location
    "HomeInference",
    "TraceReidentification",
    "make_sightings",
    "score_home_inference",
    "top_places",
    # membership inference
    "LossObservations",
    "LossThresholdAttack",
    "membership_audit",
    "per_example_loss",
    "LabelOnlyAttack",
    "LiRA",
    "lira_scores",
    "ModelAPI",
    "TargetQueries",
    "aggregate_by_owner",
    "count_overlap",
    "logit_scaled_confidence",
    "owner_membership",
    "run_membership_audit",
    "RMIA",
    "rmia_scores",
    "ShadowModelAttack",
    "ShadowModels",
    # metrics
    "advantage",
    "auc",
    "auc_bootstrap_ci",
    "clopper_pearson",
    "plot_roc",
    "roc_curve",
    "score_membership",
    "tpr_at_fpr",
    "tpr_at_fpr_ci",
]
