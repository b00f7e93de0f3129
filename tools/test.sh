#!/bin/bash
# Set up (tools/setup.sh) and run the whole test suite: lint, types, unit, kernel-install and QEMU boot tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -ra "$@"
