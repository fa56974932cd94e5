"""The layout ARCHITECTURE.md draws: no module reaches into another's private names, and at import time a module of
``ood`` imports only modules listed above it there."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_MODULES = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}


def _sources():
    return sorted((ROOT / "ood").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def _is_project(module: str | None) -> bool:
    return bool(module) and (module == "ood" or module.startswith("ood.") or module in BENCHMARK_MODULES)


def private_uses(path: Path) -> list[str]:
    """``from <project module> import _x`` and ``<project module alias>._x`` in one file."""
    tree = ast.parse(path.read_text())
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _is_project(node.module):
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"from {node.module} import {a.name}")
                aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if _is_project(a.name)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def top_level_ood_imports(path: Path) -> set[str]:
    """The ``ood`` modules a file imports when it is imported (module-level statements, not inside a function or an
    ``if TYPE_CHECKING`` block), as names relative to ``ood`` (``data.arrays``, ``config``)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in tree.body:
        if (isinstance(node, ast.ImportFrom) and node.module
                and (node.module == "ood" or node.module.startswith("ood."))):
            if node.module == "ood":
                out |= {a.name for a in node.names}
            else:
                sub = node.module[4:]
                # `from ood.data import arrays`: the submodule (a package's own files load before its __init__ ends)
                subs = {a.name for a in node.names if (ROOT / "ood" / sub.replace(".", "/") / f"{a.name}.py").is_file()}
                out |= {f"{sub}.{n}" for n in subs}
                if len(subs) < len(node.names):
                    out.add(sub)
        elif isinstance(node, ast.Import):
            out |= {a.name[4:] for a in node.names if a.name.startswith("ood.")}
    return out


def architecture_order() -> list[str]:
    """The modules of the layout block of ARCHITECTURE.md, top to bottom (``ood/data/`` then its files)."""
    block = (ROOT / "ARCHITECTURE.md").read_text().split("```")[1]
    order, package = [], None
    for line in block.splitlines():
        m = re.match(r"ood/([\w/]+?)(\.py)?(,| |$)", line)
        if m:
            name = m.group(1).rstrip("/").replace("/", ".")
            package = name if not m.group(2) else None
            order.append(name)
            for extra in re.findall(r",\s*(\w+)\.py", line):   # "ood/nbrun.py, publish.py"
                order.append(extra)
            continue
        m = re.match(r"\s+(\w+)\.py", line)
        if m and package:
            order.insert(order.index(package), f"{package}.{m.group(1)}")   # a package's files come before it
    return order


def test_no_module_imports_another_modules_private_names():
    found = {str(p.relative_to(ROOT)): private_uses(p) for p in _sources()}
    assert {k: v for k, v in found.items() if v} == {}


def test_private_use_is_detected():
    """The check above can fail: a file that reaches into a private name is reported."""
    probe = ROOT / "tests" / "_probe_private.py"
    try:
        probe.write_text("from ood.train import _epoch_generator\nfrom ood import numerics\nnumerics._hidden\n")
        assert private_uses(probe) == ["from ood.train import _epoch_generator", "numerics._hidden"]
    finally:
        probe.unlink()


def test_every_module_imports_only_modules_above_it_in_architecture_md():
    order = architecture_order()
    modules = {_module_name(p)[4:] or "ood": p for p in sorted((ROOT / "ood").rglob("*.py"))}
    missing = sorted(set(modules) - set(order) - {"ood", "__init__"})
    assert missing == [], f"modules ARCHITECTURE.md does not draw: {missing}"
    later = {}
    for name, path in modules.items():
        if name not in order:
            continue
        bad = [d for d in top_level_ood_imports(path) if d in order and order.index(d) >= order.index(name)]
        if bad:
            later[name] = bad
    assert later == {}
