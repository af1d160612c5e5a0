"""Book-keeping ("ghost") clipping: per-example gradient norms and the clipped gradient sum of a batch
without materialising every per-example gradient of the model.

For a layer ``y = f(a; W)`` applied to example ``i``, the per-example gradient of ``W`` is a function of
the layer's input ``a_i`` and of the gradient ``g_i = d loss_i / d y_i`` of that example's loss with
respect to the layer's output. One forward pass (keeping every supported layer's input) and one backward
pass *to the layer outputs* (no parameter gradient is formed) give ``(a_i, g_i)`` for every layer; from
them this module computes, per layer,

* the squared per-example gradient norm of each parameter, and
* once the clipping factors ``c_i`` are known, the clipped sum ``sum_i c_i grad_i`` directly from the
  same ``(a, g)`` ("book-keeping", Bu, Wang, Zha and Karypis 2023, "Differentially private optimization
  on large model at small cost"), so no second backward pass is needed: it would compute exactly these
  sums with ``g`` scaled by ``c``.

Rules per layer (``B`` examples, ``T`` positions per example):

``nn.Linear``
    2-D input: ``||grad W_i|| = ||a_i|| ||g_i||`` and ``||grad b_i|| = ||g_i||`` (Goodfellow 2015). With
    extra dimensions (sequences), ``||grad W_i||_F^2 = sum_{t,s} (a_it . a_is)(g_it . g_is)`` (the Gram
    or "ghost norm" trick of Li, Tramer, Liang and Hashimoto 2022, "Large language models can be strong
    differentially private learners") or the per-example gradient ``g_i^T a_i`` formed directly,
    whichever costs fewer multiplications (``T^2 (d_in + d_out)`` against ``T d_in d_out``), as
    Opacus's ghost mode chooses.
``nn.Conv2d``
    The input is unfolded (im2col, ``F.unfold``) so that the convolution is a linear layer over the
    ``P`` output positions, and the same choice is made between the Gram trick and the direct
    per-example gradient (``(B, C_out, C_in k_h k_w)``, which for small convolutions is cheaper).
    Groups, dilation, stride and every padding mode are supported.
``nn.Embedding``
    The per-example gradient adds ``g_it`` to row ``idx_it``, so
    ``||grad W_i||^2 = sum_{t,s} [idx_it = idx_is] (g_it . g_is)`` (index collisions); positions at
    ``padding_idx`` carry no gradient. The clipped sum is an ``index_add``. ``max_norm`` and
    ``scale_grad_by_freq`` (which couples examples through the batch's counts) are refused.
``nn.LayerNorm``, ``nn.GroupNorm``
    Their affine parameters are small (one value per channel), so their per-example gradients are
    formed explicitly from the normalised input: ``grad weight_i = sum (g_i * xhat_i)``,
    ``grad bias_i = sum g_i`` over the non-channel positions.

Requirements, checked where possible: every trainable parameter lives in one of these layers, each
layer is called at most once per forward pass with the batch in dimension 0, its parameters are used
only through its own ``forward`` (weight tying and ``F.linear(x, layer.weight)`` elsewhere cannot be
detected), and its output is not modified in place afterwards (``ReLU(inplace=True)`` right after a
supported layer is refused).

Dense models (an input flatten, Linear layers and elementwise activations: ppml's MLP or such an
``nn.Sequential``) trained with the default cross-entropy loss take a shorter road to the same ``(a, g)``:
:class:`DenseGhost` runs the forward without autograd or hooks and writes the backward to the layer
outputs by hand (the logits' gradient ``softmax - onehot``, ``g W`` through a Linear layer, autograd's own
ReLU backward), which removes most of the step's Python and autograd overhead; the norms and the clipped
sum then follow the Linear rule above. Models with forward hooks, frozen Linear parameters, or labels that
are not class indices take the general path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .._validation import ParameterError
from ..models.dense import activation_forward, backward_chain, dense_layers

__all__ = ["GHOST_LAYERS", "GhostLayer", "ghost_layers", "ghost_pass"]

GHOST_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm, nn.GroupNorm)
"""Layer types whose trainable parameters book-keeping clipping supports."""

Writer = Callable[[torch.Tensor, torch.Tensor, bool], None]
"""``writer(factors, out, accumulate)``: write (or add) ``sum_i factors_i grad_i`` into the flat ``out``."""


class GhostLayer:
    """One supported layer of a model: its module, qualified name and trainable parameter attributes."""

    __slots__ = ("module", "name", "attrs", "keys")

    def __init__(self, module: nn.Module, name: str, attrs: tuple[str, ...]) -> None:
        self.module = module
        self.name = name
        self.attrs = attrs
        self.keys = tuple(f"{name}.{a}" if name else a for a in attrs)


def _refuse(owner: str, what: str) -> ParameterError:
    return ParameterError(
        f"The 'model' parameter of {owner} with clipping='ghost' {what}. Use clipping='flat'.", param="model"
    )


def ghost_layers(model: nn.Module, owner: str = "DPSGD") -> list[GhostLayer]:
    """The layers of ``model`` that hold trainable parameters, in ``named_parameters`` order; raise
    :class:`ParameterError` if book-keeping clipping does not support one of them."""
    seen: dict[int, tuple[str, nn.Module]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        for attr, p in m.named_parameters(recurse=False):
            if p.requires_grad:
                full = f"{name}.{attr}" if name else attr
                if id(p) in seen and seen[id(p)][0] != full:
                    first, holder = seen[id(p)]
                    if holder is m:
                        raise _refuse(
                            owner,
                            f"uses {type(m).__name__} layer {first.rsplit('.', 1)[0]!r} more than once "
                            f"(also as {name!r}; shared weights)",
                        )
                    raise _refuse(owner, f"shares parameter {first!r} with {full!r} (weight tying)")
                seen[id(p)] = (full, m)
    layers: list[GhostLayer] = []
    for name, m in model.named_modules():
        attrs = tuple(a for a, p in m.named_parameters(recurse=False) if p.requires_grad)
        if not attrs:
            continue
        label = f"{type(m).__name__} layer {name or '<root>'!r}"
        if not isinstance(m, GHOST_LAYERS):
            supported = ", ".join(f"nn.{t.__name__}" for t in GHOST_LAYERS)
            raise _refuse(
                owner,
                f"must hold trainable parameters only in {supported} layers; {label} is not supported "
                "by ghost clipping",
            )
        if isinstance(m, nn.Embedding) and (m.max_norm is not None or m.scale_grad_by_freq):
            raise _refuse(
                owner, f"has {label} with max_norm or scale_grad_by_freq, which ghost clipping refuses"
            )
        if set(attrs) - {"weight", "bias"}:
            raise _refuse(owner, f"has {label} with unexpected parameters {attrs}")
        layers.append(GhostLayer(m, name, attrs))
    return layers


# -- per-layer rules ---------------------------------------------------------------------------
# Each rule maps (module, a, g, attrs) to a list of (squared per-example norm, writer) per attribute.


def _row_sq(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of every row of a 2-D tensor (one fused reduction)."""
    return torch.linalg.vector_norm(x, dim=1).square()


