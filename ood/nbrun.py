"""``papermill`` with a faster start and stop: what every ``dvc.yaml`` stage runs.

``python -m ood.nbrun IN.ipynb OUT.ipynb -p name value ...`` takes exactly the arguments of the
``papermill`` command and executes the notebook the same way (same kernel, same parameter injection, same
output notebook). It removes two fixed costs that papermill pays on every stage (how long each takes, and how to
measure it: benchmarks/README.md, "Timings behind the code's choices"):

* **Start.** ``papermill`` imports ``nbformat``, which imports ``jsonschema``, whose format
  checkers import ``rfc3987_syntax`` when it is installed (JupyterLab's ``jsonschema[format-nongpl]`` installs
  it), and that module compiles 39 Lark grammars at import time (python-jsonschema/jsonschema#1392). Notebook
  validation never checks the ``iri`` format it serves, so it is hidden from the import: ``jsonschema`` then skips
  that one checker, as it does when the package is absent.
* **Stop.** papermill shuts the kernel down gracefully, which waits for the kernel process to
  finish tearing down PyTorch. By then every cell has finished and its outputs are in the notebook, so the
  kernel is stopped at once instead (nbclient's ``shutdown_kernel="immediate"``).

Everything else is papermill's own command line (``python -m ood.nbrun --help``), with one addition: once the
notebook has run, its output copy is made **deterministic** (:func:`clean`), so that a stage that moves no number
writes the same bytes and ``dvc.lock`` repeats: papermill's and Jupyter's timing metadata, the Python patch version
and every stderr stream (progress bars, warnings) are removed, and papermill's injected-parameters cell gets a fixed
id instead of a random one. What the notebook printed to stdout and displayed stays.
"""
from __future__ import annotations

import sys

__all__ = ["main", "clean", "INJECTED_ID"]

#: The cell id of papermill's injected-parameters cell in a cleaned notebook (papermill draws a random one).
INJECTED_ID = "injected-parameters"


def clean(nb):
    """``nb`` (an nbformat notebook) without what varies between two runs of the same code on the same inputs:
    timing metadata (papermill's, Jupyter's), the Python patch version and stderr streams; the injected-parameters
    cell keeps its place and its source, under the id :data:`INJECTED_ID`."""
    nb.metadata.pop("papermill", None)
    nb.metadata.get("language_info", {}).pop("version", None)
    for c in nb.cells:
        c.metadata.pop("papermill", None)
        c.metadata.pop("execution", None)
        if "injected-parameters" in c.metadata.get("tags", []):
            c["id"] = INJECTED_ID
        if c.cell_type == "code":
            c.outputs = [o for o in c.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb


def clean_file(path) -> None:
    """:func:`clean` a notebook file in place (a temporary file, then renamed)."""
    import os

    import nbformat

    nb = clean(nbformat.read(path, as_version=4))
    tmp = f"{path}.tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, path)


def _fast_engine():
    from papermill.engines import NBClientEngine

    class FastStopEngine(NBClientEngine):
        """nbclient engine that stops the kernel without the graceful wait once the notebook has run."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            kwargs.setdefault("shutdown_kernel", "immediate")
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return FastStopEngine


def main(argv: list[str] | None = None) -> None:
    # Must run before anything imports jsonschema (see the module docstring); None makes the import fail.
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)
    from papermill.cli import papermill as cli
    from papermill.engines import papermill_engines

    engine = _fast_engine()
    papermill_engines.register(None, engine)       # the engine papermill uses when --engine is not given
    papermill_engines.register("nbclient", engine)
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="python -m ood.nbrun")
    except SystemExit as e:
        notebooks = [a for a in args[:2] if a.endswith(".ipynb")]
        if e.code in (0, None) and len(notebooks) == 2:   # ran to the end: make the output copy deterministic
            clean_file(notebooks[1])
        raise


if __name__ == "__main__":
    main()
