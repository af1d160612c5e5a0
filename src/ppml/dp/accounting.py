"""Privacy accounting on dp-accounting: compose DP events, report epsilon, keep a ledger, refuse overspending.

ppml never computes a privacy loss itself. Every cost is a :class:`dp_accounting.DpEvent` (immutable,
self-describing) and every epsilon comes from one of dp-accounting's accountants:

``"rdp"``
    Renyi DP over :data:`RDP_ORDERS`: each event's RDP curve is computed by
    :class:`dp_accounting.rdp.RdpAccountant` (and cached, so a per-step :meth:`PrivacyAccountant.charge`
    costs about 0.02 ms), curves add under composition exactly as in ``RdpAccountant.compose``, and the total is
    converted by ``dp_accounting.rdp.compute_epsilon``. The RDP curve is converted to
    (epsilon, delta) with the conversion that dp-accounting 0.6 uses (:data:`RDP_CONVERSION`):
    ``epsilon = min_a [ rdp(a) + log1p(-1/a) - log(delta * a) / (a - 1) ]`` (Balle, Barthe, Gaboardi,
    Hsu and Sato 2020, Thm. 21; Canonne, Kamath and Steinke 2020, Prop. 12; Asoodeh et al. 2021), not
    the older ``rdp(a) - log(delta) / (a - 1)`` (Mironov 2017, Prop. 3) with which the TF Privacy and
    Opacus tutorials published their numbers (3.01 instead of 2.60 for the MNIST setting below).
``"pld"``
    :class:`dp_accounting.pld.PLDAccountant`, a numerical privacy-loss-distribution accountant with
    pessimistic ("connect the dots") discretisation, ``value_discretization_interval`` =
    :data:`PLD_VALUE_DISCRETIZATION_INTERVAL` (1e-4, dp-accounting's default) unless given. The
    accountant keeps the events composed so far (equal events merged with their counts) and builds the
    PLD when an epsilon is asked for, each distinct event self-composed once (about 0.5 s for the
    MNIST setting below), so charging one event per step costs a count, not a convolution.

Reference numbers (N = 60,000, batch 256, so q = 256/60000; sigma = 1.1; 60 epochs counted as
``steps = ceil(60 * 60000 / 256) = 14063``; delta = 1e-5): RDP 2.597, PLD 2.382. The PLD value takes
about 0.3 s on one CPU core at the default interval (a 1e-3 interval: 0.03 s and 2.391).

Noise multipliers follow dp-accounting's event definitions: a :class:`~dp_accounting.GaussianDpEvent`
with noise multiplier ``z`` adds noise of standard deviation ``z * C`` to a sum whose records each
contribute at most ``C`` in L2 norm, i.e. ``C`` is the *add-or-remove* sensitivity. Under
``neighbouring="replace_one"`` one record can move such a sum by ``2 C``; the PLD accountant accounts
for that, while dp-accounting 0.6's RDP accountant reads Gaussian, Laplace and sampled-without-
replacement events under replace-one as if the noise multiplier were relative to the replace-one
sensitivity. An ``"rdp"`` accountant with ``neighbouring="replace_one"`` therefore refuses those events
(:class:`UnsupportedEventError`) instead of under-reporting epsilon by the factor-of-two sensitivity.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import attr
import dp_accounting
import numpy as np
from dp_accounting import dp_event as _dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp import compute_epsilon as _rdp_compute_epsilon
from dp_accounting.rdp.rdp_privacy_accountant import DEFAULT_RDP_ORDERS

from .._validation import (
    NONNEG_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    UNIT_LEFT_OPEN,
    UNIT_OPEN,
    Interval,
    Options,
    ParameterError,
    check_param,
)


class _DropNonConvergedOrders(logging.Filter):
    """dp-accounting logs one warning per RDP order whose series fails to converge (small orders at
    large q and small z) and then drops that order, which can only make epsilon larger (conservative).
    Calibration visits many noise multipliers, so these warnings would flood a terminal; they are
    dropped here and the behaviour is documented instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropNonConvergedOrders())

__all__ = [
    "ACCOUNTANTS",
    "NEIGHBOURING_RELATIONS",
    "PLD_VALUE_DISCRETIZATION_INTERVAL",
    "RDP_CONVERSION",
    "RDP_ORDERS",
    "BudgetExceededError",
    "LedgerEntry",
    "PrivacyAccountant",
    "UnsupportedEventError",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "event_from_dict",
    "event_to_dict",
    "poisson_gaussian_event",
]

ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld")
"""Accountant names accepted wherever ``accountant=`` is a parameter."""

NEIGHBOURING_RELATIONS: dict[str, dp_accounting.NeighboringRelation] = {
    "add_or_remove": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
}
"""ppml's names for dp-accounting's neighbouring relations."""

