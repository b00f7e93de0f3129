"""SIGTERM, SIGINT and SIGHUP as an exception, so that cleanup runs before the process exits.

While `signals_raise()` is active, the first of these signals raises `Interrupted` in the main
thread: every `finally` and context manager on the way out runs (scratch directories are removed,
an unfinished output vanishes, a depmod child is killed). Later signals are held off until the
context ends, so a second Ctrl-C cannot cut that cleanup short. Contexts nest: only the outermost
one installs the handlers. SIGKILL cannot be caught; scratch.py's stale check covers it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_active = False


class Interrupted(BaseException):
    """Raised from a signal handler so that cleanup runs before the process dies."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


@contextlib.contextmanager
def signals_raise(*, reraise: bool = True) -> Iterator[None]:
    """Turn SIGTERM/SIGINT/SIGHUP into `Interrupted` (main thread only; a no-op when nested).

    `reraise`: once the exception has left this context, deliver the signal again with the old
    handler, so the process ends as the sender meant (a library caller); a front end that turns
    it into an exit status passes False."""
    global _active
    if _active or threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if raised:
            return  # the first signal's cleanup is running
        raised.append(signum)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    _active = True

    def restore() -> None:
        global _active
        for s, h in old.items():
            signal.signal(s, h)
        _active = False

    try:
        yield
    except Interrupted as e:
        restore()
        if reraise:
            signal.raise_signal(e.signum)
        raise
    finally:
        if _active:
            restore()
