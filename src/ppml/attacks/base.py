"""What every attack shares: an explicit threat model, and results that keep ground truth apart.

An attack is built with a :class:`ThreatModel` naming what the adversary observes. It refuses to
run when the target does not expose what the threat model needs (``ThreatModelError``). It returns
an :class:`AttackResult` holding the adversary's *scores* or *guesses*; ground truth is passed only
to a scorer (for example :func:`ppml.attacks.metrics.score_membership`), which returns a copy of the
result with metrics filled in. Ground truth is "for analysis only": the attack never sees it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["Access", "ThreatModel", "ThreatModelError", "AttackResult", "Attack"]


class Access(str, enum.Enum):
    """One kind of observation an adversary may be granted."""

    LABELS = "labels"  # top-1 predicted labels only
    CONFIDENCES = "confidences"  # the predicted probability vector
    LOGITS = "logits"
    LOSS = "loss"  # the loss on a labelled example (needs the true label of the query)
    PARAMETERS = "parameters"  # white box: the trained weights
    CLIENT_UPDATE = "client_update"  # one client's model update (a federated server or eavesdropper)
    RELEASED_TABLE = "released_table"  # a released (pseudonymised) dataset
    POOLED_LOGS = "pooled_logs"  # raw records collected centrally (location, time, pseudonymous id)


class ThreatModelError(ValueError):
    """The attack needs an observation that the threat model or the target does not grant."""


@dataclass(frozen=True)
class ThreatModel:
    """What the adversary sees, and (for the report) who it is.

    Parameters
    ----------
    access : frozenset of Access
        The observations granted.
    adversary : str
        A short description ("curious server", "API client", "holder of the pooled logs").
    auxiliary : str
        What side knowledge the adversary brings ("population data from the same distribution").
    """

    access: frozenset[Access]
    adversary: str = ""
    auxiliary: str = ""

    @classmethod
    def of(cls, *access: Access | str, adversary: str = "", auxiliary: str = "") -> ThreatModel:
        return cls(frozenset(Access(a) for a in access), adversary, auxiliary)

    def require(self, attack: str, *needed: Access) -> None:
        """Raise :class:`ThreatModelError` unless every observation in ``needed`` is granted."""
        missing = [a.value for a in needed if a not in self.access]
        if missing:
            granted = ", ".join(sorted(a.value for a in self.access)) or "nothing"
            raise ThreatModelError(
                f"{attack} needs {', '.join(missing)} but the threat model grants only {granted}."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "access": sorted(a.value for a in self.access),
            "adversary": self.adversary,
            "auxiliary": self.auxiliary,
        }


@dataclass(frozen=True, eq=False)
class AttackResult:
    """The output of an attack.

    ``scores`` holds one number per target (higher means "more likely a member" for membership,
    or a distance/error for reconstruction); ``guesses`` holds reconstructed values where the
    attack produces them. ``metrics`` is empty until a scorer that holds the ground truth fills
    it in. ``seconds`` is the attack's wall time.
    """

    attack: str
    threat_model: ThreatModel
    scores: np.ndarray | None = None
    guesses: Any = None
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def with_metrics(self, **metrics: float) -> AttackResult:
        merged = dict(self.metrics)
        merged.update({k: float(v) for k, v in metrics.items()})
        return replace(self, metrics=merged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-target scores, no ground truth)."""
        return {
            "attack": self.attack,
            "threat_model": self.threat_model.to_dict(),
            "metrics": dict(self.metrics),
            "details": {k: v for k, v in self.details.items() if _jsonable(v)},
            "seconds": round(self.seconds, 4),
        }


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, tuple, dict))


class Attack:
    """Base class: ``fit(auxiliary) -> self`` then ``run(observations) -> AttackResult``.

    Subclasses set ``name`` and ``requires`` (the observations they need) and implement
    :meth:`run`. Parameters are stored as given in ``__init__`` (scikit-learn style); learned state
    ends in ``_``.
    """

    name: str = "attack"
    requires: tuple[Access, ...] = ()

    def __init__(self, threat_model: ThreatModel) -> None:
        self.threat_model = threat_model
        threat_model.require(self.name, *self.requires)

    def fit(self, auxiliary: Any = None) -> Attack:
        return self

    def run(self, observations: Any) -> AttackResult:  # pragma: no cover - abstract
        raise NotImplementedError
