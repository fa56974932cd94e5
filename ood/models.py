"""Networks with one interface, so that every loss and scorer works on any of them.

Every model is an :class:`OODNet`:

* ``normalize(x)`` maps images in [0, 1] to the normalized input ``(x - mean) / std``
  (ID statistics; OOD sets use the same, see DESIGN.md "Conventions").
* ``body(xn)`` maps a normalized input to the **last convolutional feature map**
  (post-activation, before global pooling), shape ``(B, C, H, W)``.
* ``features(x) = body(normalize(x))``.
* ``pool(fmap)`` global average pooling to the penultimate vector, ``(B, C)``.
* ``head(pen)`` the linear classifier ``fc`` (an ``nn.Linear``), logits ``(B, K)``.
* ``forward(x) = head(pool(features(x)))``.

Because global average pooling and the linear head commute, ``head`` applied to every spatial
position of the feature map gives per-position logits whose mean is the image's logits; the
background-feature loss (``ood.losses``) uses that.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["OODNet", "SmallNet", "MODELS", "build_model", "register_model", "count_parameters"]


class OODNet(nn.Module):
    """Base class: subclasses implement ``body`` and set ``self.fc`` (``nn.Linear``)."""

    fc: nn.Linear

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def body(self, xn: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    @staticmethod
    def pool(fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))

    def head(self, pen: torch.Tensor) -> torch.Tensor:
        return self.fc(pen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))

    @property
    def feature_dim(self) -> int:
        return self.fc.in_features

    @property
    def num_classes(self) -> int:
        return self.fc.out_features


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallNet(OODNet):
    """A small CNN for the CPU synthetic profile (our choice, about 0.14M parameters at width 32).

    32x32 input -> [conv-bn-relu x2, maxpool] -> 16x16 -> [x2, maxpool] -> 8x8 ->
    conv-bn-relu -> last map ``(B, 4*width, 8, 8)`` -> GAP -> linear.
    """

    def __init__(self, num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), width: int = 32):
        super().__init__(mean, std)
        w = width
        self.stem = nn.Sequential(
            _conv_bn(3, w), _conv_bn(w, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w),
        )
        self.fc = nn.Linear(4 * w, num_classes)

    def body(self, xn: torch.Tensor) -> torch.Tensor:
        return self.stem(xn)


MODELS: dict[str, Callable[..., OODNet]] = {"smallnet": SmallNet}


def register_model(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


def build_model(name: str, num_classes: int, mean: Sequence[float], std: Sequence[float], **kwargs) -> OODNet:
    """Build a registered model by name; unknown names list the allowed ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, mean=mean, std=std, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
