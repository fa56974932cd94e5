r"""Post-hoc OOD scores with one contract; **higher = more in-distribution**, always.

Notation: :math:`h \in \mathbb{R}^D` the penultimate vector (``model.pool(model.features(x))``),
:math:`f = Wh + b \in \mathbb{R}^K` the logits (``model.fc``), :math:`p = \mathrm{softmax}(f)`.

Sign convention: every function and scorer returns a tensor where a larger value means "more ID";
scores whose papers use the opposite sign (energy, KNN distance, Mahalanobis distance, ViM, GEN's
generalized entropy, RMD) are negated here, once, and nowhere else.

One family a module; each scorer's class holds its formula, its paper, its defaults (with where they come from)
and its code:

    base.py       the contract (Scorer), extract, the registry (register, SCORERS, DEFAULTS), build_scorer
    logits.py     the logits alone, nothing fitted: MSP, MaxLogit, energy, entropy, GEN (and their pure functions)
    gradients.py  through the network's gradients: ODIN (input perturbation), GradNorm (last layer's weights)
    shaping.py    the energy of reshaped activations or weights: ReAct, ASH-P/B/S, SCALE, DICE
    distances.py  distances to what ID-train features fit: Mahalanobis, RMD, KNN, NNGuide, fDBD
    subspaces.py  the principal subspace of ID-train features: ViM, NECO

Why this cut: a family is what its scorers need and share. The logit scores need only the logits (pure functions a
notebook calls on cached logits); the shaping scores share the energy of the head after a change of :math:`h` or
:math:`W` and the ASH top-k rule; the distance and subspace scores fit statistics of ID-train features, the first
measuring how far a feature lies from them (Gaussians, neighbours, boundaries), the second where it lies with
respect to their principal directions (eigen-decompositions). ODIN and GradNorm are the gradient methods (ODIN
alone re-runs the network). A reader looking for a scorer finds it by what it computes, in a file of 100 to 300
lines; adding one touches its family's module and its test.

A scorer registers itself with ``@register(order=N)`` (:func:`ood.scorers.base.register`): :data:`SCORERS` (name ->
class, in ``order``, the order of every table and results file) and :data:`DEFAULTS` (name -> its ``__init__``'s
keyword arguments with their defaults) are built from the registrations, and the table below from each class's
``formula`` and ``source`` (:func:`formula_table`). Scorer hyperparameters are fixed at those defaults (the papers'
protocol); none is tuned on the OOD test sets.

Every scorer, in :data:`SCORERS` order (built when the package is imported; ``help(ood.scorers)``):

"""
from __future__ import annotations

from ood.scorers.base import (
    DEFAULTS,
    SCORERS,
    Scorer,
    build_scorer,
    check_flag,
    check_param,
    extract,
    formula_table,
    forward_parts,
    head_weights,
    percentile_of,
    profile_scorers,
    register,
)
from ood.scorers.distances import FDBD, KNN, RMD, Mahalanobis, NNGuide
from ood.scorers.gradients import ODIN, GradNorm
from ood.scorers.logits import GEN, MSP, Energy, Entropy, MaxLogit, energy, entropy, gen, maxlogit, msp
from ood.scorers.shaping import ASH, ASHB, ASHP, ASHS, DICE, SCALE, ReAct, ash_b, ash_p, ash_s, scale
from ood.scorers.subspaces import NECO, ViM

__all__ = [
    "msp", "maxlogit", "energy", "entropy", "gen", "ash_p", "ash_b", "ash_s", "scale", "extract",
    "Scorer", "MSP", "MaxLogit", "Energy", "Entropy", "ODIN", "Mahalanobis", "KNN", "ReAct", "ASH", "ASHP", "ASHB",
    "ASHS", "DICE", "GradNorm", "ViM", "GEN", "SCALE", "FDBD", "RMD", "NNGuide", "NECO",
    "SCORERS", "DEFAULTS", "build_scorer", "profile_scorers",
    "register", "formula_table", "forward_parts", "check_param", "check_flag", "head_weights", "percentile_of",
]

__doc__ = (__doc__ or "") + formula_table() + "\n"
