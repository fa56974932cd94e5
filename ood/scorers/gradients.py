r"""Scores that differentiate through the network: ODIN (the input gradient) and GradNorm (the last layer's weight
gradient).

ODIN is the one scorer with ``needs_network``: it re-runs the network on a perturbed input, so it scores images
(:meth:`ODIN.score`), not cached features. GradNorm's gradient has a closed form in the penultimate features and the
logits, so it scores cached features like every other scorer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ood.models import OODNet
from ood.numerics import eval_mode, wide
from ood.scorers.base import Scorer, check_param, register
from ood.scorers.logits import msp

__all__ = ["ODIN", "GradNorm"]


@register(order=5)
class ODIN(Scorer):
    r"""ODIN: temperature scaling and input pre-processing.

    .. math::
        \tilde x = x - \varepsilon\, \mathrm{sign}\big(-\nabla_x \log \mathrm{softmax}(f(x)/T)_{\hat y}\big),
        \quad \hat y = \arg\max_c f_c(x), \qquad
        S(x) = \max_c \mathrm{softmax}(f(\tilde x)/T)_c

    i.e. one signed gradient step of size :math:`\varepsilon` that *decreases* the cross-entropy of
    :math:`f(x)/T` with the predicted label, then the temperature-scaled MSP.

    Liang, Li & Srikant, "Enhancing the reliability of out-of-distribution image detection in neural
    networks", ICLR 2018, Eq. 2. Defaults ``T = 1000``, ``eps = 0.0014`` [the ODIN paper's CIFAR
    DenseNet setting; a point of the Energy-OE code's ODIN grid (``energy_ood/CIFAR/run.sh``), whose
    ``ODIN()`` in ``utils/score_calculation.py`` is the algorithm below].

    Pixel space: the ODIN code takes the gradient with respect to the *normalized* input, divides its
    sign by the per-channel std and subtracts ``eps`` times that from the normalized input. Since
    :math:`x_n = (x - m)/s` with :math:`s > 0`, the gradient with respect to :math:`x` is the one with
    respect to :math:`x_n` divided by :math:`s`, so the signs agree, and
    :math:`x_n - \varepsilon\,\mathrm{sign}/s = ((x - \varepsilon\,\mathrm{sign}) - m)/s`: the code's step
    is exactly a step of :math:`\varepsilon` on the [0, 1] input. Our models take [0, 1] input and
    normalize inside, so we perturb ``x`` directly by ``eps * sign(grad)``, without clamping (as the
    code). As in the code, a zero gradient counts as positive (``torch.ge(grad, 0)``).

    ``needs_network``: the score needs the network (it re-runs it on :math:`\tilde x`); use
    :meth:`score`. :meth:`score_features` only works for ``eps = 0``, where ODIN is the MSP of
    :math:`f/T`.
    """

    name = "odin"
    formula = r":math:`\max_c \mathrm{softmax}(f(\tilde x)/T)_c`, input perturbation"
    source = "Liang et al. 2018"
    needs_network = True

    def __init__(self, T: float = 1000.0, eps: float = 0.0014):
        self.T = check_param(self.name, "T", T, low=0, low_open=True)
        self.eps = check_param(self.name, "eps", eps, low=0)

    def perturb(self, model: OODNet, x: Tensor) -> Tensor:
        """The ODIN input :math:`\\tilde x` for a batch ``x`` in [0, 1] (model assumed in eval mode)."""
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            logits = wide(model(xg))
            labels = logits.argmax(dim=1)
            # sum, not mean: the same sign per sample, without a 1/B factor that could underflow at T = 1000
            loss = F.cross_entropy(logits / self.T, labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xg)
        step = torch.where(grad >= 0, torch.ones_like(grad), -torch.ones_like(grad))
        return x.detach() - self.eps * step

    def score(self, model: OODNet, x: Tensor) -> Tensor:
        with eval_mode(model):
            xt = self.perturb(model, x) if self.eps > 0 else x.detach()
            with torch.no_grad():
                return msp(wide(model(xt)) / self.T)

    def score_features(self, pen, logits, model=None):
        if self.eps != 0:
            raise RuntimeError(f"scorer 'odin' with eps={self.eps} needs the network (needs_network=True); "
                               f"call score(model, x) instead of score_features")
        return msp(wide(logits) / self.T)


@register(order=13)
class GradNorm(Scorer):
    r"""GradNorm: L1 norm of the last layer's weight gradient of the KL divergence to the uniform.

    .. math::
        S(x) = \Big\lVert \frac{\partial\, \mathrm{KL}(u \,\Vert\, \mathrm{softmax}(f/T))}{\partial W}
        \Big\rVert_1 = \frac{1}{T} \sum_c \big| p^{T}_c - \tfrac1K \big| \cdot \sum_j |h_j|,
        \quad p^T = \mathrm{softmax}(f/T)

    since :math:`\partial \mathrm{KL}/\partial f = (p^T - u)/T` and :math:`\partial f/\partial W =
    \cdot \otimes h`. Huang, Geng & Li, "On the importance of gradients for detecting distributional
    shifts in the wild", NeurIPS 2021, Eq. 4-5 (not the later "Gradients as a measure of
    uncertainty"). Their code (``gradnorm_ood``) back-propagates ``sum_c -log p_c`` (targets all ones,
    i.e. :math:`K` times the KL up to a constant) per sample and takes the L1 norm of the **weight**
    gradient of the last layer (no bias); that is :math:`K` times our value, a constant factor with
    identical metrics. Default ``T = 1`` [paper and code]. Closed form from cached features, no autograd.
    """

    name = "gradnorm"
    formula = r":math:`\lVert \partial_W \mathrm{KL}(u \Vert \mathrm{softmax}(f/T)) \rVert_1`"
    source = "Huang et al. 2021"

    def __init__(self, T: float = 1.0):
        self.T = check_param(self.name, "T", T, low=0, low_open=True)

    @torch.no_grad()
    def score_features(self, pen, logits, model=None):
        logits = wide(logits.detach())
        k = logits.shape[1]
        p = torch.softmax(logits / self.T, dim=1)
        return (p - 1.0 / k).abs().sum(1) * wide(pen.detach()).abs().sum(1).to(p.dtype) / self.T
