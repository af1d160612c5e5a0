"""DP-SGD step speed: non-private SGD, Opacus (hooks and ghost clipping) and ppml (flat and ghost
clipping, noise drawn inline or prefetched in a background thread) on the same models and batches, one
torch thread (plus a two-thread non-private row)."""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from _common import median_time, table
from ppml.dp import _vsl
from ppml.dp.accounting import PrivacyAccountant
from ppml.dp.dpsgd import DPSGD

TITLE = "DP-SGD step speed (batch 256; one and two torch threads)"

BATCH = 256
BLOCK_MS = 40.0  # each method's block of consecutive steps per round (one step for slower methods)
NOISE_MULTIPLIER = 1.1
CLIP_NORM = 1.0
LR = 0.05
OPACUS_MISSING = "Opacus not installed: pip install -e '.[bench]'"
MKL_MISSING = "oneMKL not installed: pip install -e '.[mkl]'"
MKL = "MKL noise"  # label part of the rows with noise_sampler="mkl"


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


MODELS: dict[str, Callable[[], nn.Module]] = {
    "MLP 784-256-256-10": _mlp,
    "CNN conv16(5x5)-pool-conv32(5x5)-pool-fc10": _cnn,
}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(BATCH, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    return X, y


def _fresh(make: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return make()


def _sgd_step(
    make: Callable[[], nn.Module], X: torch.Tensor, y: torch.Tensor, threads: int = 1
) -> Callable[[], None]:
    model = _fresh(make)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(X), y).backward()
        opt.step()

    return _on_threads(threads, step)


def _same(fn: Callable[[], None]) -> Callable[[], None]:
    """A new function object calling ``fn`` (so that it can carry its own thread mark)."""

    def call() -> None:
        fn()

    return call


def _on_threads(threads: int, fn: Callable[[], None]) -> Callable[[], None]:
    """Mark ``fn`` to be timed with ``threads`` torch threads (set once per block of its steps, as a
    training loop sets it once; the benchmarks' default of one thread is restored after the block)."""
    fn.threads = threads  # type: ignore[attr-defined]
    return fn


def _opacus_step(
    make: Callable[[], nn.Module], X: torch.Tensor, y: torch.Tensor, mode: str
) -> Callable[[], None]:
    from opacus import PrivacyEngine

    model = _fresh(make)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    # The loader only tells Opacus the batch size (fixed 256, no Poisson sampling); timing feeds (X, y) directly.
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=BATCH)
    engine = PrivacyEngine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = engine.make_private(
            module=model,
            optimizer=opt,
            criterion=nn.CrossEntropyLoss(),
            data_loader=loader,
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=CLIP_NORM,
            poisson_sampling=False,
            grad_sample_mode=mode,
        )
    if mode == "ghost":
        pmodel, popt, criterion, _ = out
    else:
        pmodel, popt, _ = out
        criterion = nn.CrossEntropyLoss()

    def step() -> None:
        popt.zero_grad(set_to_none=True)
        criterion(pmodel(X), y).backward()
        popt.step()

    return step


def _ppml_step(
    make: Callable[[], nn.Module],
    X: torch.Tensor,
    y: torch.Tensor,
    clipping: str,
    noise_prefetch: bool | str = "auto",
    noise: float = NOISE_MULTIPLIER,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    noise_sampler: str = "native",
) -> Callable[[], None]:
    model = _fresh(make)
    # sampling_rate=1.0 on exactly 256 rows: every row is in the batch, so one call of the public
    # DPSGD.step is one step on 256 examples (clipped sum, noise, update, accountant charge).
    opt = DPSGD(
        noise,
        CLIP_NORM,
        sampling_rate=1.0,
        lr=LR,
        clipping=clipping,
        noise_prefetch=noise_prefetch,
        loss_fn=loss_fn,
        noise_sampler=noise_sampler,
    )
    acc = PrivacyAccountant("rdp", 1e-5)
    rng = np.random.default_rng(0)

    def step() -> None:
        opt.step(model, X, y, accountant=acc, rng=rng)

    return step


