"""Membership inference on MNIST (Carlini et al. 2022 setting): LOSS, Shokri shadow models, LiRA online and
offline with 16 and 64 shadow models, RMIA and label-only attacks against one overfit MLP, the same attacks
against a DP-SGD target at epsilon 1, the cost of each attack, and shadow training vectorized against one
model after another. All numbers computed live."""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import find_data_dir, table, with_threads
from ppml.attacks.base import Access, AttackResult, ThreatModel
from ppml.attacks.label_only import LabelOnlyAttack
from ppml.attacks.lira import LiRA
from ppml.attacks.membership import membership_audit, run_membership_audit
from ppml.attacks.metrics import plot_roc
from ppml.attacks.rmia import RMIA
from ppml.attacks.shadow import ShadowModelAttack, ShadowModels
from ppml.dp.accounting import PrivacyAccountant, calibrate_noise_multiplier
from ppml.dp.dpsgd import DPSGD
from ppml.models import build_model
from ppml.train import TrainConfig, evaluate, train_epochs
from ppml.train.ensemble import EnsembleParams, train_ensemble, train_ensemble_sequential

TITLE = "Membership inference: LOSS, Shokri, LiRA, RMIA, label-only on MNIST; DP-SGD at epsilon 1; cost"

SEED = 0
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "figures" / "membership_roc_mnist.png"
# MNIST: a pool of 2N = 2,000 candidates; the target trains on a random half (Carlini et al.'s setup).
FULL = {"n_pool": 2000, "n_aux": 2000, "hidden": 128, "shadows": (16, 64), "n_noise": 50}
QUICK = {"n_pool": 800, "n_aux": 900, "hidden": 64, "shadows": (8, 16), "n_noise": 10}
CONFIG = TrainConfig(epochs=30, batch_size=32, lr=0.05, momentum=0.5)
# DP-SGD target and shadows: Poisson rate 200/1000, 20 epochs, clip 1, delta 1e-5 (< 1/N).
DP_EPSILON, DP_DELTA, DP_BATCH, DP_EPOCHS, DP_LR, DP_CLIP = 1.0, 1e-5, 200, 20, 0.5, 1.0
FPRS = (0.01, 0.001)


def _load(quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST (full run) or scikit-learn's 8x8 digits (quick run, or MNIST absent)."""
    data_dir = None if quick else find_data_dir("mnist")
    if data_dir is not None:
        from ppml.data.files import load_mnist

        ds = load_mnist(data_dir)
        return ds.X.reshape(len(ds.y), -1), ds.y, "MNIST"
    from sklearn.datasets import load_digits

    d = load_digits()
    note = "scikit-learn digits (8x8)" + ("" if quick else "; MNIST not found in PPML_DATA or ../shared/data")
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64), note


