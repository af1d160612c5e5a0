"""Experiment files: a TOML file, validated by pydantic, with ``--set key=value`` overrides.

Example (``examples/adas_dp_fedavg.toml``)::

    name = "adas-dp-fedavg"
    seed = 0
    [data]
    name = "adas"
    vehicles = 500
    [model]
    name = "mlp"
    hidden = [64, 64]
    [fl]
    rounds = 30
    fraction_fit = 0.2
    [privacy]
    epsilon = 4.0
    delta = 1e-5

Without an ``[fl]`` section the model is trained centrally on pooled data (with ``[privacy]``: by
DP-SGD, example-level); with ``[fl]`` it is trained by federated averaging, and adding ``[privacy]``
wraps the strategy in user-level DP-FedAvg. A ``[pate]`` section (alone) trains PATE teachers on the
training split and a student on public data (``examples/mnist_pate.toml``).
Every validation error names the field with its dotted path and the allowed range, in the same
words as the rest of ppml ("The 'fl.fraction_fit' parameter of the experiment file must be ...").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import annotated_types as at
import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .._validation import ParameterError

__all__ = [
    "ExperimentConfig",
    "load_config",
    "parse_config",
    "apply_overrides",
    "parse_override",
]

OWNER = "the experiment file"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSection(_Section):
    name: str = "adas"
    data_dir: str | None = None
    vehicles: int = Field(500, ge=1, le=1_000_000)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    include_location: bool = Field(False, description="ADAS only: add the (x, y) position to the features.")
    location_frequencies: int = Field(
        0, ge=0, le=16, description="ADAS only: sinusoidal position encoding with this many frequencies."
    )


class PartitionSection(_Section):
    name: Literal["by_owner", "iid", "dirichlet", "shards", "quantity_skew"] = "by_owner"
    num_clients: int | None = Field(None, ge=1)
    alpha: float | None = Field(None, gt=0)
    shards_per_client: int | None = Field(None, ge=1)


class ModelSection(_Section):
    name: Literal["logistic", "mlp", "cnn"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [64, 64])


class TrainSection(_Section):
    """Central training (used when there is no [fl] section)."""

    epochs: int = Field(8, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class FLSection(_Section):
    strategy: Literal[
        "fedavg", "fedprox", "scaffold", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg"
    ] = "fedavg"
    rounds: int = Field(30, ge=1, le=1_000_000)
    fraction_fit: float = Field(0.1, gt=0, le=1)
    local_epochs: int = Field(1, ge=1, le=10_000)
    batch_size: int | None = Field(16, ge=1)
    lr: float = Field(0.05, gt=0)
    server_lr: float | None = Field(
        None, gt=0, description="server step; default 1.0 (FedAvg family), 0.1 (FedOpt)"
    )
    lr_decay: float = Field(
        1.0, gt=0, le=1, description="client learning rate of round t is lr * lr_decay ** (t - 1)"
    )
    mu: float = Field(0.01, ge=0, description="FedProx proximal coefficient")
    trim_beta: float = Field(0.1, ge=0, lt=0.5, description="FedTrimmedAvg: fraction trimmed at each end")
    eval_every: int = Field(5, ge=1)
    backend: Literal["sequential", "vectorized", "ray"] = "sequential"
    ray_address: str | None = Field(
        None, description="Ray cluster address for backend = 'ray' (default: local)"
    )
    checkpoint_every: int = Field(
        5, ge=1, description="rounds between checkpoints (ppml run writes them to --out)"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="probability a selected client fails to upload")
    round_deadline: float | None = Field(
        None,
        gt=0,
        description="simulated seconds per round (1 example per second per epoch); slower clients straggle",
    )
    min_results: int = Field(1, ge=1, description="rounds with fewer accepted updates change nothing")
    client_eval: bool = Field(
        True, description="record the spread of per-client accuracies on evaluation rounds"
    )
    max_update_norm: float | None = Field(
        None, gt=0, description="reject client updates with a larger L2 norm"
    )
    training_hour: int | None = Field(
        None, ge=0, le=23, description="ADAS only: clients train at this hour if parked and available."
    )


class PrivacySection(_Section):
    epsilon: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    noise_multiplier: float | None = Field(None, ge=0)
    clip_norm: float = Field(1.0, gt=0, description="the clipping bound (the initial one when adaptive)")
    accountant: Literal["rdp", "pld"] = "rdp"
    secure: bool = False
    noise_sampler: Literal["native", "mkl"] = Field(
        "native",
        description="the generator of DP-SGD's and DP-FedAvg's update noise: the native one (torch's or "
        "numpy's) or Intel oneMKL's ('mkl', faster; pip install 'ppml[mkl]'; not with secure = true)",
    )
    target_quantile: float | None = Field(
        None, gt=0, lt=1, description="DP-FedAvg: adapt the clipping bound to this quantile of update norms"
    )
    clip_learning_rate: float = Field(0.2, gt=0, description="DP-FedAvg adaptive clipping: step size")
    clipped_count_stddev: float | None = Field(
        None, gt=0, description="DP-FedAvg adaptive clipping: noise on the clipped count (default qK/20)"
    )

    @model_validator(mode="after")
    def _one_of_epsilon_or_noise(self) -> PrivacySection:
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "exactly one of 'privacy.epsilon' (calibrate the noise to a target) and "
                "'privacy.noise_multiplier' (report the epsilon it gives) must be set"
            )
        return self

    @field_validator("noise_sampler")
    @classmethod
    def _sampler_usable(cls, value: str, info: ValidationInfo) -> str:
        if value != "mkl":
            return value
        if info.data.get("secure"):
            raise ValueError(
                "'mkl' is a seeded floating-point sampler, which secure mode does not use: set 'native' "
                "with 'privacy.secure' = true"
            )
        from ..dp import _vsl

        reason = _vsl.unavailable_reason()
        if reason is not None:
            raise ValueError(f"'mkl' {reason}")
        return value


class PateSection(_Section):
    """PATE (Papernot et al. 2017, 2018): teachers on the training split, a student on public data.

    Public data: the first ``public_fraction`` of the test split (of its owners, for data with owners);
    the queries are its first ``n_queries`` rows; the student is evaluated on the rest of the test split.
    """

    n_teachers: int = Field(250, ge=2, le=100_000)
    aggregator: Literal["lnmax", "gnmax", "confident_gnmax", "interactive_gnmax"] = "confident_gnmax"
    threshold: float = Field(200.0, ge=0, description="Confident/Interactive-GNMax threshold T")
    sigma1: float = Field(150.0, gt=0, description="noise of the threshold check")
    sigma2: float = Field(40.0, gt=0, description="noise of the noisy argmax (GNMax: its sigma)")
    gamma: float = Field(0.05, gt=0, description="LNMax: inverse Laplace scale")
    n_queries: int = Field(640, ge=1)
    public_fraction: float = Field(0.5, gt=0, lt=1)
    delta: float = Field(1e-5, gt=0, lt=1)
    epsilon: float | None = Field(None, gt=0, description="budget on the data-independent epsilon")
    semi_supervised: bool = Field(True, description="self-train the student on the unanswered public rows")
    teacher_epochs: int = Field(20, ge=1, le=10_000)
    teacher_batch_size: int = Field(32, ge=1)
    teacher_lr: float = Field(0.05, gt=0)


class AttackSection(_Section):
    membership: bool = True
    max_examples: int = Field(2000, ge=10)


class ExperimentConfig(_Section):
    name: str = "experiment"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    threads: int = Field(
        1, ge=1, le=256, description="torch intra-op threads (1 is fastest for small models)"
    )
    data: DataSection = Field(default_factory=DataSection)
    partition: PartitionSection = Field(default_factory=PartitionSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    fl: FLSection | None = None
    privacy: PrivacySection | None = None
    pate: PateSection | None = None
    attack: AttackSection = Field(default_factory=AttackSection)

    @model_validator(mode="after")
    def _pate_alone(self) -> ExperimentConfig:
        if self.pate is not None and (self.fl is not None or self.privacy is not None):
            raise ValueError(
                "a [pate] section cannot be combined with [fl] or [privacy] (PATE has its own privacy analysis)"
            )
        return self

    @property
    def mode(self) -> str:
        if self.pate is not None:
            return "pate"
        if self.fl is None:
            return "dp-sgd" if self.privacy is not None else "central"
        return "dp-fedavg" if self.privacy is not None else "fedavg"


# ---- errors in ppml's words ------------------------------------------------------------------


def _field_constraints(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str | None, list[Any]]:
    """The annotation text and annotated_types constraints of the field at ``loc``."""
    cls: Any = model
    info = None
    for part in loc:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None, []
        info = cls.model_fields[part]
        ann = info.annotation
        sub = [
            a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        cls = sub[0] if sub else ann
    if info is None:
        return None, []
    return str(info.annotation), list(info.metadata)


def _describe(annotation: str | None, metadata: list[Any]) -> str | None:
    lo = hi = None
    lo_closed = hi_closed = False
    for m in metadata:
        if isinstance(m, at.Gt):
            lo, lo_closed = m.gt, False
        elif isinstance(m, at.Ge):
            lo, lo_closed = m.ge, True
        elif isinstance(m, at.Lt):
            hi, hi_closed = m.lt, False
        elif isinstance(m, at.Le):
            hi, hi_closed = m.le, True
    kind = "an int" if annotation and "int" in annotation and "float" not in annotation else "a float"
    if lo is None and hi is None:
        return None
    left = ("[" if lo_closed else "(") + ("-inf" if lo is None else _num(lo))
    right = ("inf" if hi is None else _num(hi)) + ("]" if hi_closed else ")")
    return f"{kind} in the range {left}, {right}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _to_parameter_error(err: ValidationError) -> ParameterError:
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"] if not isinstance(p, int))
    name = ".".join(str(p) for p in loc)
    typ = e["type"]
    got = e.get("input")
    if typ == "extra_forbidden":
        section = ".".join(str(p) for p in loc[:-1])
        cls: Any = ExperimentConfig
        for part in loc[:-1]:
            ann = cls.model_fields[part].annotation
            cls = next(a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type))
        known = ", ".join(sorted(cls.model_fields))
        where = f"[{section}]" if section else "the top level"
        return ParameterError(
            f"The experiment file has no parameter '{name}'; the parameters of {where} are: {known}.",
            param=name,
        )
    if typ == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        return ParameterError(
            f"The '{name}' parameter of {OWNER} must be one of {expected}. Got {got!r} instead.", param=name
        )
    if typ == "value_error":
        # A validator's own message, kept as written (it names the fields involved).
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        if not name:
            return ParameterError(f"Invalid experiment file: {msg}.")
        return ParameterError(
            f"The '{name}' parameter of {OWNER} is invalid: {msg}. Got {got!r}.", param=name
        )
    annotation, metadata = _field_constraints(ExperimentConfig, loc)
    allowed = _describe(annotation, metadata)
    if allowed is None:
        allowed = str(e.get("msg", "valid")).lower()
        return ParameterError(
            f"The '{name}' parameter of {OWNER} is invalid: {allowed}. Got {got!r}.", param=name
        )
    return ParameterError(
        f"The '{name}' parameter of {OWNER} must be {allowed}. Got {got!r} instead.", param=name
    )


def parse_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a dict (a parsed TOML file with overrides applied)."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise _to_parameter_error(err) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"fl.rounds=10"`` -> ``(["fl", "rounds"], 10)``; values are TOML literals, else strings."""
    if "=" not in item:
        raise ParameterError(
            f"The '--set' option takes key=value (dotted keys for sections). Got {item!r} instead."
        )
    key, _, value = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ParameterError(
            f"The '--set' option takes key=value with a non-empty key. Got {item!r} instead."
        )
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key=value`` override set (sections created as needed)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ParameterError(
                    f"The '--set' key {'.'.join(path)!r} goes through {part!r}, which is not a section."
                )
            node[part] = child = dict(child)
            node = child
        node[path[-1]] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a TOML experiment file, apply ``key=value`` overrides, validate."""
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"The experiment file {str(p)!r} does not exist.", param="FILE")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(
            f"The experiment file {str(p)!r} is not valid TOML: {err}.", param="FILE"
        ) from None
    return parse_config(apply_overrides(raw, overrides or []))
