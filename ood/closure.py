"""The code each DVC stage runs: its notebook's module closure, written into ``dvc.yaml``.

A stage runs ``python -m ood.nbrun notebooks/<nb>.ipynb ...``: the runner (``ood/nbrun.py``), the package's
``__init__`` and every ``ood`` module the notebook's code cells import, directly or through other modules (the
*closure*). Every ``import`` statement of a module counts, including those inside functions, since a stage may call
them; only imports under ``if TYPE_CHECKING:`` do not (they never run). A package's ``__init__`` counts for each of
its modules, and so does a data file a module names by a string constant (``ood/reference.csv``, the ImageNet
subsets). A stage's ``deps`` are then exactly: its notebook, those files, and the data it reads.

``python -m ood.closure`` prints each notebook's closure and whether ``dvc.yaml`` agrees; ``--write`` rewrites the
``ood/`` lines that follow each notebook in a stage's ``deps`` (in ``dvc.yaml`` and in the copies of it under
``pipelines/*/``); ``--check`` exits 1 when any disagrees. ``tests/test_stage_deps.py`` runs the check.
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import sys
from pathlib import Path

__all__ = ["package_modules", "module_imports", "closure", "notebook_imports", "notebook_closure", "stage_deps",
           "dvc_files", "check", "write"]

PACKAGE = "ood"
RUNNER = "ood.nbrun"


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


def package_modules(root: Path | None = None) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (``ood.data`` -> ``ood/data/__init__.py``)."""
    root = root or _root()
    mods = {}
    for f in sorted((root / PACKAGE).rglob("*.py")):
        parts = f.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(names: set[str], mods: dict[str, Path]) -> set[str]:
    """The package modules ``names`` load: each name's longest existing prefix, and every package above it."""
    out = set()
    for n in names:
        while n and n not in mods:
            n = n.rpartition(".")[0]
        if not n:
            continue
        parts = n.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


@functools.lru_cache(maxsize=512)
def _import_statements(source: str) -> tuple[tuple[int | None, str, tuple[str, ...]], ...]:
    """The import statements of ``source`` outside ``if TYPE_CHECKING:``: (None, "", names) for ``import names``,
    (level, module, names) for ``from module import names``. Cached by source text: a check parses each module once
    however many stages reach it, and an edited file is a new key."""
    out = []
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.append((None, "", tuple(a.name for a in node.names)))
        else:
            out.append((node.level, node.module or "", tuple(a.name for a in node.names)))
    return tuple(out)


def _imports_of_source(source: str, package: str, mods: dict[str, Path]) -> set[str]:
    """The package modules a piece of code imports (``package``: the package relative imports start from)."""
    names = set()
    for level, module, imported in _import_statements(source):
        if level is None:
            names.update(n for n in imported if n.split(".")[0] == PACKAGE)
            continue
        if level:
            base = package.split(".")[: len(package.split(".")) - level + 1]
            mod = ".".join(base + ([module] if module else []))
        else:
            mod = module
        if mod.split(".")[0] != PACKAGE:
            continue
        names.add(mod)
        names.update(f"{mod}.{n}" for n in imported)   # `from ood import plots` loads ood.plots
    return _resolve(names, mods)


def module_imports(name: str, mods: dict[str, Path] | None = None) -> set[str]:
    """The package modules that module ``name`` imports itself (not through others)."""
    mods = mods or package_modules()
    f = mods[name]
    package = name if f.name == "__init__.py" else name.rpartition(".")[0]
    return _imports_of_source(f.read_text(), package, mods) - {name}


def closure(start: set[str], mods: dict[str, Path] | None = None) -> set[str]:
    """``start`` and every package module it imports, directly or through other modules."""
    mods = mods or package_modules()
    seen, todo = set(), list(_resolve(set(start), mods))
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(module_imports(m, mods) - seen)
    return seen


def notebook_imports(path: Path, mods: dict[str, Path] | None = None) -> set[str]:
    """The package modules the code cells of a notebook import (IPython magics and shell lines are skipped)."""
    mods = mods or package_modules()
    cells = json.loads(Path(path).read_text())["cells"]
    code = "\n".join("\n".join(ln for ln in "".join(c["source"]).splitlines() if not ln.lstrip().startswith(("%", "!")))
                     for c in cells if c["cell_type"] == "code")
    return _imports_of_source(code, PACKAGE, mods)


