"""Recognising dense models: an input flatten followed by Linear layers and elementwise activations.

Such a model's backward is short enough to write out by hand; :mod:`ppml.train.ensemble` (stacked training
of many models) and :mod:`ppml.dp.ghost` (DP-SGD's ghost clipping) do so for speed, and fall back to
autograd for every other model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Identity)
"""Activations that act on each coordinate alone (their backward is a product with their derivative)."""


def dense_layers(model: nn.Module) -> tuple[bool, list[tuple[str, nn.Module]]] | None:
    """``(flatten, layers)`` when ``model`` is an input flatten followed by Linear layers and elementwise
    activations only (ppml's MLP, or an ``nn.Sequential`` of them); ``None`` otherwise."""
    from .zoo import MLP

    if type(model) is MLP:
        flatten, seq, prefix = True, model.net, "net."
    elif type(model) is nn.Sequential:
        flatten, seq, prefix = False, model, ""
    else:
        return None
    layers = [(f"{prefix}{name}.", module) for name, module in seq.named_children()]
    if not flatten and layers and type(layers[0][1]) is nn.Flatten:
        if (layers[0][1].start_dim, layers[0][1].end_dim) != (1, -1):
            return None
        flatten, layers = True, layers[1:]
    for _, module in layers:
        if type(module) is nn.Linear:
            continue
        if type(module) not in ELEMENTWISE or any(True for _ in module.parameters()):
            return None
    if not any(type(m) is nn.Linear for _, m in layers):
        return None
    return flatten, layers


def activation_forward(module: nn.Module, h: Tensor, saved: list[Any] | None) -> Tensor:
    """``module(h)`` for an elementwise activation of a dense chain; with ``saved``, append what
    :func:`activation_backward` needs (ReLU: its output; any other: the input and output of autograd run
    on this tensor alone, so its derivative needs no formula here)."""
    if type(module) is nn.ReLU:
        h = torch.relu(h)
        if saved is not None:
            saved.append(h)
        return h
    if saved is None:
        return module(h)
    with torch.enable_grad():
        z = h.detach().requires_grad_(True)
        a = module(z.clone() if getattr(module, "inplace", False) else z)
    saved.append((z, a))
    return a.detach()


def activation_backward(module: nn.Module, item: Any, g: Tensor) -> Tensor:
    """The gradient below an elementwise activation given the gradient ``g`` above it and the ``item``
    :func:`activation_forward` saved (ReLU through autograd's own threshold kernel: a masked fill is tens of
    times slower on a CPU)."""
    if type(module) is nn.ReLU:
        return torch.ops.aten.threshold_backward(g, item, 0)
    z, a = item
    with torch.enable_grad():
        (g,) = torch.autograd.grad(a, z, g)
    return g


def backward_chain(
    layers: list[tuple[str, nn.Module]],
    first: int,
    saved: list[Any],
    g: Tensor,
    at_linear: Callable[[int, str, nn.Module, Tensor, Tensor], Tensor | None],
) -> None:
    """Walk a dense chain from its last layer down to its first Linear (index ``first``) with the gradient
    ``g`` of its output, popping what the forward ``saved``: activations pass ``g`` down
    (:func:`activation_backward`), and at each Linear ``at_linear(i, prefix, module, its input, g)`` does the
    caller's work and returns the gradient below it (None at the first Linear)."""
    for i in range(len(layers) - 1, first - 1, -1):
        prefix, module = layers[i]
        kind = type(module)
        if kind is nn.Identity:
            continue
        item = saved.pop()
        if kind is not nn.Linear:
            g = activation_backward(module, item, g)
            continue
        below = at_linear(i, prefix, module, item, g)
        if below is None:
            return
        g = below
