"""``papermill`` with a faster start and stop: what every ``dvc.yaml`` stage runs.

``python -m ood.nbrun IN.ipynb OUT.ipynb -p name value ...`` takes exactly the arguments of the
``papermill`` command and executes the notebook the same way (same kernel, same parameter injection, same
output notebook). It removes two fixed costs that papermill pays on every stage, measured on a 2-core CPU
(``python -m cProfile`` of ``papermill notebooks/04_tables.ipynb``):

* **Start, about 1.8 s.** ``papermill`` imports ``nbformat``, which imports ``jsonschema``, whose format
  checkers import ``rfc3987_syntax`` when it is installed (JupyterLab's ``jsonschema[format-nongpl]`` installs
  it), and that module compiles 39 Lark grammars at import time (python-jsonschema/jsonschema#1392). Notebook
  validation never checks the ``iri`` format it serves, so it is hidden from the import: ``jsonschema`` then skips
  that one checker, as it does when the package is absent.
* **Stop, about 2.5 s.** papermill shuts the kernel down gracefully, which waits for the kernel process to
  finish tearing down PyTorch. By then every cell has finished and its outputs are in the notebook, so the
  kernel is stopped at once instead (nbclient's ``shutdown_kernel="immediate"``).

Everything else is papermill's own command line (``python -m ood.nbrun --help``).
"""
from __future__ import annotations

import sys

__all__ = ["main"]


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
    cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="python -m ood.nbrun")


if __name__ == "__main__":
    main()
