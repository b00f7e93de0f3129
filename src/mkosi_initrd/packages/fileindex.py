"""rpm's file lookup for a database that lacks its file index, built from the package headers.

A Berkeley DB rpmdb copied without its index files (`Packages` alone: container images, copied or
extracted databases) still has every header, but rpm's `instfilenames` lookup finds nothing. This
does what that lookup does (rpmdbFindByFile in rpm's lib/rpmdb.c): candidates by base name, then
their directory compared with the asked one once both are resolved inside the root (rpm compares
fingerprints of the directories, so `/bin/sh` finds `/usr/bin/sh` under `/bin -> usr/bin`), and
only files whose state is installed (normal or netshared: not replaced, not left out as an
excluded language or doc, not of another colour).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from mkosi_initrd.rootfs import CanonicalPaths

_INSTALLED = (0, 3)  # RPMFILE_STATE_NORMAL, RPMFILE_STATE_NETSHARED

# One header's file list as rpm stores it: (package key, DIRNAMES, DIRINDEXES, BASENAMES, FILESTATES).
HeaderFiles = tuple[str, Sequence[str], Sequence[int], Sequence[str], Sequence[int] | None]


class FileIndex:
    def __init__(self, root: Path, headers: Iterable[HeaderFiles]) -> None:
        self._canon = CanonicalPaths(root)
        self._by_base: dict[str, list[tuple[str, str]]] = {}
        for key, dirnames, dirindexes, basenames, states in headers:
            for i, base in enumerate(basenames or ()):
                if states is None or states[i] in _INSTALLED:
                    self._by_base.setdefault(base, []).append((key, dirnames[dirindexes[i]]))

    def _dir(self, dirname: str) -> str:
        return self._canon(dirname.rstrip("/") + "/")  # "/bin/" → "/usr/bin/" in a usrmerged root

    def owners(self, path: str) -> list[str]:
        """Keys of the packages that own `path`, in database order."""
        parent, _, base = path.rpartition("/")
        want = self._dir(parent)
        return [key for key, d in self._by_base.get(base, ()) if self._dir(d) == want]
