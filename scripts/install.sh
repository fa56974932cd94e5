#!/usr/bin/env bash
# Install the project into .venv (created with python3 -m venv when absent); safe to rerun on an existing .venv.
#   bash scripts/install.sh          the package and what the pipeline needs
#   bash scripts/install.sh --test   the same plus the test tools (pytest, nbval)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=.
case "${1:-}" in
  "") ;;
  --test) extras='.[test]' ;;
  *) echo "usage: bash scripts/install.sh [--test]" >&2; exit 2 ;;
esac

[ -d .venv ] || python3 -m venv .venv
.venv/bin/pip install -q --no-compile -e "$extras"
# pip byte-compiles on one core (about 2 min on a 2-core CPU); --no-compile and then compileall -j 0 do the same work
# on every core. -x /py312_ skips the one file of torch's test helpers written for Python 3.12 (pip, too, leaves it
# uncompiled).
.venv/bin/python -m compileall -q -j 0 -x /py312_ .venv/lib
