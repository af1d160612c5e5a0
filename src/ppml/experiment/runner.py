"""Run one experiment (central, FedAvg or DP-FedAvg) and summarise it for the report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._progress import progress_bar
from .._rng import as_generator
from .._validation import Options, ParameterError, check_param
from ..data.dataset import ClientData, Dataset, train_test_split_by_owner
from ..models import build_model, num_bytes
from ..report import RunSummary
from ..train.loop import TrainConfig, evaluate, train_epochs
from .config import ExperimentConfig

__all__ = ["PreparedData", "prepare_data", "run_experiment", "run_pate_adas"]


@dataclass
class PreparedData:
    """The data an experiment trains and is audited on.

    ``clients`` is the partition of ``train`` (one client per vehicle for the ADAS fleet);
    ``fleet`` is the ADAS fleet when the data is synthetic ADAS (for availability and location
    audits); ``client_owner`` maps client index -> owner id where clients are owners.
    """

    train: Dataset
    test: Dataset
    clients: list[ClientData]
    fleet: Any = None
    client_owner: np.ndarray | None = None
    seconds: float = 0.0


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load (or generate) the dataset, split it by owner, and partition the training part."""
    from ..data.partition import make_partitioner
    from ..data.registry import DATASET_NAMES, load_dataset

    check_param("data.name", cfg.data.name, "the experiment file", Options(tuple(DATASET_NAMES)))
    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, 101])
    fleet = None
    if cfg.data.name == "adas":
        from ..data.adas import make_fleet

        fleet = make_fleet(cfg.data.vehicles, seed=cfg.seed)
        full = fleet.to_dataset(
            include_location=cfg.data.include_location, location_frequencies=cfg.data.location_frequencies
        )
        train, test, _, _ = train_test_split_by_owner(full, cfg.data.test_fraction, rng)
    else:
        splits = load_dataset(cfg.data.name, data_dir=cfg.data.data_dir, seed=cfg.seed)
        if splits.test is None:
            train, test, _, _ = train_test_split_by_owner(splits.train, cfg.data.test_fraction, rng)
        else:
            train, test = splits.train, splits.test
    p = cfg.partition
    params: dict[str, Any] = {}
    if p.alpha is not None:
        params["alpha"] = p.alpha
    if p.shards_per_client is not None:
        params["shards_per_client"] = p.shards_per_client
    if cfg.fl is None and train.owners is None:
        # Central training needs no partition (there are no owners to count uploads for).
        return PreparedData(train, test, [], fleet, None, time.perf_counter() - t0)
    if p.name == "by_owner" and train.owners is None:
        raise ParameterError(
            f"The 'partition.name' parameter of the experiment file is 'by_owner', but dataset "
            f"{cfg.data.name!r} has no owners; use 'iid', 'dirichlet', 'shards' or 'quantity_skew'.",
            param="partition.name",
        )
    num_clients = p.num_clients
    if num_clients is None:
        num_clients = len(np.unique(train.owners)) if train.owners is not None else 100
    partitioner = make_partitioner(p.name, **params)
    clients = partitioner.partition(train, num_clients if p.name != "by_owner" else p.num_clients, rng)
    owners = None
    if all(c.owner is not None for c in clients):
        owners = np.array([c.owner for c in clients], dtype=np.int64)
    return PreparedData(train, test, list(clients), fleet, owners, time.perf_counter() - t0)


def _membership(
    cfg: ExperimentConfig, model: torch.nn.Module, data: PreparedData
) -> tuple[dict[str, Any], ...]:
    if not cfg.attack.membership:
        return ()
    from ..attacks.membership import membership_audit

    rng = np.random.default_rng([cfg.seed, 303])
    m = min(cfg.attack.max_examples, len(data.train), len(data.test))
    mi = rng.choice(len(data.train), size=m, replace=False)
    ni = rng.choice(len(data.test), size=m, replace=False)
    result = membership_audit(
        model,
        (data.train.X[mi], data.train.y[mi]),
        (data.test.X[ni], data.test.y[ni]),
        rng=rng,
    )
    out = [result.to_dict()]
    if data.train.owners is not None and data.test.owners is not None:
        out.append(_owner_membership(model, data, rng).to_dict())
    return tuple(out)


