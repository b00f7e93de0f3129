"""The top level of a front end (the command line, the kernel-install plugin): how a run ends.

- a user error (InitrdError, an OSError): its message and hint, exit 1;
- SIGTERM/SIGINT/SIGHUP: cleanup runs (interrupt.py, scratch.py), exit 128 + the signal;
- anything else is a bug: one line naming the kernel and saying so, the traceback only with
  --debug (the plugin: MKOSI_INITRD_DEBUG=1), exit 1. Outputs are replaced atomically at the very end of a
  build, so a failure before that leaves them as they were.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from mkosi_initrd import scratch
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.interrupt import Interrupted, signals_raise

EXIT_ERROR = 1
EXIT_SIGNAL_BASE = 128


def _one_line(text: str) -> str:
    return " ".join(text.split())


def bug_line(subject: str, e: BaseException, debug: bool, how: str = "--debug") -> str:
    more = "" if debug else f"; {how} shows the traceback"
    return (
        f"mkosi-initrd: error: {subject} failed: {type(e).__name__}: {_one_line(str(e))} "
        f"(this is a bug in mkosi-initrd, please report it{more})"
    )


def run(body: Callable[[], int], subject: Callable[[], str], *, debug: bool, how: str = "--debug") -> int:
    """`body()`'s exit status, with every way out of it turned into one (see the module docstring).
    `subject()` names what was being done ("building the initrd for kernel KVER") for a bug; `how`
    is how to ask for the traceback."""
    outer = scratch.own()  # a caller's own scratch (a front end run in-process) outlives this run
    try:
        with signals_raise(reraise=False):
            return body()
    except InitrdError as e:
        print(f"mkosi-initrd: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Interrupted as e:
        print(f"mkosi-initrd: interrupted by {e.name}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + e.signum
    except KeyboardInterrupt:  # before the handlers were installed, or in another thread
        print("mkosi-initrd: interrupted", file=sys.stderr)
        return EXIT_SIGNAL_BASE + 2
    except OSError as e:  # the file system said no (and no step turned it into an InitrdError)
        if debug:
            traceback.print_exc()
        print(f"mkosi-initrd: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(bug_line(_safe(subject), e, debug, how), file=sys.stderr)
        return EXIT_ERROR
    finally:
        scratch.remove_own(keep=outer)


def _safe(subject: Callable[[], str]) -> str:
    try:
        return subject()
    except Exception:
        return "mkosi-initrd"