def _balanced_keep(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each of n records IN for exactly k / 2 of k models (as ShadowModels draws it)."""
    return np.argsort(rng.random((k, n)), axis=0) < k // 2


def _dp_models(
    hidden: int, X: np.ndarray, y: np.ndarray, subsets: list[np.ndarray], seed: int, n: int
) -> tuple[list[torch.nn.Module], float, float]:
    """DP-SGD models, one per subset, one after another (ghost clipping), all with the target's recipe:
    Poisson rate DP_BATCH / n and the noise multiplier that gives the target epsilon DP_EPSILON.
    Returns the models, the noise multiplier and the last model's accountant epsilon."""
    q = DP_BATCH / n
    steps = math.ceil(DP_EPOCHS / q)
    z = calibrate_noise_multiplier(DP_EPSILON, DP_DELTA, q, steps)
    models, eps = [], math.nan
    for i, sub in enumerate(subsets):
        model = build_model("mlp", (X.shape[1],), 10, hidden=(hidden,), seed=seed + i)
        opt = DPSGD(z, DP_CLIP, q, lr=DP_LR, clipping="ghost")
        opt.fit(
            model,
            X[sub],
            y[sub],
            accountant=PrivacyAccountant("rdp", DP_DELTA),
            rng=seed + 1000 + i,
            steps=steps,
        )
        models.append(model)
        eps = opt.epsilon_
    return models, z, eps


def _cell(r: AttackResult, key: str) -> str:
    v, lo, hi = r.metrics[key], r.metrics[f"{key}_ci_low"], r.metrics[f"{key}_ci_high"]
    return f"{v:.1%} [{lo:.1%}, {hi:.1%}]"


def _row(label: str, models: str, r: AttackResult, train_s: float) -> list[Any]:
    return [
        label,
        models,
        f"{r.metrics['auc']:.3f} [{r.metrics['auc_ci_low']:.3f}, {r.metrics['auc_ci_high']:.3f}]",
        f"{r.metrics['balanced_accuracy']:.3f}",
        _cell(r, "tpr_at_1pct_fpr"),
        _cell(r, "tpr_at_0.1pct_fpr"),
        f"{train_s:.1f}",
        f"{r.seconds:.2f}",
    ]


def _attacks(
    target: torch.nn.Module,
    members: tuple[np.ndarray, np.ndarray],
    non_members: tuple[np.ndarray, np.ndarray],
    pool_shadows: list[ShadowModels],
    aux_shadows: ShadowModels,
    population: tuple[np.ndarray, np.ndarray],
    arch: torch.nn.Module,
    cfg: TrainConfig,
    n_noise: int,
    *,
    offline_too: bool,
) -> tuple[list[list[Any]], dict[str, AttackResult]]:
    """Every attack against one target; rows for the table and the scored results by label."""
    conf = ThreatModel.of(Access.CONFIDENCES, Access.LOGITS, adversary="API client")
    labels_only = ThreatModel.of(Access.LABELS, adversary="client of a top-1 label API")
    rows, results = [], {}

    def audit(attack: Any) -> AttackResult:
        return run_membership_audit(attack, target, members, non_members, rng=SEED)

    loss = membership_audit(target, members, non_members, rng=SEED)
    rows.append(_row("LOSS threshold (Yeom)", "0", loss, 0.0))
    results["LOSS"] = loss
    shokri = ShadowModelAttack(conf, arch, cfg, seed=SEED).fit(aux_shadows)
    r = audit(shokri)
    rows.append(_row("Shokri shadow models", str(len(aux_shadows)), r, shokri.fit_seconds_))
    results["Shokri"] = r
    for sh in pool_shadows:
        k = len(sh)
        modes = [(True, True), (True, False)] + ([(False, True)] if offline_too else [])
        for online, fixed in modes:
            attack = LiRA(conf, arch, cfg, n_shadows=k, online=online, fixed_variance=fixed, seed=SEED).fit(
                sh
            )
            r = audit(attack)
            name = f"LiRA {'online' if online else 'offline'}, {'fixed' if fixed else 'per-example'} variance"
            rows.append(_row(name, str(k), r, sh.seconds_))
            if fixed:
                results[f"LiRA {'online' if online else 'offline'} ({k})"] = r
    refs = aux_shadows.select([0, 1])
    rmia = RMIA(conf, arch, cfg, seed=SEED).fit(refs, population=population)
    r = audit(rmia)
    rows.append(_row("RMIA offline (a=0.3)", "2", r, refs.seconds_))
    results["RMIA offline (2)"] = r
    gap = audit(LabelOnlyAttack(labels_only))
    rows.append(_row("label-only: gap (correct => member)", "0", gap, 0.0))
    noise = audit(LabelOnlyAttack(labels_only, n_noise=n_noise, sigma=0.3, clip=(0.0, 1.0), seed=SEED))
    rows.append(_row(f"label-only: noise robustness ({n_noise} copies, sigma 0.3)", "0", noise, 0.0))
    results["label-only noise"] = noise
    return rows, results


def run(quick: bool) -> str:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="GaussianMechanism runs with secure=False")
    s = QUICK if quick else FULL
    X_all, y_all, source = _load(quick)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(y_all))
    pool_idx, aux_idx = order[: s["n_pool"]], order[s["n_pool"] : s["n_pool"] + s["n_aux"]]
    X, y = X_all[pool_idx], y_all[pool_idx]
    population = (X_all[aux_idx], y_all[aux_idx])
    is_member = np.zeros(len(y), dtype=bool)
    is_member[rng.choice(len(y), len(y) // 2, replace=False)] = True
    members, non_members = (X[is_member], y[is_member]), (X[~is_member], y[~is_member])
    d, h, n = X.shape[1], s["hidden"], len(y) // 2
    arch = build_model("mlp", (d,), 10, hidden=(h,), seed=SEED)
    cfg = CONFIG

    # ---- the target: trained to overfit on N records
    target = build_model("mlp", (d,), 10, hidden=(h,), seed=SEED + 1)
    train_epochs(target, members[0], members[1], cfg, np.random.default_rng(SEED + 1))
    acc_train, acc_test = evaluate(target, *members)["accuracy"], evaluate(target, *non_members)["accuracy"]

    # ---- shadows: random halves of the candidate pool (LiRA), of the auxiliary population (Shokri, RMIA)
    k_small, k_large = s["shadows"]
    pool_shadows = [ShadowModels(arch, cfg, k, seed=SEED + 10 + k).fit((X, y)) for k in (k_small, k_large)]
    aux_shadows = ShadowModels(arch, cfg, k_small, seed=SEED + 20).fit(population)
    rows, results = _attacks(
        target,
        members,
        non_members,
        pool_shadows,
        aux_shadows,
        population,
        arch,
        cfg,
        s["n_noise"],
        offline_too=True,
    )

    # ---- DP-SGD target at epsilon 1 and DP-SGD shadows (the adversary knows the recipe)
    t0 = time.perf_counter()
    (dp_target,), z, eps = _dp_models(h, X, y, [np.flatnonzero(is_member)], SEED + 100, n)
    dp_target_s = time.perf_counter() - t0
    dp_acc_train, dp_acc_test = (
        evaluate(dp_target, *members)["accuracy"],
        evaluate(dp_target, *non_members)["accuracy"],
    )
    keep = _balanced_keep(k_small, len(y), np.random.default_rng(SEED + 30))
    t0 = time.perf_counter()
    dp_shadow_models, _, _ = _dp_models(h, X, y, [np.flatnonzero(r) for r in keep], SEED + 200, n)
    dp_pool = ShadowModels.from_trained(EnsembleParams.from_modules(dp_shadow_models), keep, (X, y), cfg)
    dp_pool.seconds_ = time.perf_counter() - t0
    keep_aux = _balanced_keep(k_small, len(population[1]), np.random.default_rng(SEED + 40))
    t0 = time.perf_counter()
    dp_aux_models, _, _ = _dp_models(h, *population, [np.flatnonzero(r) for r in keep_aux], SEED + 300, n)
    dp_aux = ShadowModels.from_trained(EnsembleParams.from_modules(dp_aux_models), keep_aux, population, cfg)
    dp_aux.seconds_ = time.perf_counter() - t0
    dp_rows, dp_results = _attacks(
        dp_target,
        members,
        non_members,
        [dp_pool],
        dp_aux,
        population,
        arch,
        cfg,
        s["n_noise"],
        offline_too=False,
    )

    # ---- cost: the same shadows vectorized (one process, and one process per core) and one after another
    subsets = [np.flatnonzero(r) for r in pool_shadows[0].keep_]
    small = build_model("mlp", (d,), 10, hidden=(16,), seed=SEED)
    small_cfg = TrainConfig(epochs=10, batch_size=16, lr=0.05, momentum=0.5)
    cores = os.cpu_count() or 1

    ways = (
        ("vec", train_ensemble),
        ("vecT", with_threads(train_ensemble, cores)),
        ("vecN", lambda *a, **k: train_ensemble(*a, n_jobs=cores, **k)),
        ("seq", train_ensemble_sequential),
        ("seqT", with_threads(train_ensemble_sequential, cores)),
    )
    subsets_large = [np.flatnonzero(r) for r in pool_shadows[1].keep_]
    costs: dict[Any, Any] = {}
    settings = {
        "large": (arch, cfg, subsets, 1 if quick else 3),
        "large_many": (arch, cfg, subsets_large, 1),
        "small": (small, small_cfg, subsets, 1 if quick else 3),
    }
    for key, (model, c, subs, repeats) in settings.items():
        # Alternate the methods over repeats and keep each one's median: the cores are shared.
        for _ in range(repeats):
            for how, fn in ways:
                w0, c0 = time.perf_counter(), time.process_time()
                costs[key, how] = fn(model, X, y, subs, c, seed=SEED)
                costs.setdefault((key, how, "wall"), []).append(time.perf_counter() - w0)
                costs.setdefault((key, how, "cpu"), []).append(time.process_time() - c0)
        for how, _ in ways:
            for unit in ("wall", "cpu"):
                costs[key, how, unit] = float(np.median(costs[key, how, unit]))

    def max_diff(how: str) -> float:
        return float((costs["large", how].to_flat() - costs["large", "seq"].to_flat()).abs().max())

    diff, diff_seq = max(max_diff(how) for how in ("vec", "vecT", "vecN")), max_diff("seqT")
    n_steps = cfg.epochs * math.ceil(float(np.mean([len(s) for s in subsets])) / cfg.batch_size)

    def best(key: str, hows: tuple[str, ...]) -> float:
        return min(costs[key, h, "wall"] for h in hows)

    speedup, speedup_many = (
        best(k, ("seq", "seqT")) / best(k, ("vec", "vecT", "vecN")) for k in ("large", "large_many")
    )

    def cost_row(key: str, label: str, difference: str) -> list[str]:
        wv, wt, wn, ws, wst = (costs[key, h, "wall"] for h in ("vec", "vecT", "vecN", "seq", "seqT"))
        cv, cs = costs[key, "vec", "cpu"], costs[key, "seq", "cpu"]
        return [
            label,
            f"{wv:.2f} ({cv:.2f})",
            f"{wt:.2f}",
            f"{wn:.2f}",
            f"{ws:.2f} ({cs:.2f})",
            f"{wst:.2f}",
            f"{ws / wv:.1f}x ({cs / cv:.1f}x)",
            f"{min(ws, wst) / min(wv, wt, wn):.1f}x",
            difference,
        ]

    figure_note = ""
    if not quick and source == "MNIST":
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        plot_roc(results, FIGURE, title=f"MNIST MLP, {n} in / {n} out")
        figure_note = f"\n\n![log-log ROC of the attacks](figures/{FIGURE.name})"

    head = [
        "attack",
        "shadow / ref. models",
        "AUC [95% CI]",
        "bal. acc.",
        "TPR @ 1% FPR [CI]",
        "TPR @ 0.1% FPR [CI]",
        "train s",
        "attack s",
    ]
    parts = [
        f"Data: {source}; a pool of {len(y):,} candidates, the target trains on a random half ({n:,} members, "
        f"{n:,} non-members); Shokri's shadows and RMIA's reference models train on random halves of "
        f"{len(population[1]):,} other records, which are also RMIA's population z. Target and shadows: MLP "
        f"{d}-{h}-10, SGD lr {cfg.lr}, momentum {cfg.momentum}, batch {cfg.batch_size}, {cfg.epochs} epochs "
        f"(train accuracy {acc_train:.1%}, test {acc_test:.1%}). LiRA's shadows train on random halves of the "
        "candidate pool (each candidate IN for exactly half of them); offline LiRA uses only the OUT half. "
        "AUC intervals: stratified bootstrap (1,000); TPR intervals: Clopper-Pearson; balanced accuracy at the "
        "best threshold (an oracle choice). 'train s' is shadow training (all at once with train_ensemble); "
        "'attack s' is querying the target and scoring. Expected here (measured earlier, same setting): "
        "LOSS AUC 0.584 (TPR@0.1% 0.4%), Shokri 0.572 (0.2%), LiRA online fixed variance 0.715 (5.1%).",
        "",
        table(head, rows),
        figure_note,
        "",
        f"**DP-SGD target at epsilon {DP_EPSILON:g}** (delta {DP_DELTA:g}, Poisson rate {DP_BATCH}/{n}, "
        f"{DP_EPOCHS} epochs, clip {DP_CLIP}, noise multiplier {z:.2f}, accountant epsilon {eps:.3f}; "
        f"train accuracy {dp_acc_train:.1%}, test {dp_acc_test:.1%}; trained in {dp_target_s:.1f} s). The "
        f"adversary knows the recipe: LiRA's {k_small} shadows, Shokri's {k_small} shadows and RMIA's reference "
        "models are DP-SGD models too (trained one after another with ghost clipping; 'train s').",
        "",
        table(head, dp_rows),
        "",
        f"**Shadow training, the same {len(subsets)} shadow models, and LiRA's {len(subsets_large)}** (same "
        "subsets, initialisations and batch orders, so the same trained models: 'max param. diff.' over every "
        f"vectorized way against the sequential one with one thread: rounding, which about {n_steps} SGD steps "
        f"amplify; the sequential loop on {cores} threads differs from itself on one by {diff_seq:.1e}), "
        "median of 3 alternating repeats (one for the larger set). "
        "'vectorized' is `train_ensemble` in this process with one torch thread, then with "
        f"{cores} torch threads; 'vectorized, {cores} processes' is `train_ensemble(n_jobs={cores})`: one "
        "worker process per core, each training its share of the members vectorized with one torch thread "
        "(the workers are started by the first repeat and reused); 'one after another' is "
        f"`train_ensemble_sequential` (the reference: each member trained by the ordinary loop) with one and "
        f"with {cores} torch threads. Wall seconds; in parentheses the CPU seconds of this process (less "
        "sensitive to other jobs on the shared cores). The best speed-up compares the fastest vectorized way "
        "with the fastest sequential one.",
        "",
        table(
            [
                "shadow model",
                "vectorized, 1 thread s",
                f"vectorized, {cores} threads s",
                f"vectorized, {cores} processes s",
                "one after another, 1 thread s",
                f"one after another, {cores} threads s",
                "speed-up, 1 thread",
                "speed-up, best against best",
                "max param. diff.",
            ],
            [
                cost_row(
                    "large", f"MLP {d}-{h}-10, batch {cfg.batch_size}, {cfg.epochs} epochs", f"{diff:.1e}"
                ),
                cost_row(
                    "large_many",
                    f"the same, {len(subsets_large)} shadow models (LiRA's larger set; one repeat)",
                    "",
                ),
                cost_row(
                    "small", f"MLP {d}-16-10, batch {small_cfg.batch_size}, {small_cfg.epochs} epochs", ""
                ),
            ],
        ),
        "",
        "The vectorized step of an MLP is a handful of batched matrix products with the backward written out "
        "(no autograd graph) and the weight gradient accumulated straight into the momentum buffer; it removes "
        "the per-step overhead of the ordinary loop (optimizer, autograd, Python) but not arithmetic: the "
        f"attack's {h}-unit MLP runs its stacked products near the core's peak, so one core gains a few "
        "times, and the products are large enough for torch's threads (or a process per core) to use the "
        "second core, which the ordinary loop's small products cannot. Chunks are sized automatically "
        "(at most 16 MiB of stacked parameters each: two chunks for the 64 shadows). Goal of issue 6 (at "
        f"least 5x), the attack's {h}-unit MLP, fastest against fastest on this {cores}-core machine: "
        f"{speedup:.2f}x for {len(subsets)} shadow models ("
        + ("met" if speedup >= 5 else "not met")
        + f"), {speedup_many:.2f}x for {len(subsets_large)} ("
        + ("met" if speedup_many >= 5 else "not met")
        + ").",
    ]
    return "\n".join(parts)