RDP_ORDERS: tuple[float, ...] = tuple(
    sorted(
        set(DEFAULT_RDP_ORDERS)
        | {round(1 + k / 100, 2) for k in range(1, 10)}  # near 1: large epsilons
        | {72, 80, 96, 112, 160, 192, 384, 768, 2048}  # large orders: small epsilons
    )
)
"""RDP orders of the ``"rdp"`` accountant: dp-accounting's defaults (1.1 to 10.9 in steps of 0.1,
11 to 63, 128, 256, 512, 1024) plus 1.01 to 1.09 and extra large orders up to 2048. Composing one
Poisson-sampled Gaussian event over all of them takes about 30 to 60 ms. Below epsilon of about 0.01
the largest order limits the RDP bound; use ``"pld"`` there."""

RDP_CONVERSION = (
    "RDP to (epsilon, delta) by eps = min_a[rdp(a) + log1p(-1/a) - log(delta*a)/(a-1)] "
    "(Balle et al. 2020 Thm 21; Canonne-Kamath-Steinke 2020 Prop 12), as in dp-accounting "
    "rdp.compute_epsilon"
)
"""The RDP-to-(epsilon, delta) conversion used by dp-accounting 0.6 (``to_dict()["conversion"]``)."""

PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-4
"""Default ``value_discretization_interval`` of the ``"pld"`` accountant (dp-accounting's default).
Coarser intervals are faster and more pessimistic: for the MNIST setting 1e-4 gives 2.382 in
about 0.3 s, 1e-3 gives 2.391 in 0.03 s, 1e-2 gives 3.14."""

_PLD_CONVERSION_TEMPLATE = (
    "PLD (numerical privacy loss distribution, pessimistic connect-the-dots discretisation, "
    "value_discretization_interval={interval:g}); epsilon read off the hockey-stick divergence"
)

# Events whose noise multiplier dp-accounting 0.6's RDP accountant reads relative to the replace-one
# sensitivity (or composes identically to add-or-remove) under NeighboringRelation.REPLACE_ONE.
_RDP_REPLACE_ONE_MISREAD = (
    _dp_event.GaussianDpEvent,
    _dp_event.LaplaceDpEvent,
    _dp_event.SampledWithoutReplacementDpEvent,
)


class BudgetExceededError(RuntimeError):
    """Composing an event would take epsilon past the accountant's ``budget_epsilon``.

    Raised *before* anything is composed: the accountant and its ledger are unchanged.
    """


class UnsupportedEventError(dp_accounting.UnsupportedEventError):
    """The accountant cannot account for this event under its neighbouring relation.

    ppml raises rather than approximate. Subclasses :class:`dp_accounting.UnsupportedEventError`.
    """


@dataclass(frozen=True)
class LedgerEntry:
    """One composed event in a :class:`PrivacyAccountant`'s ledger.

    Attributes
    ----------
    label : str
        What spent the budget (``"DP-SGD epoch 3"``, ``"DP-FedAvg round"``).
    event : dict
        The :class:`dp_accounting.DpEvent` as a JSON-able dict (:func:`event_to_dict`); rebuild it
        with :func:`event_from_dict`.
    count : int
        How many times the event was composed.
    params : dict
        The parameters behind the event, as the caller stated them (for example
        ``{"sampling_rate": q, "noise_multiplier": z, "steps": T, "sampling": "poisson"}``); JSON-able.
    """

    label: str
    event: dict[str, Any]
    count: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "event": self.event, "count": self.count, "params": self.params}


# ---------------------------------------------------------------------------------------------
# events <-> JSON


