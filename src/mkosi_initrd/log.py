"""Logging to stderr: warnings are always shown, progress only when verbose."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("mkosi-initrd")


def setup(verbose: bool = False, debug: bool = False) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mkosi-initrd: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
