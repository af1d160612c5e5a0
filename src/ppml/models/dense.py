"""Recognising dense models: an input flatten followed by Linear layers and elementwise activations.

Such a model's backward is short enough to write out by hand; :mod:`ppml.train.ensemble` (stacked training
of many models) and :mod:`ppml.dp.ghost` (DP-SGD's ghost clipping) do so for speed, and fall back to
autograd for every other model.
"""

from __future__ import annotations

from torch import nn

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
