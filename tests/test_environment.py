"""environment.yml and pyproject.toml must name the same packages with the same pins."""
import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    got = dict(_split(r) for r in pip_block if not r.startswith("-e"))
    assert got == wanted


def test_torch_pinned_as_developers_guide_says():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = dict(_split(r) for r in project["dependencies"])
    assert deps["torch"] == "==2.14.1"
    assert deps["torchvision"] == "==0.29.1"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```bash test\n(.*?)^```", readme, flags=re.S | re.M)
    assert len(blocks) == 1, "README.md must hold exactly one ```bash test block (what .ci/run executes)"
    assert "pytest" in blocks[0]
    assert "```bash test" in (ROOT / ".ci" / "run").read_text()


def _section(title: str) -> str:
    """The README's section ``## <title>``, up to the next second-level heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def test_readme_results_table_matches_the_committed_summary():
    """The README's table quotes the committed results/synthetic/summary.json (mean and std over seeds)."""
    summary = json.loads((ROOT / "results" / "synthetic" / "summary.json").read_text())
    num = r"([\d.]+) ± ([\d.]+)"
    rows = re.findall(rf"^\| (\w+) \| {num} \| {num} \| {num} \|$",
                      _section("Results on the default (synthetic) profile"), re.M)
    assert {r[0] for r in rows} == set(summary), "README's results table must list every method of summary.json"
    for m, *vals in rows:
        s = summary[m]
        want = [s["id_accuracy"], s["id_accuracy_std"], s["energy_fpr95"], s["energy_fpr95_std"], s["energy_auroc"],
                s["energy_auroc_std"]]
        assert [float(v) for v in vals] == want, m


def test_readme_findings_are_the_committed_findings():
    """Every method comparison the README states is the committed verdict of results/synthetic/findings.csv."""
    import pandas as pd

    found = pd.read_csv(ROOT / "results" / "synthetic" / "findings.csv")
    avg = found[found.ood_set == "average"].set_index(["a", "b"])
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- findings:synthetic -->"):text.index("<!-- /findings -->")]
    rows = re.findall(r"^\| (\w+) vs (\w+) \| (-?[\d.]+) \| ([\d.]+) \| ([a-z ]+) \|$", block, re.M)
    assert {(a, b) for a, b, *_ in rows} == set(avg.index), "the README must state every claim of findings.csv"
    for a, b, diff, spread, verdict in rows:
        r = avg.loc[(a, b)]
        assert (float(diff), float(spread), verdict) == (round(r["diff"], 2), round(r.std_a + r.std_b, 2),
                                                         r.verdict), (a, b)


