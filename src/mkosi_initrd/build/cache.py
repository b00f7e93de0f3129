"""Cached rebuilds: when nothing that decides the output changed, copy the last result into place.

An entry is found by a key over the cheap-to-read inputs, computed before any planning: our code
and data files, the configuration values (files and command line), the output options (for a UKI:
kernel image, stub, command line, keys ..., files by signature), the package database's state,
the kernel's module index, os-release, the microcode blobs and, in host-only mode, the host probes
(loaded modules, device modaliases, the root's block stack, the CPU). The entry then names every
file the plan copied or read (packages' files, modules, firmware, extra files) with its stat
signature, plus the directories where wanted firmware was missing; any difference is a miss. So a
package updated behind the database's back, an edited conffile, a new firmware file or a changed
crypttab carried in all rebuild.

Layout: DIR/<key>/{meta.json, output[, microcode]}. meta.json holds each file's SHA-256, checked
while the file is copied to its destination (through atomic.atomic_write); a mismatch discards the
copy and the entry, and the initrd is rebuilt: a corrupt entry is never shipped. Entries are
written to a temp directory and renamed into place, so concurrent builders need no lock (the
last rename wins; a reader holds the directory open). The directory is bounded in size: least
recently used entries go first (a hit touches meta.json).

The hit path imports neither the package backends nor the planner.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mkosi_initrd.build.inputs import FORMAT, Inputs, input_key, plan_inputs, sig
from mkosi_initrd.build.options import BuildOptions
from mkosi_initrd.build.store import (
    META,
    TMP,
    CorruptEntry,
    Settings,
    copy_in,
    copy_verified,
    evict,
    publish,
    remove_dead_temps,
    remove_entry,
    settings,
)
from mkosi_initrd.config.model import Config
from mkosi_initrd.log import log
from mkosi_initrd.scratch import scratch_name

if TYPE_CHECKING:
    from mkosi_initrd.plan.model import Plan


@dataclass(frozen=True)
class Hit:
    output: Path
    microcode: Path | None
    size: int
    packages: int
    modules: int


class BuildCache:
    def __init__(self, config: Config, options: BuildOptions, where: Settings) -> None:
        self.config = config
        self.options = options
        self.where = where
        self.key = input_key(config, options)
        self.entry = where.directory / self.key
        self.inputs: Inputs | None = None

    @classmethod
    def open(cls, config: Config, options: BuildOptions, directory: Path | None = None) -> BuildCache | None:
        """None when caching does not apply (--no-cache, a UKI without resolved options) or the
        directory is unusable."""
        if not options.use_cache or options.format not in ("cpio", "uki"):
            return None
        if options.format == "uki" and options.uki is None:
            return None
        where = settings(directory)
        try:
            where.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            log.debug("cache %s unusable: %s", where.directory, e)
            return None
        if not os.access(where.directory, os.W_OK):
            return None
        remove_dead_temps(where.directory)  # a killed builder's, also when this build is a hit
        return cls(config, options, where)

    # -- lookup

    def lookup(self) -> Hit | None:
        """The cached result copied into place, or None (a miss, a stale, invalid or corrupt entry)."""
        try:
            dfd = os.open(self.entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            log.debug("cache miss: %s", self.key)
            return None
        try:
            return self._lookup(dfd)
        except Exception as e:  # never a traceback, never a permanent failure: build instead
            log.warning(
                "cache entry %s failed (%s: %s; this is a bug): rebuilding", self.entry, type(e).__name__, e
            )
            self._discard(dfd)
            return None
        finally:
            os.close(dfd)

    def _lookup(self, dfd: int) -> Hit | None:
        from mkosi_initrd.build import cachemeta

        # Everything about the entry is checked before anything is written.
        try:
            with open(os.open(META, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)) as f:
                meta = cachemeta.parse(json.load(f), version=FORMAT, key=self.key)
        except (OSError, ValueError, cachemeta.InvalidEntry) as e:
            log.warning("cache entry %s is invalid (%s): rebuilding", self.entry, e)
            self._discard(dfd)
            return None
        for path, old in meta.inputs:
            if sig(path) != old:
                log.info("cache: %s changed, rebuilding", path)
                self._discard(dfd)
                return None
        microcode = self.options.microcode_output if "microcode" in meta.files else None
        try:
            size = copy_verified(dfd, "output", meta.files["output"], self.options.output)
            if microcode is not None:
                copy_verified(dfd, "microcode", meta.files["microcode"], microcode)
        except (CorruptEntry, OSError) as e:
            log.warning("cache entry %s is corrupt (%s): rebuilding", self.entry, e)
            self._discard(dfd)
            return None
        try:
            os.utime(META, dir_fd=dfd)  # least recently used goes first
        except OSError:
            pass
        return Hit(Path(self.options.output), microcode, size, meta.packages, meta.modules)

    def _discard(self, dfd: int) -> None:
        """Remove the entry `dfd` refers to, unless another builder has replaced it meanwhile."""
        try:
            if os.stat(self.entry).st_ino == os.fstat(dfd).st_ino:
                remove_entry(self.entry, self.where.directory)
        except OSError:
            pass

    # -- store

    def record(self, plan: Plan) -> None:
        """Note the plan's inputs; called before they are read, so a change while building shows."""
        self.inputs = plan_inputs(self.config, plan)

    def store(self, output: Path, microcode: Path | None, packages: int, modules: int) -> None:
        """Keep a copy of a fresh build; failures only cost the next build its shortcut."""
        if self.inputs is None:
            raise ValueError("BuildCache.store() without record(plan)")
        try:
            self._store(self.inputs, output, microcode, packages, modules)
        except OSError as e:
            log.warning("cannot store the build in the cache %s: %s", self.where.directory, e)
        except Exception as e:  # the build itself succeeded: its output stands
            log.warning("cannot store the build in the cache (%s: %s; this is a bug)", type(e).__name__, e)

    def _store(
        self, inputs: Inputs, output: Path, microcode: Path | None, packages: int, modules: int
    ) -> None:
        top = self.where.directory
        tmp = top / scratch_name(TMP)
        tmp.mkdir(mode=0o700)
        try:
            files = {"output": copy_in(output, tmp / "output")}
            if microcode is not None:
                files["microcode"] = copy_in(microcode, tmp / "microcode")
            total = sum(size for _, size in files.values())
            if total > self.where.max_bytes:
                return
            meta = {
                "format": FORMAT,
                "key": self.key,
                "created": int(time.time()),
                "files": {name: {"sha256": digest, "size": size} for name, (digest, size) in files.items()},
                "result": {"packages": packages, "modules": modules},
                "inputs": inputs,
            }
            (tmp / META).write_text(json.dumps(meta))
            publish(tmp, self.entry, top)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        evict(top, self.where.max_bytes, keep=self.entry.name)
