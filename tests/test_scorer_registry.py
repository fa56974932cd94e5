"""The scorer registry: each scorer registers itself once (``@register``), SCORERS keeps the order every table and
results file follows, DEFAULTS is read from the constructors, the formula table is built from the classes, and each
class docstring states its formula, its paper and its defaults."""
import inspect
import re

import pytest

import ood.scorers
from ood import scorers
from ood.scorers import DEFAULTS, SCORERS, Scorer, build_scorer, formula_table, register

#: The order of the results (metrics.csv rows, tables): the twenty scorers of the first results, places 1 to 20.
FIRST_TWENTY = ["msp", "maxlogit", "energy", "entropy", "odin", "mahalanobis", "knn", "react", "ash_p", "ash_b",
                "ash_s", "dice", "gradnorm", "vim", "gen", "scale", "fdbd", "rmd", "nnguide", "neco"]

#: What ``from ood.scorers import ...`` offered before the package was split (notebooks and saved detectors).
PUBLIC_BEFORE = [
    "msp", "maxlogit", "energy", "entropy", "gen", "ash_p", "ash_b", "ash_s", "scale", "extract",
    "Scorer", "MSP", "MaxLogit", "Energy", "Entropy", "ODIN", "Mahalanobis", "KNN", "ReAct", "ASH", "ASHP", "ASHB",
    "ASHS", "DICE", "GradNorm", "ViM", "GEN", "SCALE", "FDBD", "RMD", "NNGuide", "NECO",
    "SCORERS", "DEFAULTS", "build_scorer", "profile_scorers",
]


@pytest.fixture
def registry():
    """Restore SCORERS and DEFAULTS (their contents, the same objects) after a test that registers."""
    saved_s, saved_d = dict(SCORERS), dict(DEFAULTS)
    yield
    SCORERS.clear()
    SCORERS.update(saved_s)
    DEFAULTS.clear()
    DEFAULTS.update(saved_d)


def test_the_first_twenty_keep_their_places():
    assert list(SCORERS)[:20] == FIRST_TWENTY
    assert [SCORERS[n].order for n in FIRST_TWENTY] == list(range(1, 21))
    orders = [c.order for c in SCORERS.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)


def test_every_public_name_of_before_still_imports():
    assert set(PUBLIC_BEFORE) <= set(ood.scorers.__all__)
    for name in ood.scorers.__all__:
        assert getattr(ood.scorers, name) is not None, name


def test_defaults_are_the_constructors_keyword_arguments():
    assert list(DEFAULTS) == list(SCORERS)
    for name, cls in SCORERS.items():
        init = cls.__init__
        want = {} if init is object.__init__ else {
            p.name: p.default for p in list(inspect.signature(init).parameters.values())[1:]}
        assert DEFAULTS[name] == want == cls.defaults(), name
        assert build_scorer(name).params == want, name


def _surname_and_year(source: str) -> tuple[str, str]:
    m = re.match(r"([A-Z][\w-]+).*?(\d{4})$", source)
    assert m, source
    return m.group(1), m.group(2)


@pytest.mark.parametrize("name", list(SCORERS))
def test_each_docstring_states_formula_paper_and_defaults(name):
    cls = SCORERS[name]
    doc = inspect.getdoc(cls)
    assert ".. math::" in doc, f"{name}: no formula"
    if cls.source != "(baseline)":
        surname, year = _surname_and_year(cls.source)
        assert surname in doc and year in doc, f"{name}: the docstring does not cite {cls.source}"
    params = cls.defaults()
    if not params:
        assert "no hyperparameters" in " ".join(doc.split()).lower(), name
    for p in params:
        assert f"``{p}" in doc, f"{name}: the docstring does not state where {p}'s default comes from"


def test_the_formula_table_is_built_from_the_classes():
    table = formula_table()
    rows = table.splitlines()
    assert rows[0] == rows[2] == rows[-1] and set(rows[0]) == {"=", " "}
    body = rows[3:-1]
    assert len(body) == len(SCORERS)
    for row, (name, cls) in zip(body, SCORERS.items()):
        assert row.startswith(f"``{name}``") and cls.formula in row and row.endswith(cls.source), row
    assert scorers.__doc__.rstrip().endswith(table.rstrip())


def test_no_hand_kept_list_of_scorers_in_the_package():
    """SCORERS and DEFAULTS are filled by registration only: no module writes a scorer's name into a literal
    dict, and the promise of "values to sweep" is gone."""
    import pathlib

    for path in pathlib.Path(scorers.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "values to sweep" not in text, path
        assert not re.search(r'^(SCORERS|DEFAULTS)[^=\n]*=\s*\{\s*["\']', text, re.M), path


def test_a_new_scorer_registers_at_its_place(registry):
    @register(order=1000)
    class Twice(Scorer):
        r"""Twice the maximum logit. .. math:: S(x) = 2 \max_c f_c (Nobody 2099). ``scale_by = 2``."""

        name = "twice_maxlogit"
        formula = r":math:`2 \max_c f_c`"
        source = "Nobody 2099"

        def __init__(self, scale_by: float = 2.0):
            self.scale_by = scale_by

        def score_features(self, pen, logits, model=None):
            return self.scale_by * logits.amax(dim=1)

    assert list(SCORERS)[-1] == "twice_maxlogit" and DEFAULTS["twice_maxlogit"] == {"scale_by": 2.0}
    assert build_scorer("twice_maxlogit", scale_by=3.0).params == {"scale_by": 3.0}
    assert "``twice_maxlogit``" in formula_table()


def _scorer(name="probe", formula="f", source="Nobody 2099", init=None):
    attrs = {"name": name, "formula": formula, "source": source}
    if init is not None:
        attrs["__init__"] = init
    return type("Probe", (Scorer,), attrs)


@pytest.mark.parametrize("order, cls, message", [
    (1, _scorer(), r"invalid value 1 for the order of scorer 'probe' \(taken by 'msp'\); allowed: .* e\.g\. \d+"),
    (0, _scorer(), "invalid value 0 for the order"),
    (999, _scorer(name="msp"), "scorer 'msp' is registered twice"),
    (999, _scorer(formula=""), "scorer 'probe' must state its own formula"),
    (999, _scorer(init=lambda self, k: None), "the parameter 'k' of __init__ must be a keyword argument with a "
                                              "default"),
    (999, type("Nameless", (Scorer,), {}), "must set its own name"),
])
def test_register_refuses_what_would_break_the_registry(registry, order, cls, message):
    before = list(SCORERS.items()), list(DEFAULTS.items())
    with pytest.raises(ValueError, match=message):
        register(order=order)(cls)
    assert (list(SCORERS.items()), list(DEFAULTS.items())) == before