def test_readme_prose_on_the_synthetic_results_holds():
    """The sentences under "What survives the seed" in the README, against the committed results (computed here from
    the per-seed CSVs where a screen is paired, not read from the screen's own output)."""
    import pandas as pd

    res = ROOT / "results" / "synthetic"
    found = pd.read_csv(res / "findings.csv").set_index(["a", "b", "ood_set"])
    verdict = lambda a, b, o="average": found.loc[(a, b, o), "verdict"]
    for m in ("bfm", "oe", "energy_oe"):  # "BFM, OE and Energy-OE each lower CE's FPR95 beyond the spread"
        assert verdict(m, "ce") == "lower", m
    runs = {m: pd.read_csv(res / "runs" / f"{m}.csv").query("scorer == 'energy'").set_index(["ood_set", "seed"])
            for m in ("greg", "energy_oe", "greg_plus", "energy_oe_sampling", "oe_grad", "oe")}

    def per_seed(a, b, ood_set):
        d = runs[a].loc[ood_set, "fpr95"] - runs[b].loc[ood_set, "fpr95"]
        assert len(d) == 3
        return d

    for o in ("backgrounds", "novel-objects", "textures", "noise", "average"):  # "GReg lowers ... in every seed"
        d = per_seed("greg", "energy_oe", o)
        assert (d < 0).all() and -d.mean() > d.std(ddof=1), o
    d = per_seed("greg", "energy_oe", "average")
    assert (round(d.mean(), 2), round(d.std(ddof=1), 2)) == (-12.06, 6.72)
    assert verdict("greg", "energy_oe") == "no clear difference"  # "Unpaired, the seed spread ... hides it"
    for a, b in [("greg_plus", "greg"), ("energy_oe_sampling", "energy_oe"), ("oe_grad", "oe")]:  # "paired or not"
        d = per_seed(a, b, "average")
        assert verdict(a, b) == "no clear difference" and not ((d < 0).all() or (d > 0).all()), (a, b)
    assert verdict("bfm_greg", "greg") == "no clear difference"
    post = pd.read_csv(res / "findings_posthoc.csv").query("ood_set == 'average'")
    under = post[post.comparison.str.contains(" under ")].set_index("scorer_a")
    metrics = pd.read_csv(res / "metrics.csv").query("ood_set == 'average' and seed == 'mean'")
    assert len(under) == metrics.scorer.nunique() == 20
    assert (under.verdict == "lower").sum() == 13
    assert set(under.index[under.verdict == "no clear difference"]) == {"msp", "knn", "vim", "fdbd", "rmd", "neco"}
    assert list(under.index[under.verdict == "higher"]) == ["mahalanobis"]
    maha = under.loc["mahalanobis"]
    assert [maha.mean_a, maha.std_a, maha.mean_b, maha.std_b] == [39.47, 12.78, 21.10, 3.39]
    fpr = metrics.pivot_table(index="method", columns="scorer", values="fpr95")
    assert fpr.loc["bfm"].idxmin() == "knn" and fpr.loc["ce"].idxmin() == "vim"
    best = post[post.comparison.str.startswith("bfm (knn) vs ce (vim)")].iloc[0]
    assert ([best.mean_a, best.std_a, best.mean_b, best.std_b] == [14.92, 2.50, 15.58, 0.80]
            and best.verdict == "no clear difference")
    acc = (pd.read_csv(res / "accuracy.csv", dtype={"seed": str}).query("seed == 'mean'")
           .set_index("method")["id_accuracy"])
    finetuned = ["oe", "energy_oe", "greg", "greg_plus", "oe_grad", "energy_oe_sampling", "bfm_greg"]
    gaps = (acc["ce"] - acc[finetuned]).round(1)
    assert (gaps.min(), gaps.max()) == (4.6, 12.0), gaps.to_dict()
    assert abs(acc["ce"] - acc["bfm"]) <= 1


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_and_docs_links_point_to_existing_files_and_headings():
    """Every relative link of README.md and docs/*.md names a file of the repository, and its #anchor, if any, a
    heading of the Markdown page it names (the README's sections moved to docs/: no link may dangle)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1, "docs/ must hold the pages the README links to"
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.relative_to(ROOT)}: link {target!r} names no file"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", dest.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.relative_to(ROOT)}: no heading for {target!r}"
            checked += 1
    assert checked > 0


_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty".split())}


def test_counts_of_scorers_and_methods_in_prose_are_the_registries():
    """'N (post-hoc) scores/scorers' and 'N (training) methods' in the README, docs/, ARCHITECTURE.md,
    benchmarks/README.md, profiles/README.md and the notebooks (N >= 6: smaller counts are parts, such as 'two
    methods') must be the registries' counts (ood.scorers.SCORERS, ood.methods.METHODS, counted here), unless the
    text around it dates it (a YYYY-MM-DD: a measurement of its day) or says it is a part ('14 of the 20')."""
    import re

    from ood.methods import METHODS
    from ood.scorers import SCORERS

    want = {"score": len(SCORERS), "method": len(METHODS)}
    pages = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "benchmarks/README.md", ROOT / "profiles/README.md",
             *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    pattern = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r"|\d+) (?:post-hoc |training )?(score|method)(?:r)?s\b",
                         re.I)
    wrong = []
    for page in pages:
        text = page.read_text()
        for m in pattern.finditer(text):
            word, kind = m.group(1).lower(), m.group(2).lower()
            n = int(word) if word.isdigit() else _NUMBER_WORDS[word]
            if n < 6 or n == want[kind]:
                continue
            around = text[max(0, m.start() - 300):m.end() + 300]
            total = want[kind]
            words = [str(total)] + [w for w, i in _NUMBER_WORDS.items() if i == total]
            if re.search(r"\b20\d\d-\d\d-\d\d\b", around) or any(f"of the {w}" in around or f"of {w} " in around
                                                                for w in words):
                continue
            wrong.append(f"{page.relative_to(ROOT)}: {m.group(0)!r} (registered: {total})")
    assert not wrong, wrong