def _psg_entry(psg: torch.Tensor) -> tuple[torch.Tensor, Writer]:
    """Entry from explicit per-example gradients ``psg`` of shape ``(B, numel)``."""

    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        if acc:
            out.addmv_(psg.t(), c)
        else:
            torch.mv(psg.t(), c, out=out)

    return _row_sq(psg), write


def _mm_writer(left: torch.Tensor, right: torch.Tensor, shape: tuple[int, int]) -> Writer:
    """Writer of ``left^T diag(c) right`` with ``left (B, k, o)``-like 2-D views ``(N, o)``, ``(N, d)``;
    ``c`` is repeated over the ``N / B`` rows of each example."""

    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        per_row = left.shape[0] // c.shape[0]
        cc = c if per_row == 1 else c.repeat_interleave(per_row)
        scaled = left * cc[:, None]
        o = out.view(shape)
        if acc:
            o.addmm_(scaled.t(), right)
        else:
            torch.mm(scaled.t(), right, out=o)

    return write


def _gram_or_direct(
    a3: torch.Tensor, g3: torch.Tensor
) -> tuple[torch.Tensor, Writer | None, torch.Tensor | None]:
    """``a3 (B, ..., T, d)``, ``g3 (B, ..., T, o)`` (the middle dims are groups): the squared Frobenius
    norm per example of ``sum_t g_t a_t^T``, and, when the direct route is cheaper, the per-example
    gradients ``(B, numel)`` (else None)."""
    t, d, o = a3.shape[-2], a3.shape[-1], g3.shape[-1]
    B = a3.shape[0]
    if d * o <= t * (d + o):
        psg = (g3.transpose(-1, -2) @ a3).reshape(B, -1)  # (B, ..., o, d)
        return psg.pow(2).sum(1), None, psg
    aa = a3 @ a3.transpose(-1, -2)
    gg = g3 @ g3.transpose(-1, -2)
    return (aa * gg).reshape(B, -1).sum(1), None, None


