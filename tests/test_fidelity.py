"""Knobs of the paper profiles that come from the authors' code, one assertion each, with the source.

Sources (read in the public repositories): energy_ood = wetliu/energy_ood ``CIFAR/train.py`` (argparse: lr 0.001,
10 epochs, batch 128 + 256 outliers, weight decay 5e-4, Nesterov, energy weight 0.1, OE weight 0.5) and
``CIFAR/run.sh`` (``energy_ft``: m_in -23 / m_out -5 for CIFAR-10, -27 / -5 for CIFAR-100); Greg-OOD ``train_sea.py``
(``--jacobianLoss 1``, the penalty of tests/test_grad_penalty_oracle.py, fp32 training).
"""
import pytest

from ood import config

PAPER = ["cifar10", "cifar100", "cifar10-offline"]


@pytest.fixture(scope="module")
def params():
    return config.load_params()


@pytest.mark.parametrize("profile, m_in", [("cifar10", -23.0), ("cifar100", -27.0), ("cifar10-offline", -23.0)])
def test_energy_oe_is_the_energy_papers_fine_tune(params, profile, m_in):
    cfg = config.method_config(params, "energy_oe", profile)
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.out_batch_size, cfg.weight_decay, cfg.nesterov) == \
        (0.001, 10, 128, 256, 5.0e-4, True)
    assert cfg.terms["energy_margin"] == {"weight": 0.1, "m_in": m_in, "m_out": -5.0}
    assert cfg.init == "ce"


@pytest.mark.parametrize("profile", PAPER)
def test_oe_is_the_oe_fine_tune(params, profile):
    cfg = config.method_config(params, "oe", profile)
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.out_batch_size) == (0.001, 10, 128, 256)
    assert cfg.terms["oe"] == {"weight": 0.5}


@pytest.mark.parametrize("profile", PAPER + ["imagenet"])
def test_paper_profiles_train_in_fp32_as_the_authors(params, profile):
    for m in params["pipeline"]["evaluate"]:
        assert config.method_config(params, m, profile).amp is False, m