def _owner_membership(model: torch.nn.Module, data: PreparedData, rng: np.random.Generator) -> Any:
    """User-level membership: was this owner (vehicle) in training? Score = -(mean loss of its records).

    The privacy unit of user-level DP-FedAvg is the owner, so this is the attack its epsilon bounds.
    Every training and every held-out owner is a target (AUC does not need equal numbers).
    """
    from ..attacks.base import Access, ThreatModel
    from ..attacks.membership import LossObservations, LossThresholdAttack, per_example_loss
    from ..attacks.metrics import score_membership

    def mean_loss_per_owner(ds: Dataset) -> np.ndarray:
        losses = per_example_loss(model, ds.X, ds.y)
        _, inv = np.unique(ds.owners, return_inverse=True)
        return np.bincount(inv, weights=losses) / np.bincount(inv)

    member, non_member = mean_loss_per_owner(data.train), mean_loss_per_owner(data.test)
    threat = ThreatModel.of(
        Access.LOSS,
        adversary="anyone who can query the released model with an owner's labelled records",
        auxiliary="the owner's records (e.g. a vehicle's logs obtained elsewhere)",
    )
    result = LossThresholdAttack(threat).run(LossObservations(np.concatenate([member, non_member])))
    is_member = np.r_[np.ones(len(member), bool), np.zeros(len(non_member), bool)]
    result = score_membership(result, is_member, rng=rng)
    from dataclasses import replace

    return replace(result, attack="loss-threshold (per owner)", details={**result.details, "unit": "owner"})


def _availability(cfg: ExperimentConfig, data: PreparedData):
    """Round -> mask of clients available at the configured training hour (ADAS only)."""
    if cfg.fl is None or cfg.fl.training_hour is None:
        return None
    if data.fleet is None or data.client_owner is None:
        raise ParameterError(
            "The 'fl.training_hour' parameter of the experiment file needs the ADAS fleet partitioned "
            "by owner (data.name = 'adas', partition.name = 'by_owner').",
            param="fl.training_hour",
        )
    hour = cfg.fl.training_hour
    fleet, owners = data.fleet, data.client_owner

    def available(server_round: int) -> np.ndarray:
        return fleet.available((server_round - 1) % 7, hour)[owners]

    return available


def _bytes_per_owner(data: PreparedData) -> float | None:
    """Mean raw bytes one owner would upload under central collection."""
    if data.fleet is not None and data.client_owner is not None:
        return float(np.mean(data.fleet.nbytes_per_vehicle()[data.client_owner]))
    if data.clients:
        return float(data.train.nbytes() / len(data.clients))
    return None


def run_experiment(
    cfg: ExperimentConfig,
    data: PreparedData | None = None,
    *,
    progress: bool = False,
    label: str | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> RunSummary:
    """Train as ``cfg`` says, evaluate, audit membership, and return a :class:`RunSummary`."""
    as_generator(cfg.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        data = data or prepare_data(cfg)
        if cfg.pate is not None:
            return _run_pate(cfg, data, progress, label or cfg.name)
        return _run(cfg, data, progress, label or cfg.name, checkpoint_dir, resume)
    finally:
        torch.set_num_threads(threads)


def _run(
    cfg: ExperimentConfig,
    data: PreparedData,
    progress: bool,
    label: str,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> RunSummary:
    model = build_model(
        cfg.model.name,
        data.train.input_shape,
        data.train.num_classes,
        hidden=tuple(cfg.model.hidden),
        seed=cfg.seed,
    )
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    privacy = None
    cost: dict[str, float] = {"model_bytes": float(num_bytes(model))}
    if cfg.fl is None and cfg.privacy is not None:
        privacy, history, description = _dp_sgd(cfg, model, data, progress, label)
    elif cfg.fl is None:
        tc = TrainConfig(cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, momentum=cfg.train.momentum)
        with progress_bar(f"{label}: central", cfg.train.epochs, enabled=progress) as tick:

            def on_epoch(epoch: int, loss: float) -> None:
                ev = evaluate(model, data.test.X, data.test.y)
                history.append({"epoch": epoch, "train_loss": loss, "test_accuracy": ev["accuracy"]})
                tick(1, acc=ev["accuracy"])

            train_epochs(
                model,
                data.train.X,
                data.train.y,
                tc,
                np.random.default_rng([cfg.seed, 202]),
                on_epoch=on_epoch,
            )
        description = "central training on pooled raw data"
    if cfg.fl is None:
        owner_bytes = _bytes_per_owner(data)
        if owner_bytes is not None:
            cost["bytes_up_per_client"] = owner_bytes
    else:
        from ..fl.simulation import run_federated

        fl = cfg.fl
        strategy: Any = _strategy(fl)
        description = f"{strategy.name} over {len(data.clients)} clients, C={fl.fraction_fit}, E={fl.local_epochs}, B={fl.batch_size}"
        if cfg.privacy is not None:
            strategy, privacy_setup = _dp_strategy(cfg, strategy, len(data.clients))
            description = (
                f"user-level DP-FedAvg over {len(data.clients)} clients, Poisson rate q={fl.fraction_fit}, "
                f"clip {cfg.privacy.clip_norm}{' (initial, adaptive)' if cfg.privacy.target_quantile else ''}, "
                f"noise multiplier {privacy_setup['noise_multiplier']:.3f}"
            )
        with progress_bar(f"{label}: rounds", fl.rounds, enabled=progress) as tick:

            def on_round(entry: dict[str, Any]) -> None:
                fields = {}
                if "test_accuracy" in entry:
                    fields["acc"] = entry["test_accuracy"]
                if "epsilon" in entry:
                    fields["eps"] = entry["epsilon"]
                tick(1, **fields)

            result = run_federated(
                model,
                data.clients,
                strategy,
                rounds=fl.rounds,
                seed=cfg.seed,
                test=(data.test.X, data.test.y),
                eval_every=fl.eval_every,
                availability=_availability(cfg, data),
                on_round=on_round,
                backend=fl.backend,
                max_update_norm=fl.max_update_norm,
                dropout=fl.dropout,
                round_deadline=fl.round_deadline,
                min_results=fl.min_results,
                client_eval=fl.client_eval,
                ray_address=fl.ray_address,
                checkpoint_dir=checkpoint_dir,
                checkpoint_every=fl.checkpoint_every,
                resume=resume,
            )
        history = result.history
        cost["bytes_up_per_client"] = float(result.bytes_up.mean())
        cost["bytes_down_per_client"] = float(result.bytes_down.mean())
        cost["client_updates"] = float(result.participation.sum())
        if cfg.privacy is not None:
            privacy = {**strategy.accountant.to_dict(), **privacy_setup}
    train_seconds = time.perf_counter() - t0
    ev = evaluate(model, data.test.X, data.test.y)
    tr = evaluate(model, data.train.X, data.train.y)
    attacks = _membership(cfg, model, data)
    cost["wall_time_s"] = time.perf_counter() - t0
    cost["train_time_s"] = train_seconds
    return RunSummary(
        name=label,
        description=description,
        utility={
            "test_accuracy": ev["accuracy"],
            "test_loss": ev["loss"],
            "train_accuracy": tr["accuracy"],
            "majority_class_accuracy": float(np.bincount(data.test.y).max() / len(data.test.y)),
        },
        privacy=privacy,
        attacks=attacks,
        cost=cost,
        history=tuple(history),
        config=cfg.model_dump(mode="json"),
    )


def _dp_sgd(
    cfg: ExperimentConfig, model: torch.nn.Module, data: PreparedData, progress: bool, label: str
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """Central DP-SGD (example-level DP): Poisson batches of expected size ``train.batch_size``."""
    from ..dp.accounting import PrivacyAccountant, calibrate_noise_multiplier
    from ..dp.dpsgd import DPSGD, check_dp_model

    priv, tr = cfg.privacy, cfg.train
    assert priv is not None
    n = len(data.train)
    if priv.delta >= 1.0 / n:
        raise ParameterError(
            f"The 'privacy.delta' parameter of the experiment file must be below 1/number of training "
            f"examples = {1.0 / n:.3g}. Got {priv.delta!r} instead.",
            param="privacy.delta",
        )
    if priv.target_quantile is not None:
        raise ParameterError(
            "The 'privacy.target_quantile' parameter of the experiment file must be unset for central "
            "DP-SGD (adaptive clipping is implemented for DP-FedAvg, with an [fl] section). "
            f"Got {priv.target_quantile!r} instead.",
            param="privacy.target_quantile",
        )
    q = min(1.0, tr.batch_size / n)
    steps_per_epoch = int(np.ceil(1.0 / q))
    steps = tr.epochs * steps_per_epoch
    setup: dict[str, Any] = {"target_epsilon": priv.epsilon}
    if priv.epsilon is not None:
        z = calibrate_noise_multiplier(priv.epsilon, priv.delta, q, steps, accountant=priv.accountant)
        setup["noise_multiplier_source"] = "calibrated to target epsilon"
    else:
        z = float(priv.noise_multiplier)
        setup["noise_multiplier_source"] = "given"
    setup["noise_multiplier"] = z
    # Ghost (book-keeping) clipping is the faster path wherever it applies, convolutions included
    # (docs/benchmarks.md, DP-SGD step speed: the CNN's ghost step 0.88x the flat one); models it
    # cannot clip correctly get flat (vmap) clipping.
    try:
        check_dp_model(model, "ghost")
        clipping = "ghost"
    except ParameterError:
        clipping = "flat"
    setup["clipping"] = clipping
    accountant = PrivacyAccountant(priv.accountant, priv.delta, budget_epsilon=priv.epsilon)
    setup["noise_sampler"] = priv.noise_sampler
    dpsgd = DPSGD(
        z,
        priv.clip_norm,
        q,
        lr=tr.lr,
        momentum=tr.momentum,
        clipping=clipping,
        secure=priv.secure,
        noise_sampler=priv.noise_sampler,
    )
    rng = None if priv.secure else np.random.default_rng([cfg.seed, 404])
    history: list[dict[str, Any]] = []
    with progress_bar(f"{label}: DP-SGD epochs", tr.epochs, enabled=progress) as tick:
        for epoch in range(1, tr.epochs + 1):
            dpsgd.fit(
                model, data.train.X, data.train.y, accountant=accountant, rng=rng, steps=steps_per_epoch
            )
            ev = evaluate(model, data.test.X, data.test.y)
            history.append({"epoch": epoch, "test_accuracy": ev["accuracy"], "epsilon": accountant.epsilon()})
            tick(1, acc=ev["accuracy"], eps=accountant.epsilon())
    description = (
        f"central DP-SGD ({clipping} clipping), Poisson rate q={q:.4g}, clip {priv.clip_norm}, "
        f"noise multiplier {z:.3f}, {steps} steps"
    )
    return {**accountant.to_dict(), **setup, "unit": "example"}, history, description


def _strategy(fl: Any) -> Any:
    """The strategy an [fl] section names, with its parameters."""
    from .. import fl as strategies

    common = (fl.fraction_fit, fl.local_epochs, fl.batch_size, fl.lr)
    server = {} if fl.server_lr is None else {"server_lr": fl.server_lr}
    server["lr_decay"] = fl.lr_decay
    if fl.strategy == "fedprox":
        return strategies.FedProx(*common, mu=fl.mu, **server)
    if fl.strategy == "fedtrimmedavg":
        return strategies.FedTrimmedAvg(*common, beta=fl.trim_beta, **server)
    cls = {
        "fedavg": strategies.FedAvg,
        "fedadam": strategies.FedAdam,
        "fedyogi": strategies.FedYogi,
        "fedadagrad": strategies.FedAdagrad,
        "fedmedian": strategies.FedMedian,
        "scaffold": strategies.Scaffold,
    }[fl.strategy]
    return cls(*common, **server)


def _dp_strategy(cfg: ExperimentConfig, base: Any, num_clients: int) -> tuple[Any, dict[str, Any]]:
    from ..dp.accounting import PrivacyAccountant, calibrate_noise_multiplier
    from ..fl.dp_fedavg import DPFedAvg

    priv, fl = cfg.privacy, cfg.fl
    assert priv is not None and fl is not None
    if fl.strategy not in ("fedavg", "fedprox"):
        raise ParameterError(
            f"The 'fl.strategy' parameter of the experiment file must be 'fedavg' or 'fedprox' with a [privacy] "
            f"section (user-level DP-FedAvg averages clipped updates itself). Got {fl.strategy!r} instead.",
            param="fl.strategy",
        )
    if priv.delta >= 1.0 / num_clients:
        raise ParameterError(
            f"The 'privacy.delta' parameter of the experiment file must be below 1/number of clients "
            f"= {1.0 / num_clients:.3g} for a meaningful user-level guarantee. Got {priv.delta!r} instead.",
            param="privacy.delta",
        )
    setup: dict[str, Any] = {"target_epsilon": priv.epsilon}
    if priv.epsilon is not None:
        z = calibrate_noise_multiplier(
            priv.epsilon, priv.delta, fl.fraction_fit, fl.rounds, accountant=priv.accountant
        )
        setup["noise_multiplier_source"] = "calibrated to target epsilon"
    else:
        z = float(priv.noise_multiplier)
        setup["noise_multiplier_source"] = "given"
    setup["noise_multiplier"] = z
    accountant = PrivacyAccountant(priv.accountant, priv.delta, budget_epsilon=priv.epsilon)
    if priv.target_quantile is not None:
        setup["clipping"] = f"adaptive to the {priv.target_quantile:g} quantile (Andrew et al. 2021)"
    strategy = DPFedAvg(
        base,
        priv.clip_norm,
        z,
        accountant,
        secure=priv.secure,
        target_quantile=priv.target_quantile,
        clip_learning_rate=priv.clip_learning_rate,
        clipped_count_stddev=priv.clipped_count_stddev,
        noise_sampler=priv.noise_sampler,
    )
    setup["noise_sampler"] = priv.noise_sampler
    return strategy, setup


# ---- PATE ------------------------------------------------------------------------------------


def _pate_aggregator(pc: Any) -> Any:
    from ..dp.pate import ConfidentGNMax, GNMax, InteractiveGNMax, LNMax

    if pc.aggregator == "lnmax":
        return LNMax(pc.gamma)
    if pc.aggregator == "gnmax":
        return GNMax(pc.sigma2)
    cls = ConfidentGNMax if pc.aggregator == "confident_gnmax" else InteractiveGNMax
    return cls(float(pc.threshold), pc.sigma1, pc.sigma2)


def _public_split(test: Dataset, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of the test rows that serve as PATE's public data (whole owners where there are owners)."""
    if test.owners is not None:
        units = rng.permutation(np.unique(test.owners))
        k = max(1, int(round(fraction * len(units))))
        return np.isin(test.owners, units[:k])
    mask = np.zeros(len(test), dtype=bool)
    mask[: max(1, int(round(fraction * len(test))))] = True
    return mask


def _run_pate(cfg: ExperimentConfig, data: PreparedData, progress: bool, label: str) -> RunSummary:
    """Teachers on the training split, queries and student on the public part of the test split."""
    from ..dp.pate.estimator import PATE
    from ..dp.pate.student import PATEStudent
    from ..dp.pate.teachers import overlap_mask

    pc = cfg.pate
    assert pc is not None
    t0 = time.perf_counter()
    train, test = data.train, data.test
    public = _public_split(test, pc.public_fraction, np.random.default_rng([cfg.seed, 505]))
    evaluation = test.subset(np.flatnonzero(~public))
    public_X = test.X[public]
    X, Xe = train.X, evaluation.X
    if train.meta.get("standardize"):
        # Scale with public statistics only: private statistics would reach every teacher.
        flat = public_X.reshape(len(public_X), -1)
        mu, sd = flat.mean(axis=0), flat.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)

        def scale(a: np.ndarray) -> np.ndarray:
            return ((a.reshape(len(a), -1) - mu) / sd).astype(np.float32).reshape(a.shape)

        X, Xe, public_X = scale(X), scale(Xe), scale(public_X)
    dup = overlap_mask(X, public_X)
    public_X = public_X[~dup]
    n_queries = min(pc.n_queries, len(public_X))

    def model() -> torch.nn.Module:
        return build_model(
            cfg.model.name,
            train.input_shape,
            train.num_classes,
            hidden=tuple(cfg.model.hidden),
            seed=cfg.seed,
        )

    student = PATEStudent(
        model(),
        semi_supervised="self_training" if pc.semi_supervised else "none",
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        seed=cfg.seed,
    )
    pate = PATE(
        pc.n_teachers,
        _pate_aggregator(pc),
        model(),
        student,
        teacher_config=TrainConfig(pc.teacher_epochs, pc.teacher_batch_size, pc.teacher_lr, momentum=0.9),
        epsilon_budget=pc.epsilon,
        delta=pc.delta,
        seed=cfg.seed,
    )
    pate.fit(
        X,
        train.y,
        public_X=public_X,
        owners=train.owners,
        n_queries=n_queries,
        num_classes=train.num_classes,
        progress=progress,
    )
    train_seconds = time.perf_counter() - t0
    rep = pate.privacy_report()
    net = pate.student_.model_
    attacks: tuple[dict[str, Any], ...] = ()
    if isinstance(net, torch.nn.Module):
        scaled = PreparedData(
            Dataset(X, train.y, train.name, train.num_classes, owners=train.owners),
            Dataset(Xe, evaluation.y, test.name, test.num_classes, owners=evaluation.owners),
            [],
        )
        attacks = _membership(cfg, net, scaled)
    unit = "owner" if train.owners is not None else "record"
    rdd = rep["epsilon_data_dependent_released"]
    description = (
        f"PATE: {rep['n_teachers']} teachers on disjoint partitions by {unit}, {rep['aggregator']['name']}, "
        f"{rep['answered']} of {n_queries} queries answered, student "
        f"{'self-trained on the unanswered public rows' if pc.semi_supervised else 'supervised'}; epsilon "
        f"data-independent {rep['epsilon']:.3g}"
        + ("" if rdd is None else f", data-dependent (smooth-sensitivity release) {rdd:.3g}")
    )
    return RunSummary(
        name=label,
        description=description,
        utility={
            "test_accuracy": pate.score(Xe, evaluation.y),
            "answered_queries": float(rep["answered"]),
            "majority_class_accuracy": float(np.bincount(evaluation.y).max() / len(evaluation.y)),
        },
        privacy={
            **rep,
            "accountant": "pate-rdp",  # what the report's accounting line names
            "public_rows": int(len(public_X)),
            "public_rows_dropped_as_private": int(dup.sum()),
        },
        attacks=attacks,
        cost=_pate_cost(data, time.perf_counter() - t0, train_seconds),
        config=cfg.model_dump(mode="json"),
    )


def _pate_cost(data: PreparedData, wall: float, train_seconds: float) -> dict[str, float]:
    """Teachers train on pooled partitions: each owner uploads its raw records, as for central training."""
    cost = {"wall_time_s": wall, "train_time_s": train_seconds}
    owner_bytes = _bytes_per_owner(data)
    if owner_bytes is not None:
        cost["bytes_up_per_client"] = owner_bytes
    return cost


def run_pate_adas(
    train: Dataset,
    public_X: np.ndarray,
    test: Dataset,
    *,
    seed: int = 0,
    n_teachers: int = 50,
    n_queries: int = 300,
    threshold: float = 35.0,
    sigma1: float = 20.0,
    sigma2: float = 10.0,
    delta: float = 1e-5,
    hidden: tuple[int, ...] = (64, 64),
) -> dict[str, Any]:
    """PATE on the ADAS fleet: teachers on groups of whole vehicles, the student on held-out vehicles' records.

    ``train`` carries vehicle ids as owners (``AdasFleet.to_dataset()`` split by owner); with 400 training
    vehicles and 50 teachers each teacher gets 8 vehicles. ``public_X`` are records of other vehicles
    (unlabelled; the first ``n_queries`` are the queries); ``test`` evaluates the student.

    Returns
    -------
    dict
        ``test_accuracy``, ``epsilon`` (data-independent), ``epsilon_data_dependent_released``,
        ``answered``, ``queries``, ``n_teachers``, ``vehicles_per_teacher`` and ``seconds``; plus
        ``report``, the full :meth:`~ppml.dp.pate.estimator.PATE.privacy_report`.
    """
    from ..dp.pate import ConfidentGNMax
    from ..dp.pate.estimator import PATE
    from ..dp.pate.student import PATEStudent

    t0 = time.perf_counter()
    if train.owners is None:
        raise ParameterError(
            "The 'train' parameter of run_pate_adas must carry owners (vehicle ids). Got owners=None instead.",
            param="train",
        )
    shape, c = train.input_shape, train.num_classes
    teacher = build_model("mlp", shape, c, hidden=hidden, seed=seed)
    student = PATEStudent(build_model("mlp", shape, c, hidden=hidden, seed=seed), epochs=30, seed=seed)
    pate = PATE(
        n_teachers,
        ConfidentGNMax(threshold, sigma1, sigma2),
        teacher,
        student,
        teacher_config=TrainConfig(epochs=10, batch_size=32, lr=0.05, momentum=0.9),
        delta=delta,
        seed=seed,
    )
    pate.fit(
        train.X,
        train.y,
        public_X=public_X,
        owners=train.owners,
        n_queries=min(n_queries, len(public_X)),
        num_classes=c,
    )
    rep = pate.privacy_report()
    return {
        "test_accuracy": pate.score(test.X, test.y),
        "epsilon": rep["epsilon"],
        "epsilon_data_dependent_released": rep["epsilon_data_dependent_released"],
        "answered": rep["answered"],
        "queries": rep["queries"],
        "n_teachers": rep["n_teachers"],
        "vehicles_per_teacher": len(np.unique(train.owners)) / n_teachers,
        "seconds": time.perf_counter() - t0,
        "report": rep,
    }