def _data_files(name: str, mods: dict[str, Path]) -> set[Path]:
    """Package data files a module names by a string constant (a file beside it that is not Python)."""
    f = mods[name]
    beside = {p.name: p for p in f.parent.iterdir() if p.is_file() and p.suffix != ".py"}
    return {beside[c] for c in _string_constants(f.read_text()) if c in beside}


@functools.lru_cache(maxsize=512)
def _string_constants(source: str) -> frozenset[str]:
    """Every string constant of ``source`` (cached by source text, as :func:`_import_statements`)."""
    return frozenset(n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)
                     and isinstance(n.value, str))


def notebook_closure(path: Path, root: Path | None = None) -> list[str]:
    """The files (relative to the repository root, sorted) of the code a stage running notebook ``path`` runs."""
    root = root or _root()
    mods = package_modules(root)
    names = closure(notebook_imports(path, mods) | {RUNNER}, mods)
    files = {mods[m] for m in names} | {p for m in names for p in _data_files(m, mods)}
    return sorted(p.relative_to(root).as_posix() for p in files)


_NOTEBOOK_DEP = re.compile(r"^(\s*)- (notebooks/[^\s/]+\.ipynb)\s*$")
_CODE_DEP = re.compile(r"^\s*- ood(/\S*)?\s*$")


def stage_deps(dvc_yaml: Path) -> dict[str, tuple[str, list[str]]]:
    """Per stage of a ``dvc.yaml`` (``foreach`` stages by their stage name): (its notebook, the ``ood`` deps it
    lists)."""
    import yaml

    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    out = {}
    for name, st in stages.items():
        body = st.get("do", st)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        nbs = [d for d in deps if d.startswith("notebooks/") and d.endswith(".ipynb")]
        if len(nbs) != 1:
            raise ValueError(f"{dvc_yaml}: stage {name!r} must depend on exactly one notebook, found {nbs}")
        out[name] = (nbs[0], sorted(d for d in deps if d == PACKAGE or d.startswith(PACKAGE + "/")))
    return out


def dvc_files(root: Path | None = None) -> list[Path]:
    """``dvc.yaml`` and its copies in ``pipelines/*/``."""
    root = root or _root()
    return [root / "dvc.yaml", *sorted((root / "pipelines").glob("*/dvc.yaml"))]


def check(root: Path | None = None) -> list[str]:
    """One line per stage whose ``ood`` deps differ from its notebook's closure (empty: all agree)."""
    root = root or _root()
    problems = []
    for f in dvc_files(root):
        for name, (nb, listed) in stage_deps(f).items():
            want = notebook_closure(root / nb, root)
            if listed != want:
                missing, extra = sorted(set(want) - set(listed)), sorted(set(listed) - set(want))
                problems.append(f"{f.relative_to(root)}: stage {name!r} ({nb}): missing {missing or '-'}, "
                                f"not imported {extra or '-'}; run `python -m ood.closure --write`")
    return problems


def write(root: Path | None = None) -> list[Path]:
    """Rewrite the ``ood`` lines after each notebook dep of every ``dvc.yaml`` with its closure; the files changed."""
    root = root or _root()
    changed = []
    for f in dvc_files(root):
        lines, out, i = f.read_text().splitlines(keepends=True), [], 0
        while i < len(lines):
            out.append(lines[i])
            m = _NOTEBOOK_DEP.match(lines[i])
            i += 1
            if m:
                while i < len(lines) and _CODE_DEP.match(lines[i]):
                    i += 1
                out.extend(f"{m.group(1)}- {p}\n" for p in notebook_closure(root / m.group(2), root))
        text = "".join(out)
        if text != f.read_text():
            f.write_text(text)
            changed.append(f)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ood.closure", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the stages' ood deps in dvc.yaml and its copies")
    ap.add_argument("--check", action="store_true", help="exit 1 if a stage's ood deps differ from its closure")
    args = ap.parse_args(argv)
    root = _root()
    if args.write:
        for f in write(root):
            print(f"wrote {f.relative_to(root)}")
    problems = check(root)
    if not (args.write or args.check):
        for nb in sorted({nb for f in dvc_files(root) for nb, _ in stage_deps(f).values()}):
            print(f"{nb}: {' '.join(notebook_closure(root / nb, root))}")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
