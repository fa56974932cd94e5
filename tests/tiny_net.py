"""A tiny SmallNet and random images, shared by the tests of ood.analysis and ood.illustrations (not a test file)."""
import torch

from ood.models import build_model


def tiny_model(seed=0, dtype=torch.float32):
    """A seeded SmallNet (10 classes) in eval mode, with non-trivial BatchNorm statistics, so that eval mode differs
    from train mode."""
    torch.manual_seed(seed)
    m = build_model("smallnet", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.to(dtype).eval()


def tiny_images(n, seed=0):
    """``n`` seeded uniform random 32x32 RGB images in [0, 1]."""
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
