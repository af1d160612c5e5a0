"""PATE's student: trained on public data with the labels the teachers released.

The student is the only thing PATE deploys. It sees public inputs, the noisy labels of the queries the
teachers answered, and (optionally) the remaining public inputs without labels; it never sees private
data, teachers or votes, so anything computed from it is post-processing of the released answers and
inherits their (epsilon, delta).

Semi-supervised training: what ppml does and what the papers did
-----------------------------------------------------------------
Papernot et al. (2017, 2018) trained the MNIST and SVHN students with the semi-supervised GAN of
Salimans et al. (2016, "Improved techniques for training GANs"), which is what lets ~300 labels
reach 98-99%. ppml does **not** train a GAN. With ``semi_supervised="self_training"`` it runs
iterative pseudo-labelling (self-training; Lee 2013, "Pseudo-label"; the consistency idea of FixMatch,
Sohn et al. 2020, in its simplest form): train on the answered queries, label the unlabelled public
rows on which the student is confident (``max p >= confidence``), train on both, repeat for
``rounds`` rounds. The answered labels are never replaced. For image inputs each batch is randomly
shifted by up to ``shift`` pixels (``augment="shift"``), which makes the confident predictions more
reliable; tabular inputs may get Gaussian feature noise (``augment="noise"``). It works with any torch
model and with any scikit-learn classifier that has ``predict_proba`` (no augmentation there).

With ``semi_supervised="fixmatch"`` (torch models only) the student is trained by consistency
regularisation, FixMatch (Sohn et al. 2020, "FixMatch: simplifying semi-supervised learning with
consistency and confidence"): after the supervised round, every step takes a batch of answered
queries (cross-entropy on a weakly augmented view) and ``unlabeled_ratio`` times as many unlabelled
rows; each unlabelled row is pseudo-labelled from its weakly augmented view when the student's top
probability reaches ``confidence``, and the student is trained to give that label to a strongly
augmented view of the row (loss weight ``unlabeled_weight``). For images the weak view is a random
shift of up to ``shift`` pixels; the strong view is a random affine map (rotation up to ``rotate``
degrees, scaling by up to ``zoom``, shift up to ``strong_shift`` pixels; no flips, which do not preserve
digits), a zeroed ``cutout`` x ``cutout`` square (DeVries and Taylor 2017) and Gaussian pixel noise
(``noise`` per-pixel standard deviations). For tabular rows the weak view is the row itself and the
strong view adds the Gaussian feature noise. With ``ema > 0`` the deployed student is the exponential
moving average of the weights over the consistency phase (the evaluation model of mean teacher,
Tarvainen and Valpola 2017, and of FixMatch). ``label_smoothing`` (Szegedy et al. 2016, "Rethinking
the Inception architecture") softens the targets of the answered labels, a cheap guard against the few
wrong answers a noisy aggregator releases. Neither is the papers' GAN; the benchmark states which
student it reports.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..._rng import SeedLike, as_generator, derive_seed, torch_generator
from ..._validation import (
    NONNEG_FLOAT,
    NONNEG_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    Interval,
    Options,
    ParameterError,
    check_param,
)
from ...models.zoo import reset_parameters

__all__ = ["PATEStudent", "SEMI_SUPERVISED", "AUGMENTATIONS"]

SEMI_SUPERVISED: tuple[str, ...] = ("none", "self_training", "fixmatch")
"""Student training modes: supervised on the answered queries only, self-training on the rest, or
FixMatch-style consistency regularisation on the rest (torch students only)."""

AUGMENTATIONS: tuple[str, ...] = ("auto", "none", "shift", "noise")
"""Torch students' batch augmentation; ``"auto"`` is ``"shift"`` for images (n, c, h, w), else none."""


def _is_sklearn(est: Any) -> bool:
    return hasattr(est, "fit") and hasattr(est, "predict") and hasattr(est, "get_params")