def _spend_ms(repeats: int) -> float:
    """Milliseconds of the accountant charge alone inside one ppml step (q = 1, RDP; the same event and
    ledger parameters every step, as ``DPSGD.step`` charges them)."""
    acc = PrivacyAccountant("rdp", 1e-5)
    opt = DPSGD(NOISE_MULTIPLIER, CLIP_NORM, sampling_rate=1.0)
    event, params, _ = opt._charge(BATCH)
    return 1e3 * median_time(lambda: acc.charge(event, label="x", params=params), repeats=repeats, warmup=2)


def _opacus_version() -> str | None:
    try:
        import opacus
    except ImportError:
        return None
    return opacus.__version__


def run(quick: bool = False) -> str:
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        # Opacus's secure-RNG and full-backward-hook notices and ppml's secure=False PrivacyWarning:
        # both libraries run with their fast, non-secure noise generators here.
        warnings.simplefilter("ignore")
        return _run(quick)


def _interleaved_times(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per call of every ``fn``, one value per round. In a round every ``fn`` runs a block of
    consecutive calls, as a training loop runs its steps: one untimed call (back in its own thread count
    and cache state), then calls for about :data:`BLOCK_MS` (at least one), timed together. The methods
    take turns block by block, each round starting one method later than the last, so that load changes
    on a shared machine and the position in the round hit all methods alike. A ``fn`` marked by
    :func:`_on_threads` runs its block with that many torch threads, others with one."""
    keys = list(fns)
    threads = {k: int(getattr(fn, "threads", 1)) for k, fn in fns.items()}
    blocks = {}
    try:
        for k, fn in fns.items():
            torch.set_num_threads(threads[k])
            for _ in range(warmup):
                fn()
            blocks[k] = max(1, round(BLOCK_MS / max(1e3 * median_time(fn, repeats=3, warmup=0), 1e-3)))
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(repeats):
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                fn = fns[k]
                torch.set_num_threads(threads[k])
                fn()
                start = time.perf_counter()
                for _ in range(blocks[k]):
                    fn()
                times[k].append(1e3 * (time.perf_counter() - start) / blocks[k])
    finally:
        torch.set_num_threads(1)
    return times


def _interleaved_medians(fns: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call of every ``fn`` (see :func:`_interleaved_times`)."""
    return {k: statistics.median(v) for k, v in _interleaved_times(fns, repeats, warmup).items()}


def _paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``num``'s time over ``den``'s time in the same round: the two steps ran
    back to back, so a slow spell of the shared machine cancels out of each ratio."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def _ce_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default loss passed explicitly: a custom loss sends ppml's ghost step down the general path."""
    return F.cross_entropy(outputs, targets, reduction="none")


def _noise_fill(n: int) -> Callable[[], None]:
    """ppml's noise draw alone: ``Tensor.normal_`` from a seeded ``torch.Generator`` into a flat buffer."""
    buf = torch.empty(n)
    gen = torch.Generator().manual_seed(0)

    def draw() -> None:
        buf.normal_(0.0, NOISE_MULTIPLIER, generator=gen)

    return draw


def _mkl_noise_fill(n: int) -> Callable[[], None]:
    """The ``noise_sampler="mkl"`` draw alone: oneMKL's ARS-5 + Box-Muller into a flat buffer."""
    buf = torch.empty(n)
    seeds = iter(range(1 << 62))

    def draw() -> None:
        _vsl.gaussian_fill(buf, NOISE_MULTIPLIER, next(seeds))

    return draw


def _breakdown_table(quick: bool) -> str:
    """Parts of one MLP step timed on their own, with one and with two torch threads (interleaved)."""
    X, y = _batch()
    n = sum(p.numel() for p in _mlp().parameters())
    parts: dict[str, Callable[[], None]] = {
        "non-private SGD step": _sgd_step(_mlp, X, y),
        "ppml ghost step without noise, dense path": _ppml_step(_mlp, X, y, "ghost", False, noise=0.0),
        "ppml ghost step without noise, general path (hooks + autograd)": _ppml_step(
            _mlp, X, y, "ghost", False, noise=0.0, loss_fn=_ce_loss
        ),
        f"Gaussian noise for {n:,} coordinates (`Tensor.normal_`)": _noise_fill(n),
    }
    mkl_part = f"Gaussian noise for {n:,} coordinates (oneMKL ARS-5 + Box-Muller, `noise_sampler='mkl'`)"
    if _vsl.available():
        parts[mkl_part] = _mkl_noise_fill(n)
    fns = {}
    for k, fn in parts.items():
        fns[(k, 1)] = fn
        fns[(k, 2)] = _on_threads(2, _same(fn))
    repeats, warmup = (3, 1) if quick else (41, 3)
    ms = _interleaved_medians(fns, repeats, warmup)  # type: ignore[arg-type]
    rows = [[k, f"{ms[(k, 1)]:.2f}", f"{ms[(k, 2)]:.2f}"] for k in parts]
    keys = list(parts)
    sgd2, dense2, noise2 = ms[(keys[0], 2)], ms[(keys[1], 2)], ms[(keys[3], 2)]
    floor = (
        f"With two torch threads torch's noise draw alone takes {noise2:.2f} ms, {100 * noise2 / sgd2:.0f}% of "
        f"the non-private step ({sgd2:.2f} ms), and ppml's step without noise takes {dense2 / sgd2:.2f}x the "
        f"non-private step: within 1.3x of it leaves {0.3 * sgd2:.2f} ms for everything DP-SGD adds"
    )
    if mkl_part in parts:
        mkl2 = ms[(mkl_part, 2)]
        floor += (
            f". oneMKL's draw (`noise_sampler='mkl'`) takes {mkl2:.2f} ms ({100 * mkl2 / sgd2:.0f}% of the "
            f"non-private step, {noise2 / mkl2:.1f}x faster than torch's), which leaves room for the rest"
        )
    else:
        floor += f" ({MKL_MISSING}: the oneMKL draw was not measured)"
    floor += (
        ". Tried and not kept: an AES-CTR keystream (the `cryptography` package) with a vectorised "
        "Box-Muller transform (no faster than `normal_` here); numpy's `Generator.standard_normal` "
        "(ziggurat, 2.7-3.5 ms here with any bit generator); `mkl_random` (oneMKL through numpy, float64 "
        "only: the draw plus the float32 copy cost 0.65 ms, and the step stayed at 1.35-1.46x, timed one "
        "step at a time); oneMKL's Philox4x32-10 generator (20-30% slower than ARS-5 here); oneMKL's "
        "inverse-CDF method (15% faster than Box-Muller, but its float32 tails stop at 5.42 standard "
        "deviations, against torch's 5.77); torch's noise drawn in two seeded blocks on both cores "
        "(no faster inside the step); and torch's noise drawn in a background thread next to two "
        "torch threads (slower: three busy threads on two cores)."
    )
    return (
        table(
            ["part of an MLP 784-256-256-10 step (batch 256)", "ms, 1 torch thread", "ms, 2 torch threads"],
            rows,
        )
        + "\n\n"
        + floor
    )


def _run(quick: bool) -> str:
    repeats, warmup = (3, 2) if quick else (41, 3)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    X, y = _batch()
    opacus_version = _opacus_version()
    head = ["model", "method", "ms/step", "x non-private", "x faster non-private", "x Opacus best"]
    rows: list[list[object]] = []
    summary: list[str] = []
    for name, make in MODELS.items():
        fns: dict[str, Callable[[], None]] = {
            "non-private SGD": _sgd_step(make, X, y),
            "non-private SGD, 2 torch threads": _sgd_step(make, X, y, threads=2),
        }
        if opacus_version is not None:
            fns["Opacus hooks"] = _opacus_step(make, X, y, "hooks")
            fns["Opacus ghost clipping"] = _opacus_step(make, X, y, "ghost")
        fns["ppml flat (vmap), noise inline"] = _ppml_step(make, X, y, "flat", False)
        fns["ppml ghost, noise inline"] = _ppml_step(make, X, y, "ghost", False)
        fns["ppml ghost, noise prefetched (2nd core)"] = _ppml_step(make, X, y, "ghost", True)
        fns["ppml ghost, 2 torch threads"] = _on_threads(2, _ppml_step(make, X, y, "ghost"))
        if _vsl.available():
            fns[f"ppml ghost, {MKL}, prefetched (2nd core)"] = _ppml_step(
                make, X, y, "ghost", True, noise_sampler="mkl"
            )
            fns[f"ppml ghost, {MKL}, 2 torch threads"] = _on_threads(
                2, _ppml_step(make, X, y, "ghost", noise_sampler="mkl")
            )
        times = _interleaved_times(fns, repeats, warmup)
        ms = {k: statistics.median(v) for k, v in times.items()}
        sgd_key = "non-private SGD"
        fast_key = min(("non-private SGD", "non-private SGD, 2 torch threads"), key=ms.__getitem__)
        opacus_keys = [k for k in ms if k.startswith("Opacus")]
        best_key = min(opacus_keys, key=ms.__getitem__) if opacus_keys else None

        def ratio(k: str, den: str | None, times: dict[str, list[float]] = times) -> float:
            return float("nan") if den is None else _paired_ratio(times, k, den)

        for sampler in ("native", "mkl"):
            keys = [k for k in ms if k.startswith("ppml ghost") and (MKL in k) == (sampler == "mkl")]
            if not keys:
                summary.append(f"{name}: {MKL_MISSING}")
                continue
            top = min(keys, key=ms.__getitem__)
            what = "torch's noise (the default)" if sampler == "native" else "oneMKL's noise"
            summary.append(
                f"{name}, {what}: ppml's fastest ghost setting ('{top}') {ms[top]:.3g} ms = "
                f"{ratio(top, sgd_key):.2f}x the one-thread non-private step and {ratio(top, fast_key):.2f}x "
                "the faster non-private setting"
                + (f", {ratio(top, best_key):.2f}x Opacus's best" if best_key is not None else "")
            )
        for label, v in ms.items():
            vs_best = (
                f"{ratio(label, best_key):.2f}" if best_key is not None and label.startswith("ppml") else ""
            )
            rows.append(
                [
                    name,
                    label,
                    f"{v:.2f}" if v < 10 else f"{v:.1f}",
                    f"{ratio(label, sgd_key):.2f}",
                    f"{ratio(label, fast_key):.2f}",
                    vs_best,
                ]
            )
            if label.startswith("non-private SGD, 2") and opacus_version is None:
                rows.append([name, "Opacus", OPACUS_MISSING, "", "", ""])
        if not _vsl.available():
            rows.append([name, f"ppml ghost, {MKL}", MKL_MISSING, "", "", ""])
    spend = _spend_ms(repeats * 3)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    breakdown_md = _breakdown_table(quick)
    lib = f"Opacus {opacus_version}" if opacus_version else "Opacus not installed"
    return "\n".join(
        [
            f"Median milliseconds per training step over {repeats} rounds (after {warmup} warm-up steps); in "
            "each round every method runs a block of consecutive steps, as a training loop does: one untimed "
            f"step, then steps for about {BLOCK_MS:.0f} ms (one for the slower methods) timed together; "
            "the methods take turns block by block, each round starting one method later than the last. "
            f"{lib}, noise multiplier {NOISE_MULTIPLIER}, clip norm "
            f"{CLIP_NORM}, plain SGD updates (lr {LR}), cross-entropy loss. Every method trains its own "
            "copy of the same model on the same fixed batch of 256 random 1x28x28 inputs with random "
            "labels; batch sampling (Opacus's Poisson loader, ppml's Poisson mask) is not part of the "
            "timing. Opacus: `PrivacyEngine.make_private(..., poisson_sampling=False)` with "
            "`grad_sample_mode='hooks'` or `'ghost'`, one step = zero_grad + forward + backward + "
            "`optimizer.step()` (clipping, noise, update). ppml: the public `DPSGD.step` with "
            "`sampling_rate=1.0` on exactly those 256 rows (every row is in the batch), which computes "
            "the clipped gradient sum, adds Gaussian noise, updates the model and charges a "
            f"`PrivacyAccountant('rdp')` (the charge alone takes {spend:.2f} ms of it). ppml ghost is "
            "book-keeping clipping (`clipping='ghost'`: per-example norms from each layer's input and output "
            "gradient, the clipped sum from the same tensors and added onto the noise buffer; for the "
            "convolutions the per-example weight gradients are formed a cache-sized chunk at a time (a batched "
            "product over an im2col view of the channels-last input for the 16-channel convolution; for the "
            "1-channel one a grouped convolution backward with one torch thread and the same batched product "
            "with two), their norms taken, and the clipped sum is their "
            "weighted sum, a matrix-vector product over the kept gradients instead of a second convolution "
            "backward). "
            "Threads: a step computes with one torch thread (`torch.set_num_threads(1)`) unless its row says "
            "two. "
            "'noise inline' draws the Gaussian noise on that thread (`DPSGD(noise_prefetch=False)`); "
            "'noise prefetched (2nd core)' (`noise_prefetch=True`, what the default `'auto'` picks for the "
            "MLP's 269,322 coordinates on this 2-CPU machine) draws the same noise, bit for bit, in a "
            "background thread while the step computes the clipped sum, so it uses the machine's second "
            "core for the draw (see the last table for its cost; the CNN has only 18,378 "
            "coordinates, where `'auto'` draws inline). The 'non-private SGD, 2 torch threads' and 'ppml "
            "ghost, 2 torch threads' rows give the step both cores (`torch.set_num_threads(2)` for their "
            "blocks only; `'auto'` then draws the noise inline, as no core is free for a background thread); "
            "'x non-private' divides by the one-thread non-private step, 'x faster non-private' by the "
            "non-private setting with the lower median, and 'x Opacus best' by Opacus's faster mode; each "
            "ratio is the median over the rounds of the two methods' times in the same round (a slow spell "
            "of the shared machine longer than a round cancels out), not the ratio of the medians. "
            f"The '{MKL}' rows draw the noise with `DPSGD(noise_sampler='mkl')`: Intel oneMKL's "
            "ARS-5 generator and Box-Muller transform (the optional `mkl` extra), written "
            "straight into the float32 buffer, instead of torch's `normal_` (a serial Mersenne Twister); "
            "the same distribution and guarantee, other bits for the same seed. "
            "Both libraries draw "
            "noise from their fast, non-secure generators (Opacus `secure_mode=False`, ppml `secure=False`). "
            f"The machine was shared: 1-minute load average {load_before:.1f} before and {load_after:.1f} "
            f"after this table on {os.cpu_count()} logical CPUs, which slows every method (and takes the "
            "second core that prefetching and the two-thread row rely on); the ratios are "
            "more stable than the milliseconds because the methods take turns.",
            "",
            table(head, rows),
            "",
            "Summary (goal of issue 4: ppml within 1.3x of non-private on the MLP and 1.5x on the CNN, and "
            "faster than Opacus's best mode): " + "; ".join(summary) + ". With one torch thread per step the "
            "non-private step leaves the second core idle, which ppml's noise prefetching uses; given both "
            "cores, the non-private step gains more from torch's threads than ppml's step with torch's noise "
            "does (that draw is one serial generator, and on this machine the two logical CPUs run two busy "
            "threads at well under twice the speed of one). oneMKL's draw is several times faster (last table), which "
            "is what the MLP needs: its 269,322 coordinates of noise cost as much as half of its short step.",
            "",
            "Where the time of one MLP step goes: its parts timed on their own (medians over 41 rounds of "
            "calls each). ppml's ghost step runs the same matrix products as the non-private step (forward, "
            "backward to the layer outputs, one weighted product per layer for the clipped sum, accumulated "
            "onto the noise); for a dense model with the default loss it runs them without autograd or "
            "hooks (the dense path; a custom loss, even the same cross-entropy, takes the general path), "
            "and it adds a few elementwise passes (norms, clipping factors) and the Gaussian noise for "
            "every coordinate (torch's `Tensor.normal_`: a Mersenne Twister, serial, so a second torch thread "
            "does not speed it up; or oneMKL's ARS-5 with Box-Muller, also serial, with "
            "`noise_sampler='mkl'`).",
            "",
            breakdown_md,
        ]
    )
