"""The training methods, each written once: its loss terms, its outlier sampler and the checkpoint it starts from.

A method is a composition. Its loss is the sum of its terms, in the order given here (:data:`ood.losses.TERMS`);
the sampler (:data:`ood.sampling.SAMPLERS`) picks the auxiliary outliers of each batch, or None for uniformly random
ones when a term needs them; ``init`` names the method whose checkpoint it fine-tunes from, or None for training
from scratch.

A profile (``profiles/<name>.yaml``, ``method.<name>``) states only what differs for it: the recipe, the terms'
parameters (margins, weights), the sampler's parameters, a model override, and ``init: null`` where it trains a
method from scratch (GReg+ in the paper profiles). :func:`ood.config.method_config` merges the two.

Adding a method: its loss term in ``ood/losses.py`` if it is new, one entry here, its fidelity rows in
``ood/reference.py`` if it is a paper's method, and its test. A pipeline trains it once ``params.yaml`` lists it
under ``pipeline`` (tests/test_methods.py checks those lists against this catalogue).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One composition: ``terms`` summed in order, ``sampler`` (None: random outliers), ``init`` (None: scratch)."""

    terms: tuple[str, ...]
    sampler: str | None = None
    init: str | None = None
    source: str = ""


#: The nine methods of the two papers, their baselines and ablations (the loss terms' docstrings give the formulas).
METHODS: dict[str, Method] = {
    "ce": Method(("ce",), source="cross-entropy baseline (the CE rows of both papers)"),
    "bfm": Method(("ce", "background"), source="BFM (Sec. 3): CE + the L2 norm of the background local features"),
    "oe": Method(("ce", "oe"), init="ce", source="Outlier Exposure (Hendrycks et al., ICLR 2019, Eq. 1)"),
    "energy_oe": Method(("ce", "energy_margin"), init="ce",
                        source="Energy-OE (Liu et al., NeurIPS 2020, Eq. 5)"),
    "greg": Method(("ce", "energy_margin", "grad_penalty"), init="ce",
                   source="GReg (Sec. 3): Energy-OE + the input-gradient penalty"),
    "greg_plus": Method(("ce", "energy_margin", "grad_penalty"), sampler="energy_cluster", init="ce",
                        source="GReg+: GReg with energy-based cluster sampling of the outliers"),
    "oe_grad": Method(("ce", "oe", "grad_penalty"), init="ce", source="+Grad on OE [GReg, Table 4]"),
    "energy_oe_sampling": Method(("ce", "energy_margin"), sampler="energy_cluster", init="ce",
                                 source="sampling alone on Energy-OE [GReg, Table 4]"),
    "bfm_greg": Method(("ce", "background", "energy_margin", "grad_penalty"), init="bfm",
                       source="BFM with GReg fine-tuning [BFM, combination with OE methods]"),
}


def method(name: str) -> Method:
    """The composition of ``name``; an unknown name raises ValueError naming the methods there are."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]