class PATEStudent:
    """A classifier trained on PATE's released labels, optionally self-trained on unlabelled public data.

    Parameters
    ----------
    model : nn.Module, callable returning an nn.Module, or scikit-learn classifier
        The architecture (a torch model is copied and re-initialised from ``seed``; a scikit-learn one
        is cloned).
    semi_supervised : {"none", "self_training", "fixmatch"}, default "self_training"
        See the module docstring. Without unlabelled data given to :meth:`fit`, "none" is used.
        "fixmatch" needs a torch model.
    rounds : int >= 0, default 3
        Self-training rounds after the supervised one.
    confidence : float in (0, 1), default 0.95
        Unlabelled rows whose top predicted probability reaches it get that label in the next round.
    unlabeled_weight : float >= 0, default 1.0
        Weight of a pseudo-labelled row in the loss (answered rows weigh 1).
    epochs : int, default 30
        Torch: epochs of the supervised round.
    round_epochs : int, default 10
        Torch: epochs of each self-training round (warm-started from the previous round).
    min_steps : int, default 200
        Torch: every round takes at least this many SGD steps (more epochs when there are few labels).
    batch_size : int, default 64
    lr : float, default 0.05
        Torch SGD learning rate (cosine-decayed to 0 within each round).
    momentum : float, default 0.9
    weight_decay : float, default 5e-4
    augment : {"auto", "none", "shift", "noise"}, default "auto"
    shift : int, default 2
        Largest shift in pixels for ``augment="shift"``.
    noise : float, default 0.1
        For ``augment="noise"``: Gaussian noise with this many feature standard deviations.
    consistency_epochs : int, default 30
        FixMatch: passes over the unlabelled rows after the supervised round.
    unlabeled_ratio : int, default 2
        FixMatch: unlabelled rows per answered row in a step (FixMatch's mu).
    strong_shift : int, default 4
        FixMatch, images: largest shift in pixels of the strong view.
    rotate : float, default 15.0
        FixMatch, images: largest rotation in degrees of the strong view.
    zoom : float in [0, 1), default 0.0
        FixMatch, images: the strong view is scaled by a factor drawn uniformly from
        ``[1 - zoom, 1 + zoom]`` (0: no scaling).
    cutout : int, default 10
        FixMatch, images: side of the zeroed square of the strong view (0: none).
    ema : float in [0, 1), default 0.0
        FixMatch: decay of the moving average of the weights that becomes the student (0: the last
        weights).
    label_smoothing : float in [0, 1), default 0.0
        Torch: label smoothing (Szegedy et al. 2016) of the cross-entropy on the answered labels, which
        softens the pull of the few wrong answers the noisy aggregation lets through (pseudo-labels are
        not smoothed). The answered class's target becomes ``1 - s + s / num_classes``: with
        self-training or FixMatch keep it below ``confidence`` or few unlabelled rows pass the threshold.
    seed : int, SeedSequence or Generator, default 0

    Attributes
    ----------
    model_ : nn.Module or scikit-learn estimator
        The trained student.
    num_classes_ : int
    pseudo_labeled_ : list of int
        Unlabelled rows used in each self-training round; for FixMatch, unlabelled rows whose weak
        view passed the confidence threshold in each pass over the unlabelled data.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[], nn.Module] | Any,
        *,
        semi_supervised: str = "self_training",
        rounds: int = 3,
        confidence: float = 0.95,
        unlabeled_weight: float = 1.0,
        epochs: int = 30,
        round_epochs: int = 10,
        min_steps: int = 200,
        batch_size: int = 64,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        augment: str = "auto",
        shift: int = 2,
        noise: float = 0.1,
        consistency_epochs: int = 30,
        unlabeled_ratio: int = 2,
        strong_shift: int = 4,
        rotate: float = 15.0,
        zoom: float = 0.0,
        cutout: int = 10,
        ema: float = 0.0,
        label_smoothing: float = 0.0,
        seed: SeedLike = 0,
    ) -> None:
        self.model = model
        self.semi_supervised = semi_supervised
        self.rounds = rounds
        self.confidence = confidence
        self.unlabeled_weight = unlabeled_weight
        self.epochs = epochs
        self.round_epochs = round_epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.augment = augment
        self.shift = shift
        self.noise = noise
        self.consistency_epochs = consistency_epochs
        self.unlabeled_ratio = unlabeled_ratio
        self.strong_shift = strong_shift
        self.rotate = rotate
        self.zoom = zoom
        self.cutout = cutout
        self.ema = ema
        self.label_smoothing = label_smoothing
        self.seed = seed

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        owner = type(self).__name__
        check_param("semi_supervised", self.semi_supervised, owner, Options(SEMI_SUPERVISED))
        check_param("rounds", self.rounds, owner, NONNEG_INT)
        check_param("confidence", self.confidence, owner, Interval(float, 0, 1, "neither"))
        check_param("unlabeled_weight", self.unlabeled_weight, owner, NONNEG_FLOAT)
        check_param("epochs", self.epochs, owner, POSITIVE_INT)
        check_param("round_epochs", self.round_epochs, owner, POSITIVE_INT)
        check_param("min_steps", self.min_steps, owner, NONNEG_INT)
        check_param("batch_size", self.batch_size, owner, POSITIVE_INT)
        check_param("lr", self.lr, owner, POSITIVE_FLOAT)
        check_param("momentum", self.momentum, owner, Interval(float, 0, 1, "left"))
        check_param("weight_decay", self.weight_decay, owner, NONNEG_FLOAT)
        check_param("augment", self.augment, owner, Options(AUGMENTATIONS))
        check_param("shift", self.shift, owner, NONNEG_INT)
        check_param("noise", self.noise, owner, NONNEG_FLOAT)
        check_param("consistency_epochs", self.consistency_epochs, owner, POSITIVE_INT)
        check_param("unlabeled_ratio", self.unlabeled_ratio, owner, POSITIVE_INT)
        check_param("strong_shift", self.strong_shift, owner, NONNEG_INT)
        check_param("rotate", self.rotate, owner, Interval(float, 0, 180, "both"))
        check_param("zoom", self.zoom, owner, Interval(float, 0, 1, "left"))
        check_param("cutout", self.cutout, owner, NONNEG_INT)
        check_param("ema", self.ema, owner, Interval(float, 0, 1, "left"))
        check_param("label_smoothing", self.label_smoothing, owner, Interval(float, 0, 1, "left"))

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, X_unlabeled: Any = None, *, num_classes: int | None = None) -> PATEStudent:
        """Train on the answered queries ``(X, y)`` and, if self-training, on ``X_unlabeled``.

        Parameters
        ----------
        X : array (n, ...)
            Public inputs whose labels the teachers released.
        y : int array (n,)
            The released labels.
        X_unlabeled : array (m, ...), optional
            Further public inputs without labels.
        num_classes : int, optional
            Default ``max(y) + 1``.
        """
        owner = type(self).__name__
        self._validate()
        yv = np.asarray(y)
        if yv.ndim != 1 or yv.dtype.kind not in "iu" or len(yv) != len(X) or len(yv) == 0:
            raise ParameterError(
                f"The 'y' parameter of {owner}.fit must be a non-empty integer label array with one label per "
                f"row of X ({len(X)}). Got {yv.dtype} of shape {yv.shape} instead.",
                param="y",
            )
        c = int(yv.max()) + 1 if num_classes is None else num_classes
        check_param("num_classes", c, owner, Interval(int, 2, None, "left"))
        self.num_classes_ = c
        rng = as_generator(self.seed)
        Xl = np.asarray(X, dtype=np.float32)
        Xu = (
            None
            if X_unlabeled is None or len(X_unlabeled) == 0
            else np.asarray(X_unlabeled, dtype=np.float32)
        )
        if Xu is not None and Xu.shape[1:] != Xl.shape[1:]:
            raise ParameterError(
                f"The 'X_unlabeled' parameter of {owner}.fit must have rows shaped like X's {Xl.shape[1:]}. "
                f"Got {Xu.shape[1:]} instead.",
                param="X_unlabeled",
            )
        rounds = self.rounds if (self.semi_supervised == "self_training" and Xu is not None) else 0
        self.pseudo_labeled_: list[int] = []
        if self.semi_supervised == "fixmatch" and _is_sklearn(self.model):
            raise ParameterError(
                f"The 'semi_supervised' parameter of {owner} must not be 'fixmatch' for a scikit-learn student "
                f"({type(self.model).__name__}): consistency training needs a torch model. Got 'fixmatch' instead.",
                param="semi_supervised",
            )
        if _is_sklearn(self.model):
            self._fit_sklearn(Xl, yv, Xu, rounds, rng)
        else:
            self._fit_torch(Xl, yv, Xu, rounds, rng)
        return self

    def _pseudo(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = probs.max(axis=1) >= self.confidence
        self.pseudo_labeled_.append(int(keep.sum()))
        return keep, probs.argmax(axis=1).astype(np.int64)

    def _fit_sklearn(
        self, Xl: np.ndarray, yl: np.ndarray, Xu: np.ndarray | None, rounds: int, rng: np.random.Generator
    ) -> None:
        from sklearn.base import clone

        est = clone(self.model)
        if "random_state" in est.get_params():
            est.set_params(random_state=derive_seed(rng) % (2**32))
        flat_l = Xl.reshape(len(Xl), -1)
        est.fit(flat_l, yl)
        if rounds and not hasattr(est, "predict_proba"):
            raise ParameterError(
                f"The 'semi_supervised' parameter of {type(self).__name__} must be 'none' for a scikit-learn "
                f"student without predict_proba ({type(est).__name__}). Got 'self_training' instead.",
                param="semi_supervised",
            )
        for _ in range(rounds):
            assert Xu is not None
            flat_u = Xu.reshape(len(Xu), -1)
            keep, lab = self._pseudo(self._sk_proba(est, flat_u))
            Xa = np.concatenate([flat_l, flat_u[keep]])
            ya = np.concatenate([yl, lab[keep]])
            w = np.concatenate([np.ones(len(yl)), np.full(int(keep.sum()), float(self.unlabeled_weight))])
            est = clone(est)
            try:
                est.fit(Xa, ya, sample_weight=w)
            except TypeError:
                est.fit(Xa, ya)
        self.model_ = est

    def _sk_proba(self, est: Any, X: np.ndarray) -> np.ndarray:
        p = np.asarray(est.predict_proba(X), dtype=np.float64)
        out = np.zeros((len(X), self.num_classes_))
        out[:, np.asarray(est.classes_, dtype=np.int64)] = p
        return out

    def _fit_torch(
        self, Xl: np.ndarray, yl: np.ndarray, Xu: np.ndarray | None, rounds: int, rng: np.random.Generator
    ) -> None:
        if isinstance(self.model, nn.Module):
            net = copy.deepcopy(self.model)
        elif callable(self.model):
            net = self.model()
            if not isinstance(net, nn.Module):
                raise ParameterError(
                    f"The 'model' parameter of {type(self).__name__} must be an nn.Module, a callable returning "
                    f"one, or a scikit-learn classifier. Got a callable returning {type(net).__name__} instead.",
                    param="model",
                )
        else:
            raise ParameterError(
                f"The 'model' parameter of {type(self).__name__} must be an nn.Module, a callable returning one, "
                f"or a scikit-learn classifier. Got {type(self.model).__name__} instead.",
                param="model",
            )
        reset_parameters(net, derive_seed(rng))
        augment = self.augment
        if augment == "auto":
            augment = "shift" if Xl.ndim == 4 else "none"
        if augment == "shift" and Xl.ndim != 4:
            raise ParameterError(
                f"The 'augment' parameter of {type(self).__name__} must not be 'shift' for inputs that are not "
                f"images (n, c, h, w). Got 'shift' for inputs of shape {Xl.shape} instead.",
                param="augment",
            )
        pool = Xl if Xu is None else np.concatenate([Xl, Xu])
        scale = torch.from_numpy(pool.reshape(len(pool), -1).std(axis=0).astype(np.float32))
        gen = torch_generator(rng)
        xl, ylt = torch.from_numpy(Xl), torch.from_numpy(yl.astype(np.int64))
        wl = torch.ones(len(yl))
        self._train(net, xl, ylt, wl, self.epochs, augment, scale, rng, gen)
        if self.semi_supervised == "fixmatch" and Xu is not None:
            net = self._fixmatch(net, xl, ylt, torch.from_numpy(Xu), augment, scale, rng, gen)
        for _ in range(rounds):
            assert Xu is not None
            xu = torch.from_numpy(Xu)
            keep, lab = self._pseudo(_predict_proba(net, xu))
            k = torch.from_numpy(np.flatnonzero(keep))
            xa = torch.cat([xl, xu[k]])
            ya = torch.cat([ylt, torch.from_numpy(lab)[k]])
            wa = torch.cat([wl, torch.full((len(k),), float(self.unlabeled_weight))])
            self._train(net, xa, ya, wa, self.round_epochs, augment, scale, rng, gen)
        net.eval()
        self.model_ = net

    def _train(
        self,
        net: nn.Module,
        X: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        epochs: int,
        augment: str,
        scale: torch.Tensor,
        rng: np.random.Generator,
        gen: torch.Generator,
    ) -> None:
        n = len(y)
        bs = min(self.batch_size, n)
        per_epoch = math.ceil(n / bs)
        epochs = max(epochs, math.ceil(self.min_steps / per_epoch))
        steps = epochs * per_epoch
        opt = torch.optim.SGD(
            net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
        net.train()
        for _ in range(epochs):
            perm = torch.from_numpy(rng.permutation(n))
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                xb = _augment(X[idx], augment, self.shift, self.noise, scale, gen)
                ce = F.cross_entropy(net(xb), y[idx], reduction="none", label_smoothing=self.label_smoothing)
                loss = (ce * w[idx]).sum() / w[idx].sum().clamp_min(1e-12)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()

    def _strong(self, x: torch.Tensor, scale: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """FixMatch's strong view: random affine map, cutout and pixel noise (images); feature noise (rows)."""
        if x.ndim != 4:
            return _augment(x, "noise", 0, self.noise, scale, gen)
        n, _, h, w = x.shape
        ang = (torch.rand(n, generator=gen) * 2.0 - 1.0) * math.radians(self.rotate)
        d = torch.randint(-self.strong_shift, self.strong_shift + 1, (n, 2), generator=gen).to(x.dtype)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)
        cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
        if self.zoom > 0:  # output pixel p samples the input at p / s: the digit grows by s
            inv = 1.0 / (1.0 + (torch.rand(n, generator=gen) * 2.0 - 1.0) * self.zoom).to(x.dtype)
            cos, sin = cos * inv, sin * inv
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        theta[:, 0, 2] = -2.0 * d[:, 0] / w
        theta[:, 1, 2] = -2.0 * d[:, 1] / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.cutout > 0:
            cy = torch.randint(0, h, (n,), generator=gen).view(n, 1, 1)
            cx = torch.randint(0, w, (n,), generator=gen).view(n, 1, 1)
            rows = torch.arange(h).view(1, h, 1)
            cols = torch.arange(w).view(1, 1, w)
            half = self.cutout // 2
            hole = ((rows - cy).abs() <= half) & ((cols - cx).abs() <= half)
            out = out.masked_fill(hole.unsqueeze(1), 0.0)
        if self.noise > 0:
            out = out + self.noise * torch.randn(out.shape, generator=gen, dtype=x.dtype) * scale.view(
                (1, *x.shape[1:])
            ).to(x.dtype)
        return out

    def _fixmatch(
        self,
        net: nn.Module,
        xl: torch.Tensor,
        yl: torch.Tensor,
        xu: torch.Tensor,
        augment: str,
        scale: torch.Tensor,
        rng: np.random.Generator,
        gen: torch.Generator,
    ) -> nn.Module:
        """Consistency phase of FixMatch (Sohn et al. 2020); returns the student (EMA weights if ``ema``)."""
        n, m = len(yl), len(xu)
        bs = min(self.batch_size, n)
        ubs = min(self.unlabeled_ratio * bs, m)
        per_epoch = math.ceil(m / ubs)
        steps = self.consistency_epochs * per_epoch
        opt = torch.optim.SGD(
            net.parameters(),
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=True,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: math.cos(7.0 * math.pi * s / (16.0 * steps)),  # FixMatch's cosine decay
        )
        avg = copy.deepcopy(net) if self.ema > 0 else None
        weak_mode = augment if xl.ndim == 4 else "none"
        lperm = torch.from_numpy(rng.permutation(n))
        lpos = 0
        net.train()
        for _ in range(self.consistency_epochs):
            uperm = torch.from_numpy(rng.permutation(m))
            passed = 0
            for start in range(0, m, ubs):
                if lpos + bs > n:
                    lperm, lpos = torch.from_numpy(rng.permutation(n)), 0
                li = lperm[lpos : lpos + bs]
                lpos += bs
                ui = uperm[start : start + ubs]
                xb = _augment(xl[li], weak_mode, self.shift, self.noise, scale, gen)
                xw = _augment(xu[ui], weak_mode, self.shift, self.noise, scale, gen)
                xs = self._strong(xu[ui], scale, gen)
                with torch.no_grad():
                    conf, pseudo = F.softmax(net(xw), dim=1).max(dim=1)
                    mask = (conf >= self.confidence).to(xl.dtype)
                passed += int(mask.sum())
                logits = net(torch.cat([xb, xs]))
                loss = F.cross_entropy(logits[: len(li)], yl[li], label_smoothing=self.label_smoothing)
                loss = (
                    loss
                    + self.unlabeled_weight
                    * (F.cross_entropy(logits[len(li) :], pseudo, reduction="none") * mask).mean()
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if avg is not None:
                    with torch.no_grad():
                        for pa, pn in zip(avg.parameters(), net.parameters(), strict=True):
                            pa.mul_(self.ema).add_(pn.detach(), alpha=1.0 - self.ema)
                        for ba, bn in zip(avg.buffers(), net.buffers(), strict=True):
                            ba.copy_(bn)
            self.pseudo_labeled_.append(passed)
        return net if avg is None else avg

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise AttributeError(f"This {type(self).__name__} is not fitted yet; call fit first.")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, num_classes)."""
        self._check_fitted()
        if _is_sklearn(self.model_):
            return self._sk_proba(self.model_, np.asarray(X, dtype=np.float32).reshape(len(X), -1))
        return _predict_proba(self.model_, torch.from_numpy(np.asarray(X, dtype=np.float32)))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted classes, int64 array (n,)."""
        self._check_fitted()
        if _is_sklearn(self.model_):
            return np.asarray(self.model_.predict(np.asarray(X).reshape(len(X), -1))).astype(np.int64)
        return self.predict_proba(X).argmax(axis=1).astype(np.int64)

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


@torch.no_grad()
def _predict_proba(net: nn.Module, X: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
    was = net.training
    net.eval()
    try:
        out = [F.softmax(net(X[i : i + batch_size]).double(), dim=1) for i in range(0, len(X), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, 0))
    finally:
        net.train(was)


def _augment(
    x: torch.Tensor, augment: str, shift: int, noise: float, scale: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    if augment == "shift" and shift > 0:
        n, _, h, w = x.shape
        d = torch.randint(-shift, shift + 1, (n, 2), generator=gen).to(x.dtype)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = -2.0 * d[:, 0] / w
        theta[:, 1, 2] = -2.0 * d[:, 1] / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if augment == "noise" and noise > 0:
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return x + noise * z * scale.view((1, *x.shape[1:])).to(x.dtype)
    return x
