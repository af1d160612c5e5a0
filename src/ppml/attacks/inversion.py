"""Model inversion from confidence scores: MI-Face (Fredrikson, Jha and Ristenpart, CCS 2015).

A face-recognition model maps an image to a probability for each person it knows. MI-Face turns the
question around: starting from a blank image, it descends on the cost

    c(x) = 1 - f_label(x) + AuxTerm(x)

(``f_label`` the target's confidence in the person, ``AuxTerm`` optional image priors such as total
variation) with step size ``lambda``, passing each iterate through a ``Process`` function (denoising,
sharpening, clipping to the pixel range). It stops when the confidence reaches ``gamma``, when the cost
has not improved for ``beta`` steps, or after ``alpha`` steps, and returns the iterate of lowest cost
(Fredrikson et al. 2015, Algorithm 1; the paper uses ``alpha=5000, beta=100, gamma=0.99,
lambda=0.1`` on AT&T faces). All classes are inverted together in one batch: the target has no
cross-example layers, so each image's gradient only depends on its own cost.

Threat model
------------
The attack reaches the target through a :class:`PredictionAPI`, which says what the deployed model
exposes. Two ways of computing the descent direction need different access:

* ``gradient="white_box"`` (the paper's MI-Face): the exact gradient of the confidence, which needs
  :attr:`~ppml.attacks.base.Access.PARAMETERS`. Rounding the API's confidences does not affect it.
* ``gradient="estimated"``: a black-box estimate from confidence queries alone, with antithetic
  Gaussian directions (the NES estimator used by Ilyas et al., ICML 2018, for query-limited attacks);
  needs :attr:`~ppml.attacks.base.Access.CONFIDENCES`. ``2 * directions`` queries per class and step.
  Confidences rounded to a few decimals (a defence Fredrikson et al. discuss) leave the probes' cost
  differences at zero, and the estimate with them.

A label-only API (``Access.LABELS``) is refused by both: :class:`ThreatModelError` says what is missing.

Scoring
-------
Ground truth reaches only :func:`score_inversion`. Raw reconstructions of a softmax model are dark,
low-contrast templates that pixel metrics on raw intensities score near chance; every metric of the
scorer therefore z-scores each image first (invariant to brightness and contrast) and names the
person with an *independent* classifier (:class:`IdentityEvaluator`: PCA and logistic regression on
z-scored pixels, a different model from the target), beside normalised cross-correlation with the
person's mean face and nearest training image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._rng import SeedLike, as_generator, torch_generator
from .._validation import (
    NONNEG_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    Interval,
    Options,
    ParameterError,
    check_param,
)
from .base import Access, Attack, AttackResult, ThreatModel, ThreatModelError

__all__ = [
    "PredictionAPI",
    "ModelInversion",
    "DenoiseSharpen",
    "IdentityEvaluator",
    "zscore_images",
    "normalized_cross_correlation",
    "score_inversion",
]

_GRADIENTS = Options(("white_box", "estimated"))
_STARTS = Options(("zeros", "mean"))
_UNIT_CLOSED = Interval(float, 0, 1, "both")
_API_ACCESS = (Access.LABELS, Access.CONFIDENCES, Access.PARAMETERS)


# --------------------------------------------------------------------------- the target's API


class PredictionAPI:
    """A deployed classifier as an adversary reaches it: what it exposes, and nothing more.

    Parameters
    ----------
    model : nn.Module
        Maps a float32 batch of shape ``(n, *input_shape)`` to logits ``(n, num_classes)``; no
        cross-example layers.
    input_shape : sequence of int
        Shape of one input (``(1, 112, 92)`` for an AT&T face).
    exposes : iterable of Access or str, default ``("confidences",)``
        What the API returns: ``"labels"`` (top-1 only), ``"confidences"`` (the probability vector,
        which implies the labels) and/or ``"parameters"`` (the weights: a white box).
    decimals : int >= 0 or None, default None
        Round every returned confidence to this many decimals (a defence); None returns them as
        computed. Does not change what a holder of the parameters computes.

    Attributes
    ----------
    queries_ : int
        Inputs answered so far by :meth:`labels` and :meth:`confidences`.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        *,
        exposes: Iterable[Access | str] = (Access.CONFIDENCES,),
        decimals: int | None = None,
    ) -> None:
        owner = type(self).__name__
        check_param("model", model, owner, nn.Module)
        shape = tuple(int(s) for s in input_shape)
        if not shape or min(shape) < 1:
            raise ParameterError(
                f"The 'input_shape' parameter of {owner} must be a non-empty sequence of positive ints. "
                f"Got {input_shape!r} instead.",
                param="input_shape",
            )
        granted = frozenset(Access(a) for a in exposes)
        for a in granted:
            check_param("exposes", a, owner, Options(_API_ACCESS))
        if not granted:
            raise ParameterError(
                f"The 'exposes' parameter of {owner} must name at least one of labels, confidences, "
                f"parameters. Got {exposes!r} instead.",
                param="exposes",
            )
        check_param("decimals", decimals, owner, Interval(int, 0, None, "left"), None)
        self.model = model
        self.input_shape = shape
        self.exposes = granted
        self.decimals = decimals
        self.queries_ = 0

    @classmethod
    def label_only(cls, model: nn.Module, input_shape: Sequence[int]) -> PredictionAPI:
        """An API that returns the top-1 label only."""
        return cls(model, input_shape, exposes=(Access.LABELS,))

    def describe(self) -> str:
        what = ", ".join(sorted(a.value for a in self.exposes))
        return what + (
            f" (confidences rounded to {self.decimals} decimals)" if self.decimals is not None else ""
        )

    def _require(self, attack: str, access: Access) -> None:
        if access not in self.exposes:
            raise ThreatModelError(
                f"{attack} needs {access.value} but the target exposes only {self.describe()}."
            )

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *self.input_shape).to(torch.float32)
        self.queries_ += int(x.shape[0])
        self.model.eval()
        with torch.no_grad():
            return self.model(x)

    def labels(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Top-1 predicted class of each input (every API answers this)."""
        return self._forward(torch.as_tensor(x)).argmax(1).numpy()

    def confidences(self, x: torch.Tensor | np.ndarray, *, attack: str = "query") -> torch.Tensor:
        """Probability vectors ``(n, num_classes)``, rounded when ``decimals`` is set.

        Raises :class:`ThreatModelError` when the API exposes labels only.
        """
        self._require(attack, Access.CONFIDENCES)
        p = torch.softmax(self._forward(torch.as_tensor(x)).to(torch.float64), dim=1)
        if self.decimals is not None:
            scale = 10.0**self.decimals
            p = torch.round(p * scale) / scale
        return p

    def white_box(self, *, attack: str = "query") -> nn.Module:
        """The model itself; raises :class:`ThreatModelError` unless the API exposes its parameters."""
        self._require(attack, Access.PARAMETERS)
        return self.model


# --------------------------------------------------------------------------- Process functions


class DenoiseSharpen:
    """A ``Process`` step in the spirit of Fredrikson et al.'s: Gaussian denoising, then unsharp masking.

    ``x -> s + amount * (s - blur(s))`` with ``s = blur(x)``; both blurs are Gaussian with standard
    deviation ``sigma`` pixels over the last two axes (height, width).

    Parameters
    ----------
    sigma : float > 0, default 1.0
    amount : float >= 0, default 0.5
        Strength of the sharpening; 0 only denoises.
    """

    def __init__(self, sigma: float = 1.0, amount: float = 0.5) -> None:
        check_param("sigma", sigma, "DenoiseSharpen", POSITIVE_FLOAT)
        check_param("amount", amount, "DenoiseSharpen", NONNEG_FLOAT)
        self.sigma = sigma
        self.amount = amount

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        radius = max(1, math.ceil(3 * self.sigma))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / self.sigma) ** 2)
        k = k / k.sum()
        shape = x.shape
        y = x.reshape(-1, 1, shape[-2], shape[-1])
        y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
        return y.reshape(shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 3:
            raise ValueError(
                f"DenoiseSharpen needs image batches (n, ..., h, w); got shape {tuple(x.shape)}."
            )
        s = self._blur(x)
        return s + self.amount * (s - self._blur(s))


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of each image over its last two axes, shape ``(n,)``."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    return (dh + dw) / x[0].numel()


# --------------------------------------------------------------------------- the attack


class ModelInversion(Attack):
    """MI-Face (Fredrikson et al., CCS 2015): reconstruct a representative input of each class.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``parameters`` (``gradient="white_box"``) or ``confidences`` (``"estimated"``).
    gradient : {"white_box", "estimated"}, default "white_box"
        Exact gradient of the confidence (the paper's attack) or a black-box estimate from
        confidence queries (see the module docstring).
    alpha : int, default 5000
        Most descent steps.
    beta : int, default 100
        Stop a class when its cost has not improved for this many steps.
    gamma : float in [0, 1], default 0.99
        Stop a class once the target's confidence in it reaches ``gamma``.
    lr : float > 0, default 0.1
        Step size ``lambda``.
    tv_weight : float >= 0, default 0.0
        Weight of the total-variation prior in ``AuxTerm`` (0: the paper's softmax/MLP setting).
    process : callable or None, default None
        ``Process`` applied to every iterate after the gradient step (e.g. :class:`DenoiseSharpen`);
        iterates are clipped to ``bounds`` afterwards.
    bounds : (float, float) or None, default (0.0, 1.0)
        Pixel range of the inputs; None leaves iterates unclipped.
    start : {"zeros", "mean"}, default "zeros"
        Start from a blank image, or from the mean of auxiliary images given to :meth:`fit` (an
        adversary that knows what an average face looks like).
    directions : int, default 50
        Random directions per step of the estimated gradient (ignored for ``"white_box"``).
    sigma : float > 0, default 0.01
        Probe step of the estimated gradient, in pixel units.
    seed : int, SeedSequence or numpy Generator, default 0
        Source of the probe directions (the white-box attack is deterministic).

    Attributes
    ----------
    start_ : ndarray or None
        The starting image set by :meth:`fit` (None: zeros).
    """

    name = "model inversion (MI-Face)"

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        gradient: str = "white_box",
        alpha: int = 5000,
        beta: int = 100,
        gamma: float = 0.99,
        lr: float = 0.1,
        tv_weight: float = 0.0,
        process: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bounds: tuple[float, float] | None = (0.0, 1.0),
        start: str = "zeros",
        directions: int = 50,
        sigma: float = 0.01,
        seed: SeedLike = 0,
    ) -> None:
        owner = type(self).__name__
        check_param("gradient", gradient, owner, _GRADIENTS)
        check_param("alpha", alpha, owner, POSITIVE_INT)
        check_param("beta", beta, owner, POSITIVE_INT)
        check_param("gamma", gamma, owner, _UNIT_CLOSED)
        check_param("lr", lr, owner, POSITIVE_FLOAT)
        check_param("tv_weight", tv_weight, owner, NONNEG_FLOAT)
        check_param("start", start, owner, _STARTS)
        check_param("directions", directions, owner, POSITIVE_INT)
        check_param("sigma", sigma, owner, POSITIVE_FLOAT)
        if process is not None and not callable(process):
            raise ParameterError(
                f"The 'process' parameter of {owner} must be a callable or None. Got {process!r} instead.",
                param="process",
            )
        if bounds is not None and not (
            len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds) and bounds[0] < bounds[1]
        ):
            raise ParameterError(
                f"The 'bounds' parameter of {owner} must be a pair (low, high) with low < high or None. "
                f"Got {bounds!r} instead.",
                param="bounds",
            )
        self.gradient = gradient
        self.requires = (Access.PARAMETERS,) if gradient == "white_box" else (Access.CONFIDENCES,)
        super().__init__(threat_model)
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.lr = lr
        self.tv_weight = tv_weight
        self.process = process
        self.bounds = bounds
        self.start = start
        self.directions = directions
        self.sigma = sigma
        self.seed = seed
        self.start_: np.ndarray | None = None

    def fit(self, auxiliary: Any = None) -> ModelInversion:
        """Take the adversary's side knowledge: images whose mean is the start (``start="mean"``).

        Parameters
        ----------
        auxiliary : array-like of shape (m, *input_shape) or None
            Population images: any images of the same kind, not necessarily the target's training set.
            Required when ``start="mean"``, ignored otherwise.
        """
        if self.start == "mean":
            if auxiliary is None:
                raise ValueError(
                    "ModelInversion with start='mean' needs auxiliary images in fit(auxiliary); got None."
                )
            aux = np.asarray(auxiliary, dtype=np.float32)
            if aux.ndim < 2 or aux.shape[0] == 0:
                raise ValueError(
                    f"fit: auxiliary must be a non-empty batch of images; got shape {aux.shape}."
                )
            self.start_ = aux.mean(axis=0)
        else:
            self.start_ = None
        return self

    # -- costs -----------------------------------------------------------------------------------
    def _aux(self, x: torch.Tensor) -> torch.Tensor:
        return self.tv_weight * _total_variation(x) if self.tv_weight > 0 else x.new_zeros(x.shape[0])

    def _post(self, x: torch.Tensor) -> torch.Tensor:
        if self.process is not None:
            x = self.process(x)
        if self.bounds is not None:
            x = x.clamp(float(self.bounds[0]), float(self.bounds[1]))
        return x

    def run(self, observations: PredictionAPI, classes: Sequence[int] | None = None) -> AttackResult:
        """Invert the target for each class.

        Parameters
        ----------
        observations : PredictionAPI
            The target as deployed; must expose what ``gradient`` needs.
        classes : sequence of int, optional
            Classes to reconstruct; default every class of the target's output.

        Returns
        -------
        AttackResult
            ``guesses``: ndarray ``(k, *input_shape)`` float32, the lowest-cost iterate per class;
            ``scores``: the target's confidence in each class at that iterate (as the adversary
            observed it). ``details``: ``classes``, ``steps`` (descent steps per class),
            ``stopped`` (``"gamma"``, ``"beta"`` or ``"alpha"`` per class), ``gradient``, ``queries``
            (API queries, 0 for the white box), ``target`` (what the API exposes).
        """
        if not isinstance(observations, PredictionAPI):
            raise TypeError(
                f"{type(self).__name__}.run expects a PredictionAPI, got {type(observations).__name__}."
            )
        if self.start == "mean" and self.start_ is None:
            raise ValueError("ModelInversion with start='mean' must be fit(auxiliary) before run.")
        api = observations
        t0 = time.perf_counter()
        q0 = api.queries_
        if self.gradient == "white_box":
            model = api.white_box(attack=self.name)
            model.eval()
            with torch.no_grad():
                num_classes = int(model(torch.zeros(1, *api.input_shape)).shape[1])
        else:
            num_classes = int(api.confidences(torch.zeros(1, *api.input_shape), attack=self.name).shape[1])
        cls = np.arange(num_classes) if classes is None else np.asarray(list(classes), dtype=np.int64)
        if cls.ndim != 1 or cls.size == 0 or cls.min() < 0 or cls.max() >= num_classes:
            raise ValueError(f"classes must be a non-empty list of class indices in [0, {num_classes - 1}].")
        k = cls.size
        if self.start_ is not None:
            if tuple(self.start_.shape) != api.input_shape:
                raise ValueError(
                    f"the auxiliary images have shape {self.start_.shape}, the target takes {api.input_shape}."
                )
            x = torch.from_numpy(np.broadcast_to(self.start_, (k, *api.input_shape)).copy())
        else:
            x = torch.zeros(k, *api.input_shape)
        if self.bounds is not None:
            x = x.clamp(float(self.bounds[0]), float(self.bounds[1]))
        target = torch.from_numpy(cls)
        gen = torch_generator(as_generator(self.seed)) if self.gradient == "estimated" else None

        best_x = x.clone()
        best_cost = torch.full((k,), math.inf, dtype=torch.float64)
        best_conf = torch.zeros(k, dtype=torch.float64)
        since_best = torch.zeros(k, dtype=torch.int64)
        steps = torch.zeros(k, dtype=torch.int64)
        stopped = np.array(["alpha"] * k, dtype=object)
        active = torch.ones(k, dtype=torch.bool)
        for step in range(self.alpha + 1):
            idx = torch.nonzero(active).flatten()
            xa = x[idx]
            if self.gradient == "white_box":
                cost, conf, grad = self._white_box_step(model, xa, target[idx])
            else:
                cost, conf, grad = self._estimated_step(api, xa, target[idx], gen)
            better = cost < best_cost[idx]
            ib = idx[better]
            best_cost[ib] = cost[better]
            best_conf[ib] = conf[better]
            best_x[ib] = xa[better]
            since_best[idx] = torch.where(better, 0, since_best[idx] + 1)
            done_gamma = conf >= self.gamma
            done_beta = since_best[idx] >= self.beta
            for j in idx[done_gamma].tolist():
                stopped[j] = "gamma"
            for j in idx[done_beta & ~done_gamma].tolist():
                stopped[j] = "beta"
            active[idx[done_gamma | done_beta]] = False
            if step == self.alpha or not bool(active.any()):
                break
            keep = active[idx]
            ia = idx[keep]
            x[ia] = self._post(xa[keep] - self.lr * grad[keep].to(x.dtype))
            steps[ia] += 1
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=best_conf.numpy().copy(),
            guesses=best_x.numpy(),
            details={
                "classes": cls.tolist(),
                "steps": steps.tolist(),
                "stopped": [str(s) for s in stopped],
                "gradient": self.gradient,
                "queries": int(api.queries_ - q0),
                "target": api.describe(),
                "alpha": self.alpha,
                "beta": self.beta,
                "gamma": self.gamma,
                "lr": self.lr,
            },
            seconds=time.perf_counter() - t0,
        )

    def _white_box_step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            p = torch.softmax(model(xg), dim=1).gather(1, target[:, None])[:, 0]
            cost = 1.0 - p + self._aux(xg)
            (grad,) = torch.autograd.grad(cost.sum(), xg)
        return cost.detach().to(torch.float64), p.detach().to(torch.float64), grad

    def _estimated_step(
        self, api: PredictionAPI, x: torch.Tensor, target: torch.Tensor, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, m = x.shape[0], self.directions
        u = torch.randn((n, m, *x.shape[1:]), generator=gen, dtype=x.dtype)
        probes = torch.cat([x[:, None] + self.sigma * u, x[:, None] - self.sigma * u], dim=1)  # (n, 2m, ...)
        tgt = target.repeat_interleave(2 * m)
        p_probe = api.confidences(probes.reshape(n * 2 * m, *x.shape[1:]), attack=self.name)
        c_probe = (1.0 - p_probe.gather(1, tgt[:, None])[:, 0]).reshape(n, 2 * m)
        diff = (c_probe[:, :m] - c_probe[:, m:]).to(x.dtype)  # (n, m)
        grad = torch.einsum("nm,nm...->n...", diff, u) / (2.0 * self.sigma * m)
        if self.tv_weight > 0:
            xg = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                (g_aux,) = torch.autograd.grad(self._aux(xg).sum(), xg)
            grad = grad + g_aux
        p = api.confidences(x, attack=self.name).gather(1, target[:, None])[:, 0]
        cost = 1.0 - p + self._aux(x).to(torch.float64)
        return cost, p, grad


# --------------------------------------------------------------------------- scoring


def zscore_images(images: Any) -> np.ndarray:
    """Flatten each image and z-score it (zero mean, unit standard deviation), in float64.

    Invariant to brightness and contrast: ``a * x + b`` with ``a > 0`` gives the same row. A constant
    image becomes all zeros.
    """
    a = np.asarray(images, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)
    a = a - a.mean(axis=1, keepdims=True)
    sd = a.std(axis=1, keepdims=True)
    return np.divide(a, sd, out=np.zeros_like(a), where=sd > 1e-12 * np.maximum(1.0, np.abs(a).max()))


def normalized_cross_correlation(a: Any, b: Any) -> np.ndarray:
    """Pearson correlation of every image in ``a`` with every image in ``b``: shape ``(len(a), len(b))``.

    In [-1, 1]; 0 for a constant image.
    """
    za, zb = zscore_images(a), zscore_images(b)
    if za.shape[1] != zb.shape[1]:
        raise ValueError(f"images have {za.shape[1]} and {zb.shape[1]} pixels; they must match.")
    return za @ zb.T / za.shape[1]


class IdentityEvaluator:
    """An independent classifier that names the person in an image, invariant to brightness and scale.

    Each image is z-scored (:func:`zscore_images`), projected on its first principal components
    (eigenfaces, Turk and Pentland 1991) and classified by multinomial logistic regression.

    Parameters
    ----------
    n_components : int, default 60
        Principal components kept (at most ``n_images - 1``).
    C : float > 0, default 1.0
        Inverse L2 regularisation of the logistic regression.
    seed : int, default 0
        Seed of the (randomised) solvers.
    """

    def __init__(self, n_components: int = 60, C: float = 1.0, seed: int = 0) -> None:
        check_param("n_components", n_components, "IdentityEvaluator", POSITIVE_INT)
        check_param("C", C, "IdentityEvaluator", POSITIVE_FLOAT)
        check_param("seed", seed, "IdentityEvaluator", Interval(int, 0, None, "left"))
        self.n_components = n_components
        self.C = C
        self.seed = seed

    def fit(self, images: Any, labels: Any) -> IdentityEvaluator:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        z = zscore_images(images)
        y = np.asarray(labels)
        n_comp = min(self.n_components, z.shape[0] - 1, z.shape[1])
        self.pipeline_ = make_pipeline(
            PCA(n_components=n_comp, svd_solver="randomized", random_state=self.seed),
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=5000),
        ).fit(z, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, images: Any) -> np.ndarray:
        return self.pipeline_.predict_proba(zscore_images(images))

    def predict(self, images: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(images), axis=1)]


def score_inversion(
    result: AttackResult,
    images: Any,
    labels: Any,
    *,
    train_images: Any = None,
    train_labels: Any = None,
    evaluator: IdentityEvaluator | None = None,
) -> AttackResult:
    """Score reconstructions against the real images; return a copy of the result with metrics.

    Parameters
    ----------
    result : AttackResult
        From :class:`ModelInversion`: ``guesses[i]`` reconstructs class ``details["classes"][i]``.
    images, labels : arrays
        Real images of every class and their labels (ground truth, used here only). The default
        evaluator is fitted on them and each class's mean face is taken from them.
    train_images, train_labels : arrays, optional
        The target's training images (for the similarity to the nearest one); default ``images``.
    evaluator : IdentityEvaluator, optional
        A fitted independent classifier; default ``IdentityEvaluator().fit(images, labels)``.

    Returns
    -------
    AttackResult
        Metrics, all computed on z-scored images (invariant to brightness and scale) except the
        ``raw_`` one:

        * ``identification_rate``: share of reconstructions the evaluator names correctly;
          ``identification_top5``: share with the right person among its five most likely;
        * ``ncc_mean_face``: mean normalised cross-correlation with the person's mean face, and
          ``ncc_other_mean_faces`` with the other classes' mean faces (the contrast);
        * ``pixel_identification_rate``: share whose most correlated mean face is the right one;
        * ``ncc_nearest_train``: mean correlation with the person's most similar training image;
        * ``raw_mse_identification_rate``: share whose mean face is nearest in raw mean squared
          error (no normalisation; a dark template lands near chance ``1 / num_classes``);
        * ``chance``: ``1 / num_classes``; ``mean_confidence``: mean of ``result.scores``.
    """
    owner = "score_inversion"
    if not isinstance(result, AttackResult) or result.guesses is None:
        raise ValueError(f"{owner} expects an AttackResult holding reconstructions in guesses.")
    recon = np.asarray(result.guesses, dtype=np.float64)
    cls = np.asarray(result.details.get("classes", np.arange(len(recon))), dtype=np.int64)
    X = np.asarray(images, dtype=np.float64)
    y = np.asarray(labels)
    if len(X) != len(y):
        raise ValueError(f"{owner}: images and labels have different lengths ({len(X)} != {len(y)}).")
    if recon.shape[1:] != X.shape[1:] or len(cls) != len(recon):
        raise ValueError(
            f"{owner}: reconstructions of shape {recon.shape[1:]} do not match images of shape {X.shape[1:]}."
        )
    Xt = X if train_images is None else np.asarray(train_images, dtype=np.float64)
    yt = y if train_labels is None else np.asarray(train_labels)
    all_classes = np.unique(y)
    missing = np.setdiff1d(cls, all_classes)
    if missing.size:
        raise ValueError(f"{owner}: no real images of classes {missing.tolist()}.")
    ev = evaluator if evaluator is not None else IdentityEvaluator().fit(X, y)

    proba = ev.predict_proba(recon)
    col = {c: i for i, c in enumerate(ev.classes_)}
    own = np.array([proba[i, col[c]] for i, c in enumerate(cls)])
    rank = (proba > own[:, None]).sum(axis=1)
    mean_faces = np.stack([X[y == c].mean(axis=0) for c in all_classes])
    pos = np.searchsorted(all_classes, cls)
    ncc = normalized_cross_correlation(recon, mean_faces)  # (k, C)
    own_ncc = ncc[np.arange(len(cls)), pos]
    others = (ncc.sum(axis=1) - own_ncc) / max(1, len(all_classes) - 1)
    nearest = np.array(
        [
            normalized_cross_correlation(recon[i : i + 1], Xt[yt == c]).max() if np.any(yt == c) else np.nan
            for i, c in enumerate(cls)
        ]
    )
    flat_r = recon.reshape(len(recon), -1)
    flat_m = mean_faces.reshape(len(mean_faces), -1)
    mse = ((flat_r[:, None, :] - flat_m[None, :, :]) ** 2).mean(axis=2)
    metrics = {
        "identification_rate": float(np.mean(rank == 0)),
        "identification_top5": float(np.mean(rank < 5)),
        "ncc_mean_face": float(own_ncc.mean()),
        "ncc_other_mean_faces": float(others.mean()),
        "pixel_identification_rate": float(np.mean(ncc.argmax(axis=1) == pos)),
        "ncc_nearest_train": float(np.nanmean(nearest)),
        "raw_mse_identification_rate": float(np.mean(mse.argmin(axis=1) == pos)),
        "chance": 1.0 / len(all_classes),
    }
    if result.scores is not None:
        metrics["mean_confidence"] = float(np.mean(result.scores))
    details = dict(result.details)
    details["identified"] = (rank == 0).tolist()
    return replace(result, details=details).with_metrics(**metrics)