def _linear(m: nn.Linear, a: torch.Tensor, g: torch.Tensor, attrs: tuple[str, ...]) -> list[Any]:
    B = a.shape[0]
    entries: list[Any] = []
    if a.dim() == 2:
        g_sq = _row_sq(g)
        for attr in attrs:
            if attr == "weight":
                shape = (m.out_features, m.in_features)
                entries.append((_row_sq(a) * g_sq, _mm_writer(g, a, shape)))
            else:
                entries.append(_bias_entry(g, g_sq))
        return entries
    a3 = a.reshape(B, -1, m.in_features)
    g3 = g.reshape(B, -1, m.out_features)
    for attr in attrs:
        if attr == "weight":
            sq, _, psg = _gram_or_direct(a3, g3)
            if psg is not None:
                entries.append(_psg_entry(psg))
            else:
                shape = (m.out_features, m.in_features)
                entries.append(
                    (sq, _mm_writer(g3.reshape(-1, m.out_features), a3.reshape(-1, m.in_features), shape))
                )
        else:
            entries.append(_psg_entry(g3.sum(1)))
    return entries


def _bias_entry(gb: torch.Tensor, sq: torch.Tensor) -> tuple[torch.Tensor, Writer]:
    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        if acc:
            out.addmv_(gb.t(), c)
        else:
            torch.mv(gb.t(), c, out=out)

    return sq, write


_CHUNK_FLOATS = 1 << 19
"""Per-example convolution gradients are formed this many floats (2 MiB in float32) at a time, so that
they stay in cache; only their norms are kept."""


