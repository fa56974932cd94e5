"""Architectures: published parameter counts, the OODNet interface, GAP/linear-head commutation, init."""
import math

import pytest
import torch
from torch import nn

from ood.losses import position_logits
from ood.models import MODELS, TorchvisionNet, build_model, count_parameters

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)

# name -> (published parameter count for 10 classes, source, feature shape for 32x32 input)
PUBLISHED = {
    "wrn40_2": (2_243_546, "OE / Energy-OE WRN-40-2 (exact count of that code)", (128, 8, 8)),
    "densenet_bc100": (0.77e6, "DenseNet-BC-100 k=12: 0.8M (Huang et al. 2017, Table 2)", (342, 8, 8)),
    "resnet18": (11.17e6, "ResNet-18 CIFAR variant: 11.17M", (512, 4, 4)),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_match_published(name):
    model = build_model(name, 10, MEAN, STD)
    n = count_parameters(model)
    ref, source, _ = PUBLISHED[name]
    print(f"{name}: {n:,} parameters (published {ref:,.0f}, {source})")
    assert abs(n - ref) / ref < 0.02
    if name == "densenet_bc100":
        assert 0.77e6 * 0.98 < n < 0.8e6 * 1.02


@pytest.mark.parametrize("name", list(PUBLISHED) + ["smallnet"])
def test_interface_shapes_and_commutation(name):
    torch.manual_seed(0)
    model = build_model(name, 7, MEAN, STD).eval()
    with torch.no_grad():
        # one train-mode step so the BN statistics are not the identity
        model.train()
        model(torch.rand(2, 3, 16, 16))
        model.eval()
        x = torch.rand(2, 3, 32, 32)
        fmap = model.features(x)
        pen, logits = model.pool(fmap), model(x)
    c = model.feature_dim
    if name in PUBLISHED:
        assert tuple(fmap.shape[1:]) == PUBLISHED[name][2]
    assert fmap.shape[:2] == (2, c) and pen.shape == (2, c) and logits.shape == (2, 7)
    assert fmap.min() >= 0  # post-activation
    torch.testing.assert_close(pen, fmap.mean(dim=(2, 3)))  # global average pooling, by hand
    torch.testing.assert_close(logits, fmap.mean(dim=(2, 3)) @ model.fc.weight.T + model.fc.bias)  # linear head
    # per-position logits (head at every position) average to the image logits
    pl = position_logits(fmap, model.fc)
    assert pl.shape == (2, 7) + tuple(fmap.shape[2:])
    torch.testing.assert_close(pl.mean(dim=(2, 3)), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_init_as_original_code(name):
    model = build_model(name, 10, MEAN, STD)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    expected = math.sqrt(2.0 / (big.kernel_size[0] * big.kernel_size[1] * big.out_channels))  # He, fan-out
    assert abs(big.weight.std().item() / expected - 1) < 0.05
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert torch.all(model.fc.bias == 0)


def test_normalize_uses_given_statistics():
    model = build_model("resnet18", 10, MEAN, STD)
    x = torch.rand(2, 3, 32, 32)
    expected = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(x), expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_a_model_refuses_non_float_images_with_the_expected_range(dtype):
    """A uint8 image tensor gave NaN logits without a word (the statistics cast to uint8 are 0); now one line says
    what the models take. Every architecture shares OODNet.normalize, so SmallNet stands for them."""
    model = build_model("smallnet", 10, MEAN, STD).eval()
    x = (torch.rand(2, 3, 32, 32) * 255).to(dtype)
    for call in (model, model.features, model.normalize):
        with pytest.raises(TypeError, match=r"float images in \[0, 1\].*x\.float\(\) / 255"):
            call(x)
    logits = model(x.float() / 255)  # the conversion the message names gives finite logits
    assert torch.isfinite(logits).all()


def test_wideresnet_dropout_and_bad_depth():
    from ood.models import WideResNet

    m = WideResNet(10, MEAN, STD, depth=10, widen=1, drop=0.3).train()
    torch.manual_seed(0)
    a, b = m(torch.ones(2, 3, 8, 8)), m(torch.ones(2, 3, 8, 8))
    assert not torch.equal(a, b)  # dropout active in train mode
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(10, MEAN, STD, depth=41)


@pytest.mark.parametrize("name,channels", [("resnet50", 2048), ("densenet121", 1024)])
def test_torchvision_models_small_input(name, channels):
    torch.manual_seed(0)
    model = build_model(name, 5, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()
    assert isinstance(model, TorchvisionNet) and isinstance(model.fc, nn.Linear) and model.num_classes == 5
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)  # small input keeps the CPU test cheap
        fmap = model.features(x)
        logits = model(x)
    assert fmap.shape == (1, channels, 2, 2) and fmap.min() >= 0
    torch.testing.assert_close(position_logits(fmap, model.fc).mean(dim=(2, 3)), logits, rtol=1e-4, atol=1e-5)


def test_registry():
    assert {"smallnet", "wrn40_2", "densenet_bc100", "resnet18", "resnet50", "densenet121"} <= set(MODELS)
    with pytest.raises(ValueError, match="allowed: .*wrn40_2"):
        build_model("wrn28_10", 10, MEAN, STD)
    with pytest.raises(ValueError, match="unknown torchvision arch"):
        TorchvisionNet("vgg16", 10)


def test_resnet18_tv_is_torchvisions_imagenet_resnet18():
    """GReg's CIFAR ResNet-18: torchvision's architecture (7x7 stride-2 stem, max-pool), so a 32 px input leaves a
    1x1 last map; 11,689,512 parameters with 1,000 classes (torchvision's published count) minus the 990 classes'
    512 weights and bias: 11,181,642 with 10 classes."""
    model = build_model("resnet18_tv", 10, MEAN, STD).eval()
    assert isinstance(model, TorchvisionNet) and count_parameters(model) == 11_689_512 - 990 * 513
    assert model.trunk[0].kernel_size == (7, 7) and model.trunk[0].stride == (2, 2)
    assert isinstance(model.trunk[3], nn.MaxPool2d)
    with torch.no_grad():
        fmap = model.features(torch.rand(2, 3, 32, 32))
    assert tuple(fmap.shape) == (2, 512, 1, 1)
