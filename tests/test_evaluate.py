"""ood.evaluate: one pass, every scorer, the average row over the chosen sets."""
import numpy as np
import pytest
import torch

from ood.aggregate import METRIC_COLUMNS
from ood.artifacts import load_scores, save_scores
from ood.data import ArrayDataset
from ood.evaluate import evaluate
from ood.metrics import fpr_at_tpr_ood
from ood.models import build_model


def _ds(name, n, seed, shift=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, 32, 32, generator=g) * 200 + shift).clamp(0, 255).to(torch.uint8)
    return ArrayDataset(name=name, images=x, labels=torch.arange(n) % 3)


@pytest.fixture(scope="module")
def result():
    torch.manual_seed(0)
    model = build_model("smallnet", 3, (0.5,) * 3, (0.25,) * 3)
    sets = {"a": _ds("a", 40, 1, 50), "b": _ds("b", 40, 2), "near": _ds("near", 40, 3, 20)}
    return evaluate(model, id_train=_ds("tr", 60, 0), id_test=_ds("te", 40, 4), ood_sets=sets,
                    scorers={"msp": {}, "energy": {}, "knn": {"k": 5}}, benchmark="toy", method="m",
                    progress=False, average_over=["a", "b"])


def test_every_scorer_and_set_has_a_row_and_the_average_uses_only_the_chosen_sets(result):
    m = result.metrics
    assert list(m.columns) == METRIC_COLUMNS and len(m) == 3 * 4
    for scorer in ("msp", "energy", "knn"):
        rows = m[m.scorer == scorer].set_index("ood_set")
        for metric in ("fpr95", "fpr95_ood_pos"):
            assert rows.loc["average", metric] == pytest.approx((rows.loc["a", metric] + rows.loc["b", metric]) / 2)
        # the OOD-positive FPR of each row is ood.metrics' of the row's cached scores
        sid = result.scores[f"{scorer}/id"]
        for o in ("a", "b", "near"):
            assert rows.loc[o, "fpr95_ood_pos"] == fpr_at_tpr_ood(sid, result.scores[f"{scorer}/{o}"])
    assert set(result.scores) == {f"{s}/{k}" for s in ("msp", "energy", "knn") for k in ("id", "a", "b", "near")}


def test_unknown_average_set_is_refused():
    model = build_model("smallnet", 3, (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError, match="average_over"):
        evaluate(model, id_train=_ds("tr", 20, 0), id_test=_ds("te", 20, 4), ood_sets={"a": _ds("a", 20, 1)},
                 scorers={"msp": {}}, benchmark="toy", method="m", progress=False, average_over=["svhn"])


def test_scores_round_trip(tmp_path, result):
    save_scores(result.scores, tmp_path / "s.npz")
    back = load_scores(tmp_path / "s.npz")
    assert back.keys() == result.scores.keys()
    for k in back:
        np.testing.assert_array_equal(back[k], result.scores[k])


class _Untouchable(ArrayDataset):
    def __len__(self):
        raise AssertionError("ID-train was read, but no scorer is fitted on it")


def test_id_train_is_read_only_for_scorers_fitted_on_it(result):
    torch.manual_seed(0)
    model = build_model("smallnet", 3, (0.5,) * 3, (0.25,) * 3)
    kw = dict(id_test=_ds("te", 40, 4), ood_sets={"a": _ds("a", 40, 1, 50)}, benchmark="toy", method="m",
              progress=False)
    tr = _ds("tr", 60, 0)
    untouchable = _Untouchable(name="tr", images=tr.images, labels=tr.labels)
    res = evaluate(model, id_train=untouchable, scorers={"msp": {}, "energy": {}}, **kw)
    assert set(res.scores) == {"msp/id", "msp/a", "energy/id", "energy/a"}
    with pytest.raises(AssertionError, match="ID-train was read"):
        evaluate(model, id_train=untouchable, scorers={"msp": {}, "knn": {"k": 5}}, **kw)