def _jsonable(value: Any, where: str) -> Any:
    """``value`` with numpy scalars/arrays turned into Python ones; raise if it is not JSON-able."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v, where) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ParameterError(
        f"The '{where}' parameter of PrivacyAccountant.spend must be JSON-able "
        f"(numbers, strings, lists, dicts). Got {value!r} instead.",
        param=where,
    )


def event_to_dict(event: dp_accounting.DpEvent) -> dict[str, Any]:
    """A JSON-able dict describing ``event``: ``{"class_name": ..., <its fields>}``, nested events as dicts.

    Examples
    --------
    >>> event_to_dict(poisson_gaussian_event(1.1, 0.01))
    {'class_name': 'PoissonSampledDpEvent', 'sampling_probability': 0.01, 'event': {'class_name': 'GaussianDpEvent', 'noise_multiplier': 1.1}}
    """
    if not isinstance(event, dp_accounting.DpEvent):
        raise TypeError(f"expected a dp_accounting.DpEvent, got {type(event).__name__}")

    def convert(value: Any) -> Any:
        if isinstance(value, dp_accounting.DpEvent):
            return event_to_dict(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    out: dict[str, Any] = {"class_name": type(event).__name__}
    for f in attr.fields(type(event)):
        out[f.name] = convert(getattr(event, f.name))
    return out


def event_from_dict(data: Mapping[str, Any]) -> dp_accounting.DpEvent:
    """Rebuild the :class:`dp_accounting.DpEvent` that :func:`event_to_dict` described."""
    name = data.get("class_name")
    cls = getattr(_dp_event, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, dp_accounting.DpEvent)):
        raise ParameterError(
            f"The 'class_name' of an event dict must name a dp_accounting DpEvent class. Got {name!r} instead.",
            param="class_name",
        )

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping) and "class_name" in value:
            return event_from_dict(value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return cls(**{k: convert(v) for k, v in data.items() if k != "class_name"})


# ---------------------------------------------------------------------------------------------
# accountants


def _library_accountant(
    accountant: str, neighbouring: str, value_discretization_interval: float
) -> dp_accounting.PrivacyAccountant:
    relation = NEIGHBOURING_RELATIONS[neighbouring]
    if accountant == "rdp":
        return RdpAccountant(RDP_ORDERS, neighboring_relation=relation)
    return PLDAccountant(relation, value_discretization_interval=value_discretization_interval)


def _misread_subevent(event: dp_accounting.DpEvent) -> dp_accounting.DpEvent | None:
    """The first sub-event the RDP accountant would misread under replace-one, or None."""
    if isinstance(event, _RDP_REPLACE_ONE_MISREAD):
        return event
    if isinstance(event, _dp_event.SelfComposedDpEvent | _dp_event.RepeatAndSelectDpEvent):
        return _misread_subevent(event.event)
    if isinstance(event, _dp_event.ComposedDpEvent):
        for e in event.events:
            bad = _misread_subevent(e)
            if bad is not None:
                return bad
    return None


def _check_supported(event: Any, accountant: str, neighbouring: str) -> None:
    """Refuse what ppml will not account for (before the library's own checks in :func:`_compose`)."""
    if not isinstance(event, dp_accounting.DpEvent):
        raise TypeError(f"event must be a dp_accounting.DpEvent, got {type(event).__name__}")
    if accountant == "rdp" and neighbouring == "replace_one":
        bad = _misread_subevent(event)
        if bad is not None:
            raise UnsupportedEventError(
                f"The RDP accountant with neighbouring='replace_one' cannot account for {bad}: "
                "dp-accounting's RdpAccountant reads its noise multiplier relative to the replace-one "
                "sensitivity, while ppml (and dp-accounting's GaussianDpEvent definition and PLD "
                "accountant) read it relative to one record's contribution C, which a replacement can "
                "change by 2C; composing it would under-report epsilon. Use accountant='pld' for "
                "Gaussian events, or neighbouring='add_or_remove'."
            )


def _compose(
    acc: dp_accounting.PrivacyAccountant, event: Any, count: int, accountant: str, neighbouring: str
) -> dp_accounting.PrivacyAccountant:
    """``acc.compose(event, count)``, with ppml's refusals and a clear error for unsupported events."""
    _check_supported(event, accountant, neighbouring)
    try:
        return acc.compose(event, count)
    except dp_accounting.UnsupportedEventError as err:
        raise UnsupportedEventError(
            f"The {accountant.upper()} accountant with neighbouring={neighbouring!r} does not support "
            f"this event; ppml raises rather than approximate. {err}"
        ) from None


def _epsilon_of(acc: dp_accounting.PrivacyAccountant, delta: float) -> float:
    return _clean_epsilon(acc.get_epsilon(delta))


def _clean_epsilon(eps: Any) -> float:
    eps = float(eps)
    return math.inf if math.isnan(eps) else max(eps, 0.0)


_RDP_CACHE: dict[tuple[dp_accounting.DpEvent, str], np.ndarray] = {}
_RDP_CACHE_SIZE = 256


def _event_rdp(event: Any, neighbouring: str, *, cache: bool = True) -> np.ndarray:
    """The RDP curve (over :data:`RDP_ORDERS`) of one ``event``, computed by dp-accounting's RdpAccountant."""
    key = (event, neighbouring)
    try:
        hit = _RDP_CACHE.get(key) if cache else None
    except TypeError:  # events holding lists are unhashable
        hit, cache = None, False
    if hit is not None:
        return hit
    acc = _compose(_library_accountant("rdp", neighbouring, 1.0), event, 1, "rdp", neighbouring)
    rdp = acc.rdp
    rdp.setflags(write=False)
    if cache:
        if len(_RDP_CACHE) >= _RDP_CACHE_SIZE:
            _RDP_CACHE.clear()
        _RDP_CACHE[key] = rdp
    return rdp


class _RdpState:
    """RDP composition: the sum of the events' RDP curves (each from dp-accounting's RdpAccountant,
    exactly what ``RdpAccountant.compose`` adds), converted by ``dp_accounting.rdp.compute_epsilon``.
    Immutable: composing returns a new state; epsilon is computed once per delta and kept."""

    def __init__(self, neighbouring: str, rdp: np.ndarray | None = None) -> None:
        self.neighbouring = neighbouring
        self.rdp = np.zeros(len(RDP_ORDERS)) if rdp is None else rdp
        self._eps: dict[float, float] = {}

    def composed(self, event: Any, count: int, *, cache: bool = True) -> _RdpState:
        return _RdpState(
            self.neighbouring, self.rdp + count * _event_rdp(event, self.neighbouring, cache=cache)
        )

    def epsilon(self, delta: float) -> float:
        if delta not in self._eps:
            eps, _ = _rdp_compute_epsilon(RDP_ORDERS, self.rdp, delta)
            self._eps[delta] = _clean_epsilon(eps)
        return self._eps[delta]


_PLD_SUPPORTED: dict[tuple[Any, str], bool] = {}


class _PldState:
    """PLD composition by dp-accounting's PLDAccountant, built when an epsilon is asked for.

    The state is the multiset of events composed so far, ``((event, count), ...)`` in order of first
    appearance, equal events merged (composition commutes). ``epsilon`` composes each distinct event
    once with its total count (dp-accounting self-composes it by FFT), so a run of T identical steps
    costs one PLD, not T convolutions, and composing is free until an epsilon is needed. Immutable:
    composing returns a new state (a refused spend changes nothing).
    """

    def __init__(self, neighbouring: str, interval: float, terms: tuple[tuple[Any, int], ...] = ()) -> None:
        self.neighbouring = neighbouring
        self.interval = interval
        self.terms = terms
        self._eps: dict[float, float] = {}
        self._acc: dp_accounting.PrivacyAccountant | None = None

    def composed(self, event: Any, count: int, *, cache: bool = True) -> _PldState:
        _check_pld_supported(event, self.neighbouring, self.interval)
        terms = list(self.terms)
        for i, (e, c) in enumerate(terms):
            if e == event:
                terms[i] = (e, c + count)
                break
        else:
            terms.append((event, count))
        return _PldState(self.neighbouring, self.interval, tuple(terms))

    def library_accountant(self) -> dp_accounting.PrivacyAccountant:
        if self._acc is None:
            acc = _library_accountant("pld", self.neighbouring, self.interval)
            for event, count in self.terms:
                acc = _compose(acc, event, count, "pld", self.neighbouring)
            self._acc = acc
        return self._acc

    def epsilon(self, delta: float) -> float:
        if delta not in self._eps:
            self._eps[delta] = _epsilon_of(self.library_accountant(), delta) if self.terms else 0.0
        return self._eps[delta]


def _check_pld_supported(event: Any, neighbouring: str, interval: float) -> None:
    """Raise now, at composition, what building the PLD later would raise (cached per event)."""
    _check_supported(event, "pld", neighbouring)
    key = (event, neighbouring)
    try:
        known = _PLD_SUPPORTED.get(key)
    except TypeError:  # unhashable event
        known, key = None, None
    if known is None:
        known = bool(_library_accountant("pld", neighbouring, interval).supports(event))
        if key is not None:
            if len(_PLD_SUPPORTED) >= _RDP_CACHE_SIZE:
                _PLD_SUPPORTED.clear()
            _PLD_SUPPORTED[key] = known
    if not known:
        # Let dp-accounting say why, as an immediate compose would have.
        _compose(_library_accountant("pld", neighbouring, interval), event, 1, "pld", neighbouring)
        raise UnsupportedEventError(  # pragma: no cover - compose raised above
            f"The PLD accountant with neighbouring={neighbouring!r} does not support this event."
        )


class _EpsilonAfter:
    """Epsilon (at ``delta``) of one composition state, computed on the first call (picklable)."""

    __slots__ = ("state", "delta")

    def __init__(self, state: _RdpState | _PldState, delta: float) -> None:
        self.state, self.delta = state, delta

    def __call__(self) -> float:
        return self.state.epsilon(self.delta)


def _new_state(accountant: str, neighbouring: str, interval: float) -> _RdpState | _PldState:
    return _RdpState(neighbouring) if accountant == "rdp" else _PldState(neighbouring, interval)


class PrivacyAccountant:
    """Compose DP events with dp-accounting, keep a ledger, and refuse a spend that would exceed a budget.

    Parameters
    ----------
    accountant : {"rdp", "pld"}, default "rdp"
        Which dp-accounting accountant composes events (see the module docstring for the RDP orders,
        the RDP-to-(epsilon, delta) conversion and the PLD discretisation).
    delta : float in (0, 1), default 1e-5
        The delta at which :meth:`epsilon`, :meth:`spend` and the budget check report epsilon.
    budget_epsilon : float > 0 or None, default None
        If given, :meth:`spend` raises :class:`BudgetExceededError` before composing an event that
        would take epsilon (at ``delta``) above it.
    neighbouring : {"add_or_remove", "replace_one"}, default "add_or_remove"
        The neighbouring relation of the guarantee. Noise multipliers are always relative to one
        record's contribution bound (the add-or-remove sensitivity); see the module docstring for how
        replace-one is handled and which events each accountant refuses under it.
    value_discretization_interval : float > 0, default 1e-4
        PLD discretisation (ignored by ``"rdp"``). It trades speed for tightness, never soundness
        (the discretisation is pessimistic).

    Attributes
    ----------
    ledger : tuple of LedgerEntry
        Every composed event, in order.

    Privacy guarantee
    -----------------
    If every release of the protected data is described by an event passed to :meth:`spend`, the
    sequence of releases (adaptively composed) is (``epsilon()``, ``delta``)-DP under
    ``neighbouring``. The accountant cannot see releases it is not told about, nor check that an
    event's parameters (sampling rate, noise multiplier, number of steps) match what the code did;
    the ledger records the parameters so a reader can.

    Examples
    --------
    >>> acc = PrivacyAccountant("rdp", delta=1e-5)
    >>> eps = acc.spend(poisson_gaussian_event(1.1, 256 / 60000), label="DP-SGD", count=14063)
    >>> round(eps, 2)
    2.6
    """

    def __init__(
        self,
        accountant: str = "rdp",
        delta: float = 1e-5,
        budget_epsilon: float | None = None,
        *,
        neighbouring: str = "add_or_remove",
        value_discretization_interval: float = PLD_VALUE_DISCRETIZATION_INTERVAL,
    ) -> None:
        owner = type(self).__name__
        check_param("accountant", accountant, owner, Options(ACCOUNTANTS))
        check_param("delta", delta, owner, UNIT_OPEN)
        check_param("budget_epsilon", budget_epsilon, owner, POSITIVE_FLOAT, None)
        check_param("neighbouring", neighbouring, owner, Options(tuple(NEIGHBOURING_RELATIONS)))
        check_param("value_discretization_interval", value_discretization_interval, owner, POSITIVE_FLOAT)
        self.accountant = accountant
        self.delta = float(delta)
        self.budget_epsilon = None if budget_epsilon is None else float(budget_epsilon)
        self.neighbouring = neighbouring
        self.value_discretization_interval = float(value_discretization_interval)
        self._state = _new_state(accountant, neighbouring, self.value_discretization_interval)
        self._ledger: list[LedgerEntry] = []
        self._last_probe: tuple[Any, int, Any, Any, float] | None = None
        self._charge_memo: tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]] | None = None
        # Budget allowance of a run of identical charges: (event, the state it applies to, how many more
        # of the event fit from that state, whether that count is exact or a lower bound).
        self._allowance: tuple[Any, Any, int, bool] | None = None
        self._repeat: tuple[Any, Any, int] | None = None  # (event, state after the run, run length)

    # -- composition -------------------------------------------------------------------------
    def _prospective(self, event: Any, count: int) -> tuple[_RdpState | _PldState, float]:
        """The state with ``event`` composed ``count`` times, and its epsilon; nothing is changed.

        The last result is kept, so ``would_exceed(e)`` followed by ``spend(e)`` composes once.
        """
        check_param("count", count, type(self).__name__, POSITIVE_INT)
        last = self._last_probe
        if last is not None and last[2] is self._state and last[1] == count and last[0] == event:
            return last[3], last[4]
        probe = self._state.composed(event, int(count))
        eps = probe.epsilon(self.delta)
        self._last_probe = (event, int(count), self._state, probe, eps)
        return probe, eps

    def would_exceed(self, event: dp_accounting.DpEvent, count: int = 1) -> bool:
        """Whether composing ``event`` ``count`` times would take epsilon above ``budget_epsilon``.

        Always False without a budget. Nothing is composed. Raises :class:`UnsupportedEventError`
        for an event the accountant cannot account for.
        """
        _, eps = self._prospective(event, count)
        return self.budget_epsilon is not None and eps > self.budget_epsilon

    def spend(
        self,
        event: dp_accounting.DpEvent,
        *,
        label: str,
        count: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> float:
        """Compose ``event`` ``count`` times and record it in the ledger; return the new epsilon.

        Parameters
        ----------
        event : dp_accounting.DpEvent
            The privacy cost of one release (e.g. :func:`poisson_gaussian_event` for one DP-SGD step).
        label : str
            What spent it; recorded in the ledger.
        count : int >= 1, default 1
            How many times ``event`` happened. ``spend(e, count=T)`` equals ``T`` calls of
            ``spend(e)`` (exactly: equal events are composed together, also by the PLD accountant).
        params : dict, optional
            JSON-able parameters behind the event, recorded in the ledger (numpy scalars are converted).

        Returns
        -------
        float
            Epsilon at ``delta`` after composing.

        Raises
        ------
        BudgetExceededError
            If the new epsilon would exceed ``budget_epsilon``. Checked *before* composing: the
            accountant and its ledger are left exactly as they were.
        UnsupportedEventError
            If the accountant cannot account for ``event`` under its neighbouring relation.
        """
        self.charge(event, label=label, count=count, params=params)
        return self.epsilon()

    def charge(
        self,
        event: dp_accounting.DpEvent,
        *,
        label: str,
        count: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> Callable[[], float]:
        """:meth:`spend` without computing the new epsilon; returns a function that computes it on demand.

        The returned function gives epsilon (at ``delta``) right after this charge, whatever is
        composed later; it computes it once, when first called.

        For loops that charge one event per step (DP-SGD): composing is a vector addition (RDP) or a
        count (PLD), and the budget check of a run of identical charges needs no epsilon per step:
        the first repeat finds, by a search over counts, how many more of the event the budget allows
        (a few epsilon computations), and later charges count down from it. Same refusals and the same
        ledger as :meth:`spend`.
        """
        owner = f"{type(self).__name__}.charge"
        check_param("label", label, owner, str)
        check_param("count", count, owner, POSITIVE_INT)
        count = int(count)
        raw = dict(params or {})
        memo = self._charge_memo
        if memo is not None and memo[0] is event and memo[1] == raw:
            # The same event object and equal params as the last charge (a DP-SGD loop): reuse their
            # JSON-able forms (DpEvents are immutable).
            event_dict, clean_params = memo[2], memo[3]
        else:
            clean_params = _jsonable(raw, "params")
            event_dict = event_to_dict(event)
        probe = self._checked_probe(event, count, label)
        self._charge_memo = (event, raw, event_dict, clean_params)
        self._state = probe
        self._last_probe = None
        if self.budget_epsilon is None:
            self._repeat = None
        entry = LedgerEntry(label, event_dict, count, clean_params)
        last = self._ledger[-1] if self._ledger else None
        if last is not None and (last.label, last.event, last.params) == (
            entry.label,
            entry.event,
            entry.params,
        ):
            # The same event spent again (e.g. one per round): one entry with the summed count keeps
            # the ledger short without losing anything needed to recompute epsilon.
            self._ledger[-1] = LedgerEntry(label, last.event, last.count + entry.count, last.params)
        else:
            self._ledger.append(entry)
        return _EpsilonAfter(probe, self.delta)

    def _checked_probe(self, event: Any, count: int, label: str) -> _RdpState | _PldState:
        """The state after composing ``event`` ``count`` times, refused if it overspends the budget."""
        budget = self.budget_epsilon
        if budget is None:
            last = self._last_probe
            if last is not None and last[2] is self._state and last[1] == count and last[0] == event:
                return last[3]
            return self._state.composed(event, count)
        repeat = self._repeat
        same_run = repeat is not None and repeat[1] is self._state and repeat[0] == event
        run = repeat[2] if same_run else 0
        if not same_run:
            probe, eps = self._prospective(event, count)
            if eps > budget:
                self._refuse(event, count, label, eps)
            self._allowance = None
            self._repeat = (event, probe, count)
            return probe
        # A run of identical charges: find how many more fit, then count down. A search looks at most
        # max(1024, run) charges ahead (if all of them fit, that is a lower bound on what fits, hence
        # safe, and the search is repeated when the count runs out), so its cost stays small however
        # far away the budget is, and there are O(log steps) searches in a run.
        allowance = self._allowance
        if allowance is not None and allowance[1] is self._state:
            left, exact = allowance[2], allowance[3]
        else:
            left, exact = self._fitting_count(event, budget, max(1024, run, count))
        if count > left and not exact:
            left, exact = self._fitting_count(event, budget, max(1024, run, count))
        if count > left:
            self._refuse(event, count, label)
        probe = self._state.composed(event, count)
        self._allowance = (event, probe, left - count, exact)
        self._repeat = (event, probe, run + count)
        return probe

    def _fitting_count(self, event: Any, budget: float, horizon: int) -> tuple[int, bool]:
        """``(n, exact)``: the largest ``n <= horizon`` with epsilon(state + n x event) <= budget
        (epsilon grows with ``n``), and whether the budget lies within the horizon (``n`` is then the
        exact allowance; otherwise a lower bound). One probe when the whole horizon fits, otherwise a
        bisection."""
        state, delta = self._state, self.delta

        def fits(n: int) -> bool:
            return n == 0 or state.composed(event, n).epsilon(delta) <= budget

        if fits(horizon):
            return horizon, False
        lo, hi = 0, horizon
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo, True

    def _refuse(self, event: Any, count: int, label: str, eps: float | None = None) -> None:
        if eps is None:
            eps = self._state.composed(event, count).epsilon(self.delta)
        raise BudgetExceededError(
            f"Spending {label!r} (count={count}) would take epsilon from {self.epsilon():.4g} to "
            f"{eps:.4g} at delta={self.delta:g}, above the budget {self.budget_epsilon:g} "
            f"({self.accountant.upper()} accountant). Nothing was composed."
        )

    # -- reporting ---------------------------------------------------------------------------
    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon of everything composed so far, at ``delta`` (default: the accountant's ``delta``).

        0.0 before anything is composed; ``inf`` after a non-private event (noise multiplier 0).
        """
        if delta is None:
            return self._state.epsilon(self.delta)
        check_param("delta", delta, f"{type(self).__name__}.epsilon", UNIT_OPEN)
        return self._state.epsilon(float(delta))

    @property
    def ledger(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._ledger)

    @property
    def conversion(self) -> str:
        """How the accountant turns its state into (epsilon, delta), in words (stated in every report)."""
        if self.accountant == "rdp":
            return RDP_CONVERSION
        return _PLD_CONVERSION_TEMPLATE.format(interval=self.value_discretization_interval)

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to recompute epsilon, JSON-able (``json.dumps(..., allow_nan=False)`` works).

        Keys: ``accountant``, ``conversion``, ``neighbouring``, ``delta``, ``epsilon`` (the string
        ``"inf"`` when infinite), ``budget_epsilon``, ``ledger`` (list of :class:`LedgerEntry` dicts),
        ``library`` (dp-accounting version), and ``rdp_orders`` or ``value_discretization_interval``.
        """
        out: dict[str, Any] = {
            "accountant": self.accountant,
            "conversion": self.conversion,
            "neighbouring": self.neighbouring,
            "delta": self.delta,
            "epsilon": eps if math.isfinite(eps := self.epsilon()) else "inf",
            "budget_epsilon": self.budget_epsilon,
            "ledger": [e.to_dict() for e in self._ledger],
            "library": f"dp-accounting {_dp_accounting_version()}",
        }
        if self.accountant == "rdp":
            out["rdp_orders"] = [float(a) for a in RDP_ORDERS]
        else:
            out["value_discretization_interval"] = self.value_discretization_interval
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyAccountant:
        """Rebuild an accountant from :meth:`to_dict` output by replaying its ledger (e.g. to resume a run).

        The budget is not re-checked while replaying (the events already happened).
        """
        acc = cls(
            data.get("accountant", "rdp"),
            data.get("delta", 1e-5),
            data.get("budget_epsilon"),
            neighbouring=data.get("neighbouring", "add_or_remove"),
            value_discretization_interval=data.get(
                "value_discretization_interval", PLD_VALUE_DISCRETIZATION_INTERVAL
            ),
        )
        budget, acc.budget_epsilon = acc.budget_epsilon, None
        for entry in data.get("ledger", []):
            acc.spend(
                event_from_dict(entry["event"]),
                label=entry["label"],
                count=int(entry.get("count", 1)),
                params=entry.get("params") or {},
            )
        acc.budget_epsilon = budget
        return acc

    def __repr__(self) -> str:
        budget = "" if self.budget_epsilon is None else f", budget_epsilon={self.budget_epsilon:g}"
        return (
            f"PrivacyAccountant({self.accountant!r}, delta={self.delta:g}{budget}, "
            f"neighbouring={self.neighbouring!r}; epsilon={self.epsilon():.4g}, {len(self._ledger)} entries)"
        )


def _dp_accounting_version() -> str:
    try:
        return metadata.version("dp-accounting")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


# ---------------------------------------------------------------------------------------------
# DP-SGD style helpers


def poisson_gaussian_event(
    noise_multiplier: float, sampling_rate: float, steps: int = 1
) -> dp_accounting.DpEvent:
    """The DP event of ``steps`` Poisson-sampled Gaussian steps (DP-SGD, DP-FedAvg rounds).

    Parameters
    ----------
    noise_multiplier : float >= 0
        ``z``: the noise added to the *sum* of clipped contributions has standard deviation ``z * C``.
    sampling_rate : float in (0, 1]
        ``q``: each record (or client) is included independently with probability ``q``. With
        ``q = 1`` the event is a plain :class:`~dp_accounting.GaussianDpEvent` (full batch).
    steps : int >= 1, default 1
        Number of steps; more than one gives a ``SelfComposedDpEvent``.

    Privacy guarantee
    -----------------
    Describes the mechanism only if batches really are Poisson samples with rate ``q`` (not
    shuffled fixed-size batches) and the noise really is ``z * C`` on the sum.
    """
    owner = "poisson_gaussian_event"
    check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
    check_param("sampling_rate", sampling_rate, owner, UNIT_LEFT_OPEN)
    check_param("steps", steps, owner, POSITIVE_INT)
    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(float(noise_multiplier))
    if float(sampling_rate) < 1.0:
        event = dp_accounting.PoissonSampledDpEvent(float(sampling_rate), event)
    if int(steps) > 1:
        event = dp_accounting.SelfComposedDpEvent(event, int(steps))
    return event


def _check_common(owner: str, delta: float, sampling_rate: float, steps: int, accountant: str) -> None:
    check_param("delta", delta, owner, UNIT_OPEN)
    check_param("sampling_rate", sampling_rate, owner, UNIT_LEFT_OPEN)
    check_param("steps", steps, owner, POSITIVE_INT)
    check_param("accountant", accountant, owner, Options(ACCOUNTANTS))


def _epsilon_for(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str,
    neighbouring: str,
    interval: float,
) -> float:
    if noise_multiplier == 0:
        return math.inf
    event = poisson_gaussian_event(noise_multiplier, sampling_rate, steps)
    return _new_state(accountant, neighbouring, interval).composed(event, 1, cache=False).epsilon(delta)


def compute_epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    *,
    neighbouring: str = "add_or_remove",
    value_discretization_interval: float = PLD_VALUE_DISCRETIZATION_INTERVAL,
) -> float:
    """Epsilon at ``delta`` of ``steps`` Poisson-sampled Gaussian steps (see :func:`poisson_gaussian_event`).

    ``noise_multiplier = 0`` gives ``inf``.

    Examples
    --------
    >>> round(compute_epsilon(1.1, 256 / 60000, 14063, 1e-5), 3)
    2.597
    """
    owner = "compute_epsilon"
    check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
    _check_common(owner, delta, sampling_rate, steps, accountant)
    check_param("neighbouring", neighbouring, owner, Options(tuple(NEIGHBOURING_RELATIONS)))
    check_param("value_discretization_interval", value_discretization_interval, owner, POSITIVE_FLOAT)
    return _epsilon_for(
        float(noise_multiplier),
        float(sampling_rate),
        int(steps),
        float(delta),
        accountant,
        neighbouring,
        float(value_discretization_interval),
    )


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: str = "rdp",
    tolerance: float = 1e-3,
    *,
    neighbouring: str = "add_or_remove",
    max_noise_multiplier: float = 1e4,
    value_discretization_interval: float = PLD_VALUE_DISCRETIZATION_INTERVAL,
) -> float:
    """The smallest noise multiplier whose epsilon (at ``delta``) is at most ``target_epsilon``.

    Bracketed bisection (in log space) on the accountant's own epsilon: the result ``z`` satisfies
    ``compute_epsilon(z, ...) <= target_epsilon`` and ``z <= (1 + tolerance) * z_min``, where
    ``z_min`` is the smallest admissible noise multiplier.

    Parameters
    ----------
    target_epsilon : float > 0
    delta : float in (0, 1)
    sampling_rate : float in (0, 1]
    steps : int >= 1
    accountant : {"rdp", "pld"}, default "rdp"
    tolerance : float in (0, 1), default 1e-3
        Relative tolerance on the noise multiplier (1e-3 makes epsilon round-trip within ~0.2%).
    neighbouring : {"add_or_remove", "replace_one"}, default "add_or_remove"
    max_noise_multiplier : float > 0, default 1e4
        Largest noise multiplier considered; a target that needs more raises :class:`ParameterError`.
    value_discretization_interval : float > 0, default 1e-4
        PLD discretisation (ignored by ``"rdp"``).

    Raises
    ------
    ParameterError
        For invalid parameters, or a target that no noise multiplier up to ``max_noise_multiplier``
        reaches (e.g. a tiny epsilon over many steps).

    Examples
    --------
    >>> z = calibrate_noise_multiplier(2.597, 1e-5, 256 / 60000, 14063)
    >>> round(z, 2)
    1.1
    """
    owner = "calibrate_noise_multiplier"
    check_param("target_epsilon", target_epsilon, owner, POSITIVE_FLOAT)
    _check_common(owner, delta, sampling_rate, steps, accountant)
    check_param("tolerance", tolerance, owner, Interval(float, 0, 1, "neither"))
    check_param("neighbouring", neighbouring, owner, Options(tuple(NEIGHBOURING_RELATIONS)))
    check_param("max_noise_multiplier", max_noise_multiplier, owner, POSITIVE_FLOAT)
    check_param("value_discretization_interval", value_discretization_interval, owner, POSITIVE_FLOAT)
    if not math.isfinite(target_epsilon):
        raise ParameterError(
            f"The 'target_epsilon' parameter of {owner} must be a finite float in the range (0, inf). "
            f"Got {target_epsilon!r} instead.",
            param="target_epsilon",
        )
    target = float(target_epsilon)

    def eps(z: float) -> float:
        return _epsilon_for(
            z,
            float(sampling_rate),
            int(steps),
            float(delta),
            accountant,
            neighbouring,
            float(value_discretization_interval),
        )

    cap = float(max_noise_multiplier)
    eps_cap = eps(cap)
    if eps_cap > target:
        raise ParameterError(
            f"The 'target_epsilon' parameter of {owner} cannot be reached: even noise_multiplier="
            f"{cap:g} gives epsilon={eps_cap:.4g} > {target:g} at delta={delta:g} over {steps} steps "
            f"with sampling_rate={sampling_rate:g} ({accountant.upper()} accountant). Raise "
            f"target_epsilon or delta, take fewer steps"
            + (", or use accountant='pld' (tighter for small epsilon)." if accountant == "rdp" else "."),
            param="target_epsilon",
        )
    # Bracket: eps(lo) > target >= eps(hi).
    hi = min(1.0, cap)
    if eps(hi) <= target:
        lo = hi / 2
        while eps(lo) <= target:
            hi, lo = lo, lo / 2
            if lo < 1e-12:  # effectively no noise needed; the target is loose beyond any use
                return hi
    else:
        lo = hi
        while True:
            hi = min(hi * 2, cap)
            if eps(hi) <= target:
                break
            lo = hi
    while hi / lo > 1 + tolerance:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi
