"""Defences measured by the same attacks: DP-SGD at several epsilons, PATE's student, top-1 labels only and
rounded confidences against LOSS, LiRA, RMIA and label-only membership inference on MNIST; FedAvg against
DP-FedAvg for user-level membership on the ADAS fleet; gradient reconstruction from one client's update, from
what secure aggregation leaves (the sum of 10 or 100 updates) and under DP-FedAvg noise. All numbers live."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

import bench_gradient_inversion as bgi
import bench_membership as bm
from _common import table
from ppml.attacks.base import Access, AttackResult, ThreatModel, ThreatModelError
from ppml.attacks.defences import RoundedConfidences, secure_aggregate_view
from ppml.attacks.gradients import (
    AnalyticFCInversion,
    ClientUpdate,
    InvertingGradients,
    simulate_client_update,
)
from ppml.attacks.image_metrics import psnr
from ppml.attacks.label_only import LabelOnlyAttack
from ppml.attacks.lira import LiRA
from ppml.attacks.membership import (
    LossObservations,
    LossThresholdAttack,
    ModelAPI,
    aggregate_by_owner,
    owner_membership,
    per_example_loss,
    run_membership_audit,
)
from ppml.attacks.metrics import score_membership
from ppml.attacks.rmia import RMIA
from ppml.attacks.shadow import ShadowModels
from ppml.data.adas import make_fleet
from ppml.data.dataset import Dataset
from ppml.data.partition import ByOwnerPartitioner
from ppml.dp.accounting import PrivacyAccountant, calibrate_noise_multiplier
from ppml.fl.dp_fedavg import DPFedAvg
from ppml.fl.fedavg import FedAvg
from ppml.fl.simulation import run_federated
from ppml.models import build_model
from ppml.train import evaluate, train_epochs
from ppml.train.ensemble import EnsembleParams

TITLE = "Defences measured by the same attacks: DP-SGD, PATE, top-1 labels, rounded confidences, DP-FedAvg, secure aggregation"

SEED = 0
EPSILONS = (1.0, 4.0, 16.0)
# MNIST membership: bench_membership's setting (pool of 2N candidates, the target trains on a random half)
FULL = {"n_pool": 2000, "n_aux": 2000, "n_public": 2000, "hidden": 128, "shadows": 16, "n_noise": 20}
QUICK = {"n_pool": 600, "n_aux": 600, "n_public": 500, "hidden": 64, "shadows": 8, "n_noise": 5}
# PATE on the target's members: teachers on disjoint shares, GNMax answers, a self-trained student
PATE_TEACHERS, PATE_SIGMA, PATE_QUERIES = 20, 3.0, 500
# ADAS fleet: one client per vehicle, members = training vehicles, non-members = held-out vehicles
ADAS_FULL = {"vehicles": 100, "days": 7, "rounds": 20, "local_epochs": 40, "hidden": 128}
ADAS_QUICK = {"vehicles": 40, "days": 7, "rounds": 4, "local_epochs": 5, "hidden": 32}
ADAS_Q, ADAS_B, ADAS_LR, ADAS_CLIP, ADAS_DELTA = 0.5, 32, 0.1, 1.0, 1e-4
# Gradient reconstruction: one MNIST image per client, the untrained ReLU MLP of bench_gradient_inversion
GRAD_CLIENTS = (10, 100)
FPRS = (0.01, 0.001)

CONF = ThreatModel.of(Access.CONFIDENCES, Access.LOGITS, adversary="API client")
LOSS_TM = ThreatModel.of(Access.LOSS, adversary="API client querying labelled records")
LABELS_TM = ThreatModel.of(Access.LABELS, adversary="client of a top-1 label API")
UPDATE_TM = ThreatModel.of(Access.CLIENT_UPDATE, adversary="curious federated server")


@contextlib.contextmanager
def _dp_epsilon(eps: float) -> Iterator[None]:
    """bench_membership's DP-SGD recipe (its ``_dp_models``) calibrated to ``eps`` instead of its epsilon 1."""
    old = bm.DP_EPSILON
    bm.DP_EPSILON = eps
    try:
        yield
    finally:
        bm.DP_EPSILON = old


def _pct(r: AttackResult, key: str) -> str:
    return f"{r.metrics[key]:.1%}"


# --------------------------------------------------------------------------- membership on MNIST


class _Candidates:
    """Members then non-members, and the ground truth (for the scorer only)."""

    def __init__(self, members: tuple[np.ndarray, np.ndarray], non_members: tuple[np.ndarray, np.ndarray]):
        self.members, self.non_members = members, non_members
        self.X = np.concatenate([members[0], non_members[0]])
        self.y = np.concatenate([members[1], non_members[1]])
        self.is_member = np.r_[np.ones(len(members[1]), bool), np.zeros(len(non_members[1]), bool)]


def _membership_rows(
    defence: str,
    api: ModelAPI,
    c: _Candidates,
    shadows: ShadowModels,
    refs: ShadowModels,
    population: tuple[np.ndarray, np.ndarray],
    arch: torch.nn.Module,
    n_noise: int,
    test_acc: float,
    eps: str,
) -> tuple[list[list[Any]], list[str]]:
    """Every attack against one (defended) API; refusals become rows with the message."""
    cfg = shadows.config
    attacks: list[tuple[str, Callable[[], AttackResult]]] = []

    def loss_attack() -> AttackResult:
        obs = LossObservations(api.loss(c.X, c.y, attack="loss-threshold"))
        return score_membership(LossThresholdAttack(LOSS_TM).run(obs), c.is_member, fprs=FPRS, rng=SEED)

    def audit(make: Callable[[], Any]) -> Callable[[], AttackResult]:
        return lambda: run_membership_audit(make(), api, c.members, c.non_members, rng=SEED)

    k = len(shadows)
    attacks.append(("LOSS threshold (Yeom)", loss_attack))
    for online in (True, False):
        attacks.append(
            (
                f"LiRA {'online' if online else 'offline'} ({k} shadows, fixed variance)",
                audit(
                    lambda o=online: LiRA(
                        CONF, arch, cfg, n_shadows=k, online=o, fixed_variance=True, seed=SEED
                    ).fit(shadows)
                ),
            )
        )
    attacks.append(
        (
            "RMIA offline (2 references)",
            audit(lambda: RMIA(CONF, arch, cfg, seed=SEED).fit(refs, population=population)),
        )
    )
    attacks.append(
        (
            f"label-only (noise robustness, {n_noise} copies)",
            audit(lambda: LabelOnlyAttack(LABELS_TM, n_noise=n_noise, sigma=0.3, clip=(0.0, 1.0), seed=SEED)),
        )
    )
    rows, refusals = [], []
    for name, fn in attacks:
        try:
            r = fn()
        except ThreatModelError as err:
            rows.append([defence, name, "refused", "-", "-", f"{test_acc:.1%}", eps])
            refusals.append(f'{name}: "{err}"')
            continue
        rows.append(
            [
                defence,
                name,
                f"{r.metrics['auc']:.3f}",
                _pct(r, "tpr_at_1pct_fpr"),
                _pct(r, "tpr_at_0.1pct_fpr"),
                f"{test_acc:.1%}",
                eps,
            ]
        )
    return rows, refusals


def _dp_population(h: int, X: np.ndarray, y: np.ndarray, k: int, seed: int, n: int, cfg: Any) -> ShadowModels:
    """k DP-SGD models with the target's recipe on balanced random halves of (X, y)."""
    keep = bm._balanced_keep(k, len(y), np.random.default_rng(seed))
    t0 = time.perf_counter()
    models, _, _ = bm._dp_models(h, X, y, [np.flatnonzero(r) for r in keep], seed + 1, n)
    out = ShadowModels.from_trained(EnsembleParams.from_modules(models), keep, (X, y), cfg)
    out.seconds_ = time.perf_counter() - t0
    return out


def _membership(quick: bool) -> str:
    s = QUICK if quick else FULL
    X_all, y_all, source = bm._load(quick)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(y_all))
    a, b = s["n_pool"], s["n_pool"] + s["n_aux"]
    X, y = X_all[order[:a]], y_all[order[:a]]
    population = (X_all[order[a:b]], y_all[order[a:b]])
    public = X_all[order[b : b + s["n_public"]]]
    is_member = np.zeros(len(y), dtype=bool)
    is_member[rng.choice(len(y), len(y) // 2, replace=False)] = True
    c = _Candidates((X[is_member], y[is_member]), (X[~is_member], y[~is_member]))
    d, h, n = X.shape[1], s["hidden"], len(y) // 2
    cfg = bm.CONFIG
    arch = build_model("mlp", (d,), 10, hidden=(h,), seed=SEED)
    k = s["shadows"]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    target = build_model("mlp", (d,), 10, hidden=(h,), seed=SEED + 1)
    train_epochs(target, *c.members, cfg, np.random.default_rng(SEED + 1))
    acc = evaluate(target, *c.non_members)["accuracy"]
    shadows = ShadowModels(arch, cfg, k, seed=SEED + 10).fit((X, y))
    refs = ShadowModels(arch, cfg, 2, seed=SEED + 20).fit(population)
    timings["target and undefended shadows"] = time.perf_counter() - t0

    rows: list[list[Any]] = []
    refusals: list[str] = []
    n_noise = s["n_noise"]

    def add(
        defence: str, api: ModelAPI, sh: ShadowModels, rf: ShadowModels, test_acc: float, eps: str
    ) -> None:
        t = time.perf_counter()
        r, m = _membership_rows(defence, api, c, sh, rf, population, arch, n_noise, test_acc, eps)
        rows.extend(r)
        refusals.extend(f"{defence}, {x}" for x in m)
        timings[f"attacks: {defence}"] = time.perf_counter() - t

    add("none (logits exposed)", ModelAPI(target, Access.LOGITS), shadows, refs, acc, "inf")

    dp_notes = []
    for eps in EPSILONS:
        t = time.perf_counter()
        with _dp_epsilon(eps):
            (dp_target,), z, spent = bm._dp_models(h, X, y, [np.flatnonzero(is_member)], SEED + 100, n)
            dp_shadows = _dp_population(h, X, y, k, SEED + 200, n, cfg)
            dp_refs = _dp_population(h, *population, 2, SEED + 300, n, cfg)
        timings[f"DP-SGD eps {eps:g}: target and shadows"] = time.perf_counter() - t
        dp_notes.append(f"eps {eps:g}: noise multiplier {z:.2f}")
        dp_acc = evaluate(dp_target, *c.non_members)["accuracy"]
        add(
            f"DP-SGD eps {eps:g}",
            ModelAPI(dp_target, Access.LOGITS),
            dp_shadows,
            dp_refs,
            dp_acc,
            f"{spent:.2f}",
        )

    pate_note = _pate_rows(c, public, d, h, add, shadows, refs, timings)

    add("top-1 label only", ModelAPI(target, Access.LABELS), shadows, refs, acc, "inf")
    for dec in (2, 1):
        add(
            f"confidences rounded to {dec} decimal{'s' if dec > 1 else ''}",
            RoundedConfidences(target, dec),
            shadows,
            refs,
            acc,
            "inf",
        )

    head = ["defence", "attack", "AUC", "TPR @ 1% FPR", "TPR @ 0.1% FPR", "target test acc.", "epsilon"]
    timing_rows = [[k_, f"{v:.1f}"] for k_, v in timings.items()]
    return "\n".join(
        [
            f"Data: {source}; bench_membership's setting: a pool of {len(y):,} candidates, the target (MLP {d}-{h}-10, "
            f"SGD lr {cfg.lr}, momentum {cfg.momentum}, batch {cfg.batch_size}, {cfg.epochs} epochs) trains on a random "
            f"half ({n:,} members, {n:,} non-members). LiRA's {k} shadows train on random halves of the pool (online: "
            "IN and OUT; offline: OUT only; one pooled variance per side); RMIA's 2 reference models on random halves "
            f"of {len(population[1]):,} other records, which are also its population z. Label-only: share of {n_noise} "
            "noisy copies (sigma 0.3, clipped to [0, 1]) still given the true label. 'target test acc.' is the "
            "accuracy on the non-members. Every attack queries the target only through the API the defence leaves "
            "(`ModelAPI`, `RoundedConfidences`); the threat model of LiRA and RMIA asks for logits or confidences, "
            "that of the LOSS attack for the loss, which an API with rounded confidences answers as "
            "-log(rounded p_y).",
            "",
            f"DP-SGD rows: bench_membership's recipe (Poisson rate {bm.DP_BATCH}/{n}, {bm.DP_EPOCHS} epochs, clip "
            f"{bm.DP_CLIP}, lr {bm.DP_LR}, delta {bm.DP_DELTA:g}) with the noise multiplier calibrated by the RDP "
            f"accountant to each epsilon ({'; '.join(dp_notes)}); 'epsilon' is the accountant's value for the steps "
            "that ran. The adversary knows the recipe: its shadows and reference models are DP-SGD models too. "
            + pate_note
            + " Top-1 and rounded rows: the undefended target behind a restricted API, attacked with the undefended "
            "shadows (the adversary does not round its shadows' outputs: an adaptive one would).",
            "",
            table(head, rows),
            "",
            "Refused by the API (the ThreatModelError each attack raised):",
            "",
            *[f"- {x}" for x in refusals],
            "",
            table(["stage", "seconds"], timing_rows),
        ]
    )


def _pate_rows(
    c: _Candidates,
    public: np.ndarray,
    d: int,
    h: int,
    add: Callable[..., None],
    shadows: ShadowModels,
    refs: ShadowModels,
    timings: dict[str, float],
) -> str:
    """PATE's student as the target: its members are the teachers' private records."""
    try:
        from ppml.dp.pate.aggregators import GNMax
        from ppml.dp.pate.estimator import PATE
        from ppml.dp.pate.student import PATEStudent
    except ImportError as err:  # pragma: no cover - PATE absent
        return f"PATE row left out: {err}."
    t = time.perf_counter()
    nq = min(PATE_QUERIES, len(public))
    student = PATEStudent(
        build_model("mlp", (d,), 10, hidden=(h,), seed=SEED), rounds=1, epochs=30, round_epochs=5, seed=SEED
    )
    pate = PATE(
        PATE_TEACHERS,
        GNMax(PATE_SIGMA),
        "mlp",
        student,
        teacher_config=bm.CONFIG,
        delta=bm.DP_DELTA,
        seed=SEED,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pate.fit(*c.members, public_X=public, n_queries=nq, num_classes=10)
    timings["PATE: teachers, answers, student"] = time.perf_counter() - t
    net = pate.student_.model_
    acc = pate.score(*c.non_members)
    rel = pate.epsilon_data_dependent_released_
    eps = f"{pate.epsilon_:.1f} (data-dep. released {rel:.1f})" if rel is not None else f"{pate.epsilon_:.1f}"
    add("PATE student", ModelAPI(net, Access.LOGITS), shadows, refs, acc, eps)
    return (
        f"PATE row: {PATE_TEACHERS} teachers (MLP {d}-128-10, the target's SGD recipe) on disjoint shares of the "
        f"target's {len(c.members[1]):,} members (the private records), GNMax (sigma {PATE_SIGMA:g}) answers "
        f"{nq} public queries (other records of the same data set), the student (MLP {d}-{h}-10) learns from the "
        f"{pate.n_answered_} answers and self-trains on the other {len(public) - nq} public records; its members for "
        "the attack are the private records (was this record in the teachers' data?). Epsilon: data-independent "
        f"(GNMax's RDP bound at delta {bm.DP_DELTA:g}), and the data-dependent one released with smooth sensitivity "
        "(with so few teachers the votes lack the margins the data-dependent analysis needs, and the released "
        "value can exceed the data-independent bound, which then is the guarantee). The "
        "adversary attacks the student with the undefended shadows (simulating whole PATE pipelines as shadows is "
        "out of this benchmark's budget)."
    )


# --------------------------------------------------------------------------- user-level membership, ADAS


def _adas(quick: bool) -> tuple[str, dict[float, float]]:
    s = ADAS_QUICK if quick else ADAS_FULL
    nv = s["vehicles"]
    fleet = make_fleet(nv, seed=SEED, days=s["days"])
    full = fleet.to_dataset(include_location=True, location_frequencies=6)
    owners = full.owners
    rng = np.random.default_rng(SEED)
    vehicles = rng.permutation(np.unique(owners))
    members_v = vehicles[: nv // 2]
    in_train = np.isin(owners, members_v)
    train = Dataset(full.X[in_train], full.y[in_train], "adas", full.num_classes, owners=owners[in_train])
    clients = ByOwnerPartitioner().partition(train, None, np.random.default_rng(SEED))
    n_clients = len(clients)
    R, E, h = s["rounds"], s["local_epochs"], s["hidden"]
    non = ~in_train
    rows, zs = [], {}
    for eps in (None, *EPSILONS):
        t0 = time.perf_counter()
        model = build_model("mlp", (full.X.shape[1],), full.num_classes, hidden=(h, h), seed=SEED)
        if eps is None:
            strategy: Any = FedAvg(1.0, E, ADAS_B, ADAS_LR)
            label, eps_txt, z = "FedAvg (all clients every round)", "inf", None
        else:
            z = calibrate_noise_multiplier(eps, ADAS_DELTA, ADAS_Q, R)
            zs[eps] = z
            acct = PrivacyAccountant("rdp", ADAS_DELTA)
            strategy = DPFedAvg(FedAvg(ADAS_Q, E, ADAS_B, ADAS_LR), ADAS_CLIP, z, acct)
            label = f"DP-FedAvg eps {eps:g} (z {z:.2f})"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_federated(model, clients, strategy, rounds=R, seed=SEED, backend="vectorized")
        if eps is not None:
            eps_txt = f"{strategy.accountant.epsilon():.2f}"
        train_s = time.perf_counter() - t0
        Xc = np.concatenate([full.X[in_train], full.X[non]])
        yc = np.concatenate([full.y[in_train], full.y[non]])
        oc = np.concatenate([owners[in_train], owners[non]])
        is_member = np.r_[np.ones(int(in_train.sum()), bool), np.zeros(int(non.sum()), bool)]
        losses = per_example_loss(model, Xc, yc)
        rec = LossThresholdAttack(LOSS_TM).run(LossObservations(losses))
        rec_scored = score_membership(rec, is_member, fprs=FPRS, rng=SEED)
        per_owner = aggregate_by_owner(rec, oc, how="mean")
        own_scored = score_membership(per_owner, owner_membership(is_member, oc), fprs=(0.1, 0.02), rng=SEED)
        acc = evaluate(model, full.X[non], full.y[non])["accuracy"]
        rows.append(
            [
                label,
                f"{own_scored.metrics['auc']:.3f} [{own_scored.metrics['auc_ci_low']:.3f}, "
                f"{own_scored.metrics['auc_ci_high']:.3f}]",
                _pct(own_scored, "tpr_at_10pct_fpr"),
                _pct(own_scored, "tpr_at_2pct_fpr"),
                f"{rec_scored.metrics['auc']:.3f}",
                f"{acc:.1%}",
                eps_txt,
                f"{train_s:.1f}",
            ]
        )
    majority = float(np.bincount(full.y[non]).max() / non.sum())
    text = "\n".join(
        [
            f"Synthetic ADAS fleet (`make_fleet({nv}, seed={SEED}, days={s['days']})`, {len(full.y):,} records, "
            "sensor features plus the position and a 6-frequency sinusoidal encoding of it), one client per vehicle. "
            f"A random half of the vehicles ({n_clients}) train, the other half are held out; the question is 'was "
            f"this vehicle in training?'. Model MLP {full.X.shape[1]}-{h}-{h}-{full.num_classes}; clients run {E} local "
            f"epochs (batch {ADAS_B}, lr {ADAS_LR}) per round, {R} rounds, vectorized backend. DP-FedAvg: Poisson "
            f"client sampling q = {ADAS_Q}, clip {ADAS_CLIP}, Gaussian noise z * clip on the sum, delta {ADAS_DELTA:g} "
            "(user level), noise multiplier calibrated by the RDP accountant to each epsilon; 'epsilon' is the "
            "accountant's value after the rounds that ran. The attack is the LOSS attack on every record of every "
            "candidate vehicle, aggregated per vehicle (mean score, `aggregate_by_owner`); with "
            f"{nv // 2} + {nv - nv // 2} vehicles the TPR resolution is {1 / (nv // 2):.0%}, so TPRs are read at 10% "
            f"and 2% FPR. Majority-class accuracy on the held-out vehicles: {majority:.1%}.",
            "",
            table(
                [
                    "training",
                    "vehicle AUC [95% CI]",
                    "TPR @ 10% FPR",
                    "TPR @ 2% FPR",
                    "record AUC",
                    "held-out acc.",
                    "epsilon",
                    "train s",
                ],
                rows,
            ),
        ]
    )
    return text, zs


# --------------------------------------------------------------------------- gradient reconstruction


def _best_psnr(guesses: np.ndarray, truth: np.ndarray) -> float:
    """The best PSNR of any guess against any true image (the adversary's luckiest match)."""
    return max(psnr(g, t, data_range=1.0) for g in guesses for t in truth)


def _fmt(v: float) -> str:
    return "exact" if math.isinf(v) else f"{v:.1f}"


def _gradients(quick: bool, zs: dict[float, float]) -> str:
    X_all, y_all, source, _ = bgi._images(quick)
    shape = tuple(X_all.shape[1:])
    idx = np.random.default_rng(SEED).choice(len(y_all), max(GRAD_CLIENTS), replace=False)
    X, y = X_all[idx], y_all[idx]
    model = build_model("mlp", shape, 10, hidden=(200,), seed=SEED)
    ups = [simulate_client_update(model, X[i : i + 1], y[i : i + 1]) for i in range(len(y))]
    iters = 100 if quick else 500
    analytic = AnalyticFCInversion(UPDATE_TM, bounds=(0.0, 1.0))

    def as_one(u: ClientUpdate) -> ClientUpdate:
        return ClientUpdate.from_gradients(u.model, u.gradients, batch_size=1, input_shape=u.input_shape)

    views: list[tuple[str, ClientUpdate, int]] = [("one client's update (FedSGD gradient)", ups[0], 1)]
    for k in GRAD_CLIENTS:
        views.append((f"secure aggregation: sum of {k} updates", secure_aggregate_view(ups[:k]), k))
    for eps in sorted(zs):
        z = zs[eps]
        views.append(
            (
                f"DP-FedAvg (clip 1, z {z:.2f} of eps {eps:g}): one update",
                secure_aggregate_view(ups[:1], clip_norm=1.0, noise_multiplier=z, rng=SEED),
                1,
            )
        )
    views.append(
        (
            f"DP-FedAvg (clip 1, z {zs[max(zs)]:.2f}) + secure aggregation: sum of {GRAD_CLIENTS[0]}",
            secure_aggregate_view(
                ups[: GRAD_CLIENTS[0]], clip_norm=1.0, noise_multiplier=zs[max(zs)], rng=SEED
            ),
            GRAD_CLIENTS[0],
        )
    )
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, view, k in views:
            truth = X[:k]
            t0 = time.perf_counter()
            one = _best_psnr(analytic.run(as_one(view)).guesses, truth)
            if k > 1:
                batch = analytic.run(view)
                per = np.array([max(psnr(g, t, data_range=1.0) for t in truth) for g in batch.guesses])
                batch_txt = f"{_fmt(float(per.max()))} ({int((per >= 30).sum())}/{k} >= 30 dB)"
            else:
                batch_txt = "-"
            a_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ig = InvertingGradients(UPDATE_TM, rng=SEED, iterations=iters, bounds=(0.0, 1.0)).run(
                as_one(view)
            )
            ig_psnr = _best_psnr(ig.guesses, truth)
            ig_s = time.perf_counter() - t0
            mean_img = f"{_best_psnr(truth.mean(axis=0, keepdims=True), truth):.1f}" if k > 1 else "-"
            rows.append([name, _fmt(one), batch_txt, _fmt(ig_psnr), mean_img, f"{a_s:.2f}", f"{ig_s:.1f}"])
    rand = _best_psnr(np.random.default_rng(SEED).random((1, *shape)), X[:1])
    return "\n".join(
        [
            f"{source}; the untrained MLP {int(np.prod(shape))}-200-10 (ReLU) of the gradient-inversion benchmark; "
            "each client holds one image and uploads the gradient of its loss (FedSGD; a one-step FedAvg delta is "
            "-lr times it). The server sees one update, or under secure aggregation only the sum of the round's "
            "updates (`secure_aggregate_view`: the observation the protocol leaves, computed in the clear), or under "
            "DP-FedAvg the clipped updates' sum plus Gaussian noise z * clip with z from the ADAS table's epsilons. "
            "PSNR (dB, [0, 1] pixels) of the best-matching pair of a guess and a true image of the round. 'as one "
            "image': the attack reads the observation as one example's update; 'as a batch of k': the analytic "
            "attack returns k guesses (rows a single image alone activates are exact). Inverting Gradients "
            f"(cosine + TV, {iters} Adam iterations, one restart) reads it as one image. 'mean image' is no attack: "
            "the pixel mean of the round's true images against its best-matching image, the mixture an attack on a "
            f"sum tends to return. A uniform random image scores {rand:.1f} dB against one image.",
            "",
            table(
                [
                    "server's observation",
                    "analytic FC, as one image",
                    "analytic FC, as a batch of k (best; recovered)",
                    "Inverting Gradients, as one image",
                    "mean image (no attack)",
                    "analytic s",
                    "IG s",
                ],
                rows,
            ),
        ]
    )


def run(quick: bool) -> str:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="GaussianMechanism runs with secure=False")
    t0 = time.perf_counter()
    membership = _membership(quick)
    t1 = time.perf_counter()
    adas, zs = _adas(quick)
    t2 = time.perf_counter()
    grads = _gradients(quick, zs)
    t3 = time.perf_counter()
    return "\n".join(
        [
            "### Membership inference on MNIST against defended targets",
            "",
            membership,
            "",
            "### User-level membership on the ADAS fleet: FedAvg against DP-FedAvg",
            "",
            adas,
            "",
            "### Gradient reconstruction: one update, secure aggregation, DP-FedAvg noise",
            "",
            grads,
            "",
            f"Sections: membership {t1 - t0:.0f} s, ADAS {t2 - t1:.0f} s, gradients {t3 - t2:.0f} s (one torch thread, "
            "2 shared cores).",
        ]
    )
