"""Networks with one interface, so that every loss and scorer works on any of them.

Every model is an :class:`OODNet`:

* ``normalize(x)`` maps images in [0, 1] to the normalized input ``(x - mean) / std``
  (ID statistics; OOD sets use the same, see DESIGN.md "Conventions"). Input contract: a **floating-point** tensor
  ``(B, C, H, W)`` with values in [0, 1]; any other dtype (``uint8`` images in [0, 255], integer labels passed by
  mistake) is refused with a ``TypeError`` that names the expected range, never converted: a silent ``/ 255`` would
  hide an image already scaled to [0, 1] in an integer tensor.
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

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OODNet", "SmallNet", "WideResNet", "DenseNet3", "ResNet18", "TorchvisionNet", "MODELS", "build_model",
           "build_from_spec", "load_model", "register_model", "count_parameters"]


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
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} takes float images in [0, 1], got a {x.dtype} tensor; convert "
                            "uint8 images in [0, 255] with x.float() / 255")
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
    """A small CNN for the CPU profiles (our choice, not from either paper; 24,266 parameters at width 16; its
    training speed on a CPU: benchmarks/README.md).

    32x32 input -> d1 x conv-bn-relu(w), maxpool -> 16x16 -> d2 x conv-bn-relu(2w), maxpool -> 8x8 ->
    d3 x conv-bn-relu(4w) -> last map ``(B, 4w, 8, 8)`` -> GAP -> linear, with ``depth`` = d (the same in every
    stage) or ``[d1, d2, d3]``. The 8x8 last map keeps enough positions for the background-feature loss to
    select from (BFM uses the last map of WRN-40-2, also 8x8).
    """

    def __init__(self, num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), width: int = 16,
                 depth: int | Sequence[int] = 1):
        super().__init__(mean, std)
        depths = [depth] * 3 if isinstance(depth, int) else list(depth)
        if (not isinstance(width, int) or width < 1 or len(depths) != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in depths)):
            raise ValueError(f"SmallNet width must be an integer >= 1 and depth an integer >= 1 or a list of three, "
                             f"got width={width!r}, depth={depth!r}")
        w = width
        stages = iter(depths)

        def stage(cin, cout):
            d = next(stages)
            return [_conv_bn(cin, cout)] + [_conv_bn(cout, cout) for _ in range(d - 1)]

        self.stem = nn.Sequential(*stage(3, w), nn.MaxPool2d(2), *stage(w, 2 * w), nn.MaxPool2d(2),
                                  *stage(2 * w, 4 * w))
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


def build_from_spec(spec: dict) -> OODNet:
    """:func:`build_model` of a model spec ``{"name", "num_classes", "mean", "std", "kwargs"}`` (what
    ``ood.config.model_spec`` returns and a checkpoint stores under ``"model"``)."""
    return build_model(spec["name"], spec["num_classes"], spec["mean"], spec["std"], **spec.get("kwargs", {}))


def load_model(run_dir, device="cpu") -> OODNet:
    """The trained model of a run folder (``<run_dir>/model.pt``, written by ``ood.train``), in eval mode on
    ``device``."""
    from pathlib import Path

    path = Path(run_dir) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}; run its training stage first (dvc repro) or the train "
                                "notebook")
    blob = torch.load(path, map_location=device, weights_only=True)
    model = build_from_spec(blob["model"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Architectures of the papers' CIFAR experiments (32x32 input)
# ----------------------------------------------------------------------------------------------

def _he_init(module: nn.Module) -> None:
    """Init of the Outlier-Exposure / Energy-OE code: convs N(0, 2 / (k*k*out)) (He, fan-out), BN weight 1 and
    bias 0, linear bias 0 (linear weight keeps PyTorch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.bias.data.zero_()


class _WRNBlock(nn.Module):
    """Pre-activation basic block of the OE WideResNet: BN-ReLU-conv3x3-BN-ReLU-conv3x3 (+ 1x1 conv shortcut
    when the width changes; the shortcut then starts from the activated input, as in that code)."""

    def __init__(self, cin: int, cout: int, stride: int, drop: float):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.equal = cin == cout
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = self.relu1(self.bn1(x))
        out = self.conv1(o)
        out = self.relu2(self.bn2(out))
        if self.drop > 0:
            out = F.dropout(out, p=self.drop, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equal else self.shortcut(o))


class WideResNet(OODNet):
    """WideResNet-``depth``-``widen`` (Zagoruyko & Komodakis 2016) as in the Outlier-Exposure and Energy-OE code
    (and GReg's ``wrn40_2``): conv3x3(16) -> 3 groups of (depth-4)/6 pre-activation blocks, widths
    16k/32k/64k, strides 1/2/2 -> BN-ReLU. ``body`` returns the map after that final BN-ReLU
    (``(B, 64k, 8, 8)`` for 32x32 input). WRN-40-2: 2,243,546 parameters for 10 classes.
    Dropout (``drop``, between the two convolutions of a block): 0 in Greg-OOD (models/__init__.py:12), 0.3 in the
    OE baseline and the OE/Energy-OE fine-tunes (outlier-exposure CIFAR/baseline.py:42, energy_ood CIFAR/train.py:43);
    the paper profiles give CE, OE and Energy-OE their own ``model: {drop: 0.3}`` [code]."""

    def __init__(self, num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), depth: int = 40,
                 widen: int = 2, drop: float = 0.0):
        super().__init__(mean, std)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        blocks = []
        for g, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                blocks.append(_WRNBlock(w[g] if i == 0 else w[g + 1], w[g + 1], stride if i == 0 else 1, drop))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(w[3], num_classes)
        _he_init(self)

    def body(self, xn):
        return self.relu(self.bn(self.blocks(self.conv1(xn))))