def _conv2d(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, attrs: tuple[str, ...]) -> list[Any]:
    B = a.shape[0]
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        a = F.pad(a, m._reversed_padding_repeated_twice, mode=mode)
        padding: list[int] = [0, 0]
    else:
        padding = list(m.padding)
    kh, kw = m.kernel_size
    P = g.shape[2] * g.shape[3]
    G = m.groups
    Dg, Og = (m.in_channels // G) * kh * kw, m.out_channels // G
    entries: list[Any] = []
    for attr in attrs:
        if attr == "bias":
            gb = g.reshape(B, g.shape[1], -1).sum(2)
            entries.append(_bias_entry(gb, gb.pow(2).sum(1)))
            continue
        if Dg * Og <= P * (Dg + Og):
            # Per-example gradients are formed for the norms anyway; when they are small enough to keep,
            # the clipped sum is their weighted sum (a matrix-vector product) instead of a second
            # convolution backward.
            keep = B * m.weight.numel() <= _KEEP_FLOATS
            if _use_im2col(m.in_channels // G, Og):
                sq, kept = _conv_im2col_sq(m, a, g, padding, keep)
            else:
                sq, kept = _conv_direct_sq(m, a, g, padding, keep)
            if kept is not None:
                entries.append((sq, kept))
                continue
        else:
            sq = _conv_gram_sq(m, a, g, padding)
        entries.append((sq, _conv_weight_writer(m, a, g, padding)))
    return entries


_KEEP_FLOATS = 1 << 24
"""Per-example convolution weight gradients of a batch are kept (for the clipped sum) up to this many
floats in all (64 MiB in float32); beyond, only their norms are kept and the sum is a second backward."""


def _kept_writer(psg: torch.Tensor, order: tuple[int, ...] | None, shape: tuple[int, ...]) -> Writer:
    """Writer of ``sum_i c_i psg_i`` for per-example gradients ``psg (B, numel)`` whose rows hold the
    weight in the layout ``shape`` permuted by ``order`` (None: already the weight's layout)."""

    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        if order is None:
            if acc:
                out.addmv_(psg.t(), c)
            else:
                torch.mv(psg.t(), c, out=out)
            return
        summed = torch.mv(psg.t(), c).view(shape).permute(order)
        o = out.view(summed.shape)
        if acc:
            o.add_(summed)
        else:
            o.copy_(summed)

    return write


def _conv_backward_weight(
    m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, padding: list[int], weight: torch.Tensor, groups: int
) -> torch.Tensor:
    out = torch.ops.aten.convolution_backward(
        g,
        a,
        weight,
        None,
        list(m.stride),
        padding,
        list(m.dilation),
        False,
        [0, 0],
        groups,
        [False, True, False],
    )
    return out[1]


def _conv_direct_sq(
    m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, padding: list[int], keep: bool = False
) -> tuple[torch.Tensor, Writer | None]:
    """Squared norms of the per-example weight gradients, formed a cache-sized chunk at a time as the
    weight gradient of one convolution with the examples folded into the groups (``groups = B G``);
    with ``keep``, also the writer of their weighted sum from the kept gradients."""
    B, C, H, W = a.shape
    out_ch = g.shape[1]
    per_example = a[0].numel() + g[0].numel() + out_ch * m.weight[0].numel()
    chunk = max(1, min(B, _CHUNK_FLOATS // max(per_example, 1)))
    parts, kept = [], []
    for start in range(0, B, chunk):
        ac, gc = a[start : start + chunk], g[start : start + chunk]
        b = ac.shape[0]
        psg = _conv_backward_weight(
            m,
            ac.reshape(1, b * C, H, W),
            gc.reshape(1, b * out_ch, g.shape[2], g.shape[3]),
            padding,
            a.new_empty((b * out_ch, *m.weight.shape[1:])),
            b * m.groups,
        )
        parts.append(torch.linalg.vector_norm(psg.view(b, -1), dim=1))
        if keep:
            kept.append(psg.view(b, -1))
    sq = (torch.cat(parts) if len(parts) > 1 else parts[0]).square_()
    if not keep:
        return sq, None
    return sq, _kept_writer(torch.cat(kept) if len(kept) > 1 else kept[0], None, tuple(m.weight.shape))


_IM2COL_MIN_CHANNELS = 8
"""Convolutions with at least this many input channels per group form their per-example weight
gradients as a batched matrix product over an im2col view of the channels-last input (the copy is then
of contiguous runs of channels); below it, as one grouped convolution backward, unless the layer has
:data:`_IM2COL_MIN_OUT_CHANNELS` output channels per group (see :func:`_use_im2col`)."""

_IM2COL_MIN_OUT_CHANNELS = 32
"""With few input channels, the im2col product still wins once the output channels per group (the rows
of each example's product) reach this many, or half as many when torch computes with more than one
thread (the grouped convolution backward gains little from a second thread). Measured on 2 CPUs (ms per
batch, one / two torch threads, grouped convolution backward against im2col): 1->16 channels 5x5 on
28x28, batch 256: 7.4 / 10.0 against 8.1 / 6.7; 1->32 5x5: 18.2 / 13.2 against 15.1 / 12.0; 3->32 3x3
on 32x32: 20.5 / 14.4 against 13.2 / 6.2; 2->8 3x3 on 64x64, batch 64: 13.3 / 9.5 against 19.5 / 11.0."""


def _use_im2col(in_per_group: int, out_per_group: int) -> bool:
    """Whether a convolution's per-example weight gradients are formed by im2col (else by a grouped
    convolution backward); a performance choice, the gradients are the same up to rounding."""
    if in_per_group >= _IM2COL_MIN_CHANNELS:
        return True
    threshold = _IM2COL_MIN_OUT_CHANNELS // (2 if torch.get_num_threads() > 1 else 1)
    return out_per_group >= threshold


def _conv_im2col_sq(
    m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, padding: list[int], keep: bool = False
) -> tuple[torch.Tensor, Writer | None]:
    """Squared norms of the per-example weight gradients ``g_i (Og x P) @ cols_i (P x Dg)`` per group,
    with ``cols`` the im2col matrix read from the channels-last input through a strided view (the order
    of the ``Dg`` columns, kernel position then channel, does not change the norm), a cache-sized chunk
    of examples at a time; with ``keep``, the gradients are written into one ``(B, numel)`` tensor and
    the writer of their weighted sum reorders only the summed weight."""
    B, C = a.shape[0], a.shape[1]
    G = m.groups
    Cg, Og = C // G, g.shape[1] // G
    kh, kw = m.kernel_size
    sh, sw = m.stride
    dh, dw = m.dilation
    Ho, Wo = g.shape[2], g.shape[3]
    P, Dg = Ho * Wo, Cg * kh * kw
    if padding[0] or padding[1]:
        a = F.pad(a, (padding[1], padding[1], padding[0], padding[0]))
    a = a.contiguous(memory_format=torch.channels_last)
    sB, sC, sH, sW = a.stride()
    gg = g.reshape(B, G, Og, P)
    chunk = max(1, min(B, (_CHUNK_FLOATS // 2) // max(G * Dg * (P + Og), 1)))
    parts = []
    kept = a.new_empty((B, G * Og * Dg)) if keep else None
    for start in range(0, B, chunk):
        b = min(chunk, B - start)
        cols = a.as_strided(
            (b, G, Ho, Wo, kh, kw, Cg),
            (sB, Cg * sC, sH * sh, sW * sw, sH * dh, sW * dw, sC),
            a.storage_offset() + start * sB,
        ).reshape(b * G, P, Dg)
        left = gg[start : start + b].reshape(b * G, Og, P)
        if kept is None:
            psg = torch.bmm(left, cols)
        else:
            psg = torch.bmm(left, cols, out=kept[start : start + b].view(b * G, Og, Dg))
        parts.append(torch.linalg.vector_norm(psg.view(b, -1), dim=1))
    sq = (torch.cat(parts) if len(parts) > 1 else parts[0]).square_()
    if kept is None:
        return sq, None
    # rows are (G, Og, kh, kw, Cg); the weight is (G Og, Cg, kh, kw)
    return sq, _kept_writer(kept, (0, 3, 1, 2), (G * Og, kh, kw, Cg))


def _conv_gram_sq(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, padding: list[int]) -> torch.Tensor:
    """Squared norms by the Gram trick on the unfolded input (cheaper when output positions are few)."""
    B, G = a.shape[0], m.groups
    cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)  # (B, D, P)
    P = cols.shape[-1]
    a3 = cols.view(B, G, -1, P)
    g3 = g.reshape(B, G, -1, P)
    aa = a3.transpose(-1, -2) @ a3
    gg = g3.transpose(-1, -2) @ g3
    return (aa * gg).reshape(B, -1).sum(1)


def _conv_weight_writer(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, padding: list[int]) -> Writer:
    """Writer of the clipped weight sum: the ordinary weight gradient with the input or the output
    gradient, whichever is smaller, scaled by the factors (the gradient is bilinear in the two)."""
    scale_a = a.numel() < g.numel()

    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        cc = c.view(-1, 1, 1, 1)
        aa, gg = (a * cc, g) if scale_a else (a, g * cc)
        w = _conv_backward_weight(m, aa, gg, padding, m.weight, m.groups)
        if acc:
            out.add_(w.reshape(-1))
        else:
            out.copy_(w.reshape(-1))

    return write


def _embedding(m: nn.Embedding, a: torch.Tensor, g: torch.Tensor, attrs: tuple[str, ...]) -> list[Any]:
    B = a.shape[0]
    idx = a.reshape(B, -1)
    g3 = g.reshape(B, idx.shape[1], m.embedding_dim)
    if m.padding_idx is not None:
        g3 = g3 * (idx != m.padding_idx).unsqueeze(-1).to(g3.dtype)
    if idx.shape[1] == 1:
        sq = g3.pow(2).sum((1, 2))
    else:
        same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(g3.dtype)
        sq = ((g3 @ g3.transpose(1, 2)) * same).sum((1, 2))
    flat_idx = idx.reshape(-1)
    rows = g3.reshape(-1, m.embedding_dim)
    T = idx.shape[1]

    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        o = out.view(m.num_embeddings, m.embedding_dim)
        if not acc:
            o.zero_()
        cc = c if T == 1 else c.repeat_interleave(T)
        o.index_add_(0, flat_idx, rows * cc[:, None])

    return [(sq, write)]


def _normalisation(m: nn.Module, a: torch.Tensor, g: torch.Tensor, attrs: tuple[str, ...]) -> list[Any]:
    B = a.shape[0]
    if isinstance(m, nn.LayerNorm):
        xhat = F.layer_norm(a, m.normalized_shape, None, None, m.eps)
        k = int(torch.Size(m.normalized_shape).numel())
        per_channel = lambda t: t.reshape(B, -1, k).sum(1)  # noqa: E731
    else:
        assert isinstance(m, nn.GroupNorm)
        xhat = F.group_norm(a, m.num_groups, None, None, m.eps)
        per_channel = lambda t: t.reshape(B, m.num_channels, -1).sum(2)  # noqa: E731
    entries: list[Any] = []
    for attr in attrs:
        psg = per_channel(g * xhat) if attr == "weight" else per_channel(g)
        entries.append(_psg_entry(psg))
    return entries


_RULES: dict[type[nn.Module], Callable[..., list[Any]]] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv2d,
    nn.Embedding: _embedding,
    nn.LayerNorm: _normalisation,
    nn.GroupNorm: _normalisation,
}


def _rule(m: nn.Module) -> Callable[..., list[Any]]:
    for t in type(m).__mro__:
        if t in _RULES:
            return _RULES[t]
    raise AssertionError(type(m))  # pragma: no cover - ghost_layers refuses other types


def ghost_pass(
    model: nn.Module,
    layers: list[GhostLayer],
    X: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    owner: str = "DPSGD",
) -> dict[str, tuple[torch.Tensor, Writer]]:
    """One forward and one backward (to the layer outputs) on ``(X, y)``.

    Returns
    -------
    dict
        Parameter name -> ``(squared per-example gradient norm (B,), writer)``; ``writer(c, out, acc)``
        writes ``sum_i c_i grad_i`` (flattened) into ``out`` (adds when ``acc``). Parameters whose
        layer does not reach the loss get zero norms and a writer of zeros.
    """
    B = len(X)
    dtype = next(getattr(layer.module, layer.attrs[0]).dtype for layer in layers) if layers else X.dtype
    taps: dict[nn.Module, tuple[torch.Tensor, torch.Tensor, int]] = {}
    by_module = {layer.module: layer for layer in layers}

    def hook(m: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if m in taps:
            raise ParameterError(
                f"The 'model' parameter of {owner} with clipping='ghost' calls {type(m).__name__} layer "
                f"{by_module[m].name!r} more than once per forward pass (shared weights); use clipping='flat'.",
                param="model",
            )
        a = inputs[0]
        if not isinstance(output, torch.Tensor) or a.shape[0] != B or output.shape[0] != B:
            raise ParameterError(
                f"The 'model' parameter of {owner} with clipping='ghost' feeds {type(m).__name__} layer "
                f"{by_module[m].name!r} input of shape {tuple(a.shape)}; ghost clipping needs the batch "
                f"({B} examples) in dimension 0 of every layer's input and output. Use clipping='flat'.",
                param="model",
            )
        taps[m] = (a.detach(), output, output._version)

    handles = [layer.module.register_forward_hook(hook) for layer in layers]
    try:
        with torch.enable_grad():
            losses = loss_fn(model(X), y)
    finally:
        for h in handles:
            h.remove()
    if losses.shape != (B,):
        raise ParameterError(
            f"The 'loss_fn' parameter of {owner} must return one loss per example, of shape ({B},). "
            f"Got shape {tuple(losses.shape)} instead.",
            param="loss_fn",
        )
    tapped = [layer for layer in layers if layer.module in taps]
    untapped = [layer for layer in layers if layer.module not in taps]
    for layer in tapped:
        _, out, version = taps[layer.module]
        if out._version != version:
            raise ParameterError(
                f"The 'model' parameter of {owner} with clipping='ghost' modifies the output of "
                f"{type(layer.module).__name__} layer {layer.name!r} in place (e.g. ReLU(inplace=True)); "
                "use inplace=False or clipping='flat'.",
                param="model",
            )
    # Parameters of layers whose forward never ran must not reach the loss another way.
    extra = [getattr(layer.module, attr) for layer in untapped for attr in layer.attrs]
    targets = [taps[layer.module][1] for layer in tapped] + extra
    grads: tuple[torch.Tensor | None, ...] = ()
    if targets and losses.requires_grad:
        grads = torch.autograd.grad(losses.sum(), targets, allow_unused=True)
    else:
        grads = (None,) * len(targets)
    for p, gp in zip(extra, grads[len(tapped) :], strict=True):
        if gp is not None:
            name = next(
                k
                for layer in untapped
                for k, a in zip(layer.keys, layer.attrs, strict=True)
                if getattr(layer.module, a) is p
            )
            raise ParameterError(
                f"The 'model' parameter of {owner} with clipping='ghost' uses parameter {name!r} outside "
                "its layer's forward; use clipping='flat'.",
                param="model",
            )
    result: dict[str, tuple[torch.Tensor, Writer]] = {}
    with torch.no_grad():
        _apply_rules(tapped, grads[: len(tapped)], taps, result, B, dtype)
    for layer in untapped:
        for key in layer.keys:
            result[key] = _zero_entry(B, dtype)
    return result


def _apply_rules(
    tapped: list[GhostLayer],
    grads: tuple[torch.Tensor | None, ...],
    taps: dict[nn.Module, tuple[torch.Tensor, torch.Tensor, int]],
    result: dict[str, tuple[torch.Tensor, Writer]],
    B: int,
    dtype: torch.dtype,
) -> None:
    for layer, g in zip(tapped, grads, strict=True):
        if g is None:
            for key in layer.keys:
                result[key] = _zero_entry(B, dtype)
            continue
        a = taps[layer.module][0]
        entries = _rule(layer.module)(layer.module, a, g.detach(), layer.attrs)
        for key, entry in zip(layer.keys, entries, strict=True):
            result[key] = entry


def _zero_entry(B: int, dtype: torch.dtype) -> tuple[torch.Tensor, Writer]:
    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        if not acc:
            out.zero_()

    return torch.zeros(B, dtype=dtype), write


class DenseGhost:
    """Ghost clipping's forward and backward (to the Linear layers' outputs) for a dense model with the
    default cross-entropy loss, written out without autograd: same entries as :func:`ghost_pass`."""

    __slots__ = ("flatten", "layers", "first", "modules")

    def __init__(self, flatten: bool, layers: list[tuple[str, nn.Module]], model: nn.Module) -> None:
        self.flatten = flatten
        self.layers = layers
        self.first = next(i for i, (_, m) in enumerate(layers) if type(m) is nn.Linear)
        self.modules = list(model.modules())

    @classmethod
    def of(cls, model: nn.Module, keys: list[str]) -> DenseGhost | None:
        """The dense pass of ``model`` whose trainable parameters are ``keys``, or None when the model is
        not dense or some of its Linear parameters are frozen."""
        found = dense_layers(model)
        if found is None:
            return None
        flatten, layers = found
        expected = [
            prefix + attr
            for prefix, m in layers
            if type(m) is nn.Linear
            for attr in ("weight", "bias")
            if getattr(m, attr) is not None
        ]
        if sorted(expected) != sorted(keys):
            return None
        return cls(flatten, layers, model)

    def _hooked(self) -> bool:
        """Whether any forward or backward hook (global or on a module of the model) is registered: the
        dense path would bypass it."""
        g = nn.modules.module
        if (
            g._global_forward_hooks
            or g._global_forward_pre_hooks
            or g._global_backward_hooks
            or g._global_backward_pre_hooks
        ):
            return True
        return any(
            m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
            for m in self.modules
        )

    def entries(self, X: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[torch.Tensor, Writer]] | None:
        """``{parameter name: (squared per-example norm, writer)}`` for the batch ``(X, y)``; None when
        the batch needs the general path (labels that are not class indices in range, a hooked model,
        inputs of another shape)."""
        if y.dtype != torch.int64 or y.dim() != 1 or not X.is_floating_point() or self._hooked():
            return None
        if not self.flatten and X.dim() != 2:
            return None
        with torch.no_grad():
            return self._entries(X, y)

    def _entries(self, X: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[torch.Tensor, Writer]] | None:
        h = X.flatten(1) if self.flatten else X
        saved: list[Any] = []
        for i, (_, module) in enumerate(self.layers):
            kind = type(module)
            if kind is nn.Linear:
                saved.append(h)
                h = F.linear(h, module.weight, module.bias)
            elif kind is not nn.Identity:
                # below the first Linear nothing is passed down: nothing to keep
                h = activation_forward(module, h, saved if i > self.first else None)
        B, classes = h.shape
        if B and (int(y.min()) < 0 or int(y.max()) >= classes):
            return None  # the general path raises cross-entropy's own error
        # d loss_i / d logits_i = softmax(z_i) - onehot(y_i); softmax written out (torch's kernel is slow
        # for a short last axis on a CPU)
        g = (h - h.amax(1, keepdim=True)).exp_()
        g.div_(g.sum(1, keepdim=True))
        g.scatter_add_(1, y.view(-1, 1), torch.full((B, 1), -1.0, dtype=g.dtype, device=g.device))
        result: dict[str, tuple[torch.Tensor, Writer]] = {}

        def at_linear(i: int, prefix: str, module: nn.Module, a_in: torch.Tensor, g: torch.Tensor) -> Any:
            g_sq = _row_sq(g)
            shape = (module.out_features, module.in_features)
            result[prefix + "weight"] = (_row_sq(a_in) * g_sq, _mm_writer(g, a_in, shape))
            if module.bias is not None:
                result[prefix + "bias"] = _bias_entry(g, g_sq)
            return g @ module.weight if i > self.first else None

        backward_chain(self.layers, self.first, saved, g, at_linear)
        return result
