"""Small torch models used across ppml: logistic regression, an MLP and the McMahan et al. CNN.

All models map a float32 batch to logits. They avoid cross-example layers (BatchNorm), so that
per-example gradients, DP-SGD and membership scores are well defined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._validation import POSITIVE_INT, Interval, Options, ParameterError, check_param

__all__ = ["LogisticRegression", "MLP", "CNN", "build_model", "reset_parameters", "MODEL_NAMES"]


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened input."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened input.

    ``MLP(784, (200, 200), 10)`` is McMahan et al.'s "2NN".
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class CNN(nn.Module):
    """Two 5x5 convolutions (``channels``), each followed by 2x2 max-pooling, a hidden FC layer, logits.

    With the defaults on 1x28x28 input this is the CNN of McMahan et al. 2017 (32 and 64 channels,
    FC 512).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 512,
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        c1, c2 = (int(x) for x in channels)
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MODEL_NAMES = ("logistic", "mlp", "cnn")


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    hidden: Sequence[int] = (64, 64),
    channels: Sequence[int] = (32, 64),
    cnn_hidden: int = 512,
    seed: int = 0,
) -> nn.Module:
    """Build a model by name with a seeded initialisation.

    Parameters
    ----------
    name : {"logistic", "mlp", "cnn"}
    input_shape : tuple of int
        Shape of one example (``(d,)`` for tabular data, ``(c, h, w)`` for images).
    num_classes : int
    hidden : sequence of int
        Hidden widths of the MLP.
    channels, cnn_hidden
        CNN widths.
    seed : int
        Seed of the initial weights (the same seed gives the same model).
    """
    check_param("name", name, "build_model", Options(MODEL_NAMES))
    check_param("num_classes", num_classes, "build_model", Interval(int, 2, None, "left"))
    for h in hidden:
        check_param("hidden", h, "build_model", POSITIVE_INT)
    # Layer constructors draw a default initialisation from torch's global generator; fork it so
    # ppml leaves the global state untouched, then re-initialise from a private seeded generator.
    with torch.random.fork_rng(devices=[]):
        in_features = int(math.prod(input_shape))
        if name == "logistic":
            model: nn.Module = LogisticRegression(in_features, num_classes)
        elif name == "mlp":
            model = MLP(in_features, hidden, num_classes)
        else:
            if len(input_shape) != 3:
                raise ParameterError(
                    "The 'name' parameter of build_model is 'cnn', which needs image input of shape "
                    f"(channels, height, width); got input shape {tuple(input_shape)}.",
                    param="name",
                )
            model = CNN(input_shape, num_classes, channels, cnn_hidden)
    reset_parameters(model, seed)
    return model


@torch.no_grad()
def reset_parameters(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise Linear and Conv layers as torch does by default, from a seeded generator.

    Uses a private ``torch.Generator``: the global torch random state is neither read nor changed.
    """
    g = torch.Generator().manual_seed(int(seed))
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(m.bias, -bound, bound, generator=g)
    return model