class _DenseBottleneck(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        inter = 4 * growth
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, inter, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(inter), nn.Conv2d(inter, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class _DenseTransition(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet3(OODNet):
    """DenseNet-BC (Huang et al. 2017) as ``DenseNet3`` of the OE / Energy-OE / GReg code (GReg and DOS call
    it "DenseNet-101"): conv3x3(2*growth) -> 3 dense blocks of bottleneck layers with transitions
    (compression ``reduction``) -> BN-ReLU; ``body`` returns that last map (``(B, 342, 8, 8)`` for
    DenseNet-BC-100, growth 12). About 0.77M parameters for 10 classes [OE code]."""

    def __init__(self, num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), depth: int = 100,
                 growth: int = 12, reduction: float = 0.5):
        super().__init__(mean, std)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"DenseNet-BC depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        c = 2 * growth
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        stages = []
        for b in range(3):
            layers = []
            for i in range(n):
                layers.append(_DenseBottleneck(c + i * growth, growth))
            stages.append(nn.Sequential(*layers))
            c = c + n * growth
            if b < 2:
                cout = int(math.floor(c * reduction))
                stages.append(_DenseTransition(c, cout))
                c = cout
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)
        _he_init(self)

    def body(self, xn):
        return F.relu(self.bn(self.stages(self.conv1(xn))))


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(OODNet):
    """ResNet-18 for 32x32 input (He et al. 2016; the CIFAR variant of the DOS / GReg / OpenOOD code):
    3x3 stem conv, stride 1, no max-pool; 4 stages of 2 basic blocks, widths 64-512, strides 1/2/2/2.
    ``body`` returns layer4's output (post-ReLU, ``(B, 512, 4, 4)``). 11,173,962 parameters for 10 classes."""

    def __init__(self, num_classes: int = 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
        super().__init__(mean, std)
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_ResBlock(cin, cout, stride), _ResBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)
        _he_init(self)

    def body(self, xn):
        return self.layers(F.relu(self.bn1(self.conv1(xn))))


# ----------------------------------------------------------------------------------------------
# torchvision models for 224 px input (ImageNet benchmarks)
# ----------------------------------------------------------------------------------------------

class TorchvisionNet(OODNet):
    """A torchvision ResNet or DenseNet behind the OODNet interface.

    ResNet: ``body`` = stem + layer1..layer4 (the last block ends in ReLU), ``fc`` = ``model.fc``.
    DenseNet: ``body`` = ``relu(features(x))`` (torchvision's forward applies the same ReLU before pooling),
    ``fc`` = ``model.classifier``. ``pretrained=True`` loads torchvision's IMAGENET1K_V1 weights through
    torchvision's own API (download on first use); with ``num_classes != 1000`` the classifier is then
    replaced by a fresh ``nn.Linear`` (bias 0). Default: ``weights=None`` (torchvision's init).
    """

    def __init__(self, arch: str, num_classes: int = 1000, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 pretrained: bool = False):
        super().__init__(mean, std)
        import torchvision

        archs = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights", "densenet121": "DenseNet121_Weights"}
        if arch not in archs:
            raise ValueError(f"unknown torchvision arch {arch!r}; allowed: {', '.join(archs)}")
        if pretrained:
            weights = getattr(torchvision.models, archs[arch]).IMAGENET1K_V1
            net = getattr(torchvision.models, arch)(weights=weights)
        else:
            net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        self.arch = arch
        if arch.startswith("resnet"):
            self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                       net.layer4)
            fc = net.fc
        else:
            self.trunk = net.features
            fc = net.classifier
        if fc.out_features != num_classes:
            fc = nn.Linear(fc.in_features, num_classes)
            nn.init.zeros_(fc.bias)
        self.fc = fc

    def body(self, xn):
        out = self.trunk(xn)
        return out if self.arch.startswith("resnet") else F.relu(out)


register_model("wrn40_2")(lambda num_classes, mean, std, **kw: WideResNet(num_classes, mean, std, depth=40, widen=2,
                                                                          **kw))
register_model("densenet_bc100")(lambda num_classes, mean, std, **kw: DenseNet3(num_classes, mean, std, depth=100,
                                                                                growth=12, **kw))
register_model("resnet18")(ResNet18)
# GReg's CIFAR `--arch resnet18` is torchvision's ImageNet ResNet-18 (7x7 stride-2 stem and max-pool: a 1x1 last map on
# 32 px inputs) [code: Greg-OOD models/__init__.py, models/resnet.py at 6ea4ff0; its 32x32 variant came after the
# paper].
# Our `resnet18` above is the CIFAR variant (3x3 stem) of the knn-ood/DICE code; the GReg reference rows use this one.
register_model("resnet18_tv")(lambda num_classes, mean, std, **kw: TorchvisionNet("resnet18", num_classes, mean, std,
                                                                                  **kw))
register_model("resnet50")(lambda num_classes, mean, std, **kw: TorchvisionNet("resnet50", num_classes, mean, std,
                                                                               **kw))
register_model("densenet121")(lambda num_classes, mean, std, **kw: TorchvisionNet("densenet121", num_classes, mean, std,
                                                                                  **kw))
