"""The pre-flight check: would this image boot? Run on the plan before anything is written.

It reads the plan only (entries, the index files generated into it, and what planner/needs.py read of each
file while planning), so it costs a few milliseconds, and it holds the image to:

- /init resolves, inside the image, to systemd, a regular executable file;
- every ELF file's interpreter and DT_NEEDED libraries are in the image (its RUNPATH, then the
  default library directories; a soname that another object of the image has is found by name);
- every program a udev rule, a unit's Exec*= line or the generator directories run is in the image
  and executable, and so is its interpreter if it is a script;
- the image's module index (modules.dep) lists every module file of the image and nothing else,
  and modprobe's binary indexes are there;
- every module the plan selected from the kernel's index is in the image;
- the modules the root needs (host-only: its file systems and block stack; generic: the default
  list's storage and file-system modules) are in the image or built into the kernel;
- with sysext support, what merging extensions needs (build/sysextcheck.py).

A failure is an InitrdError listing what is missing; `--no-check` skips it (and says so).
"""

from __future__ import annotations

import fnmatch
import posixpath
import stat
from collections.abc import Iterable, Mapping

from mkosi_initrd.build.sysextcheck import sysext_problems
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.kernel.index import module_name
from mkosi_initrd.kernel.modinfo import MODULE_SUFFIXES
from mkosi_initrd.plan.model import Entry, FileNeeds, Plan
from mkosi_initrd.planner.dlopen import LIBDIRS
from mkosi_initrd.planner.needs import scan

SYSTEMD = "/usr/lib/systemd/systemd"
# systemd's search path for an Exec*= program named without a directory (systemd.service(5)).
EXEC_SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
GENERATOR_DIRS = (
    "/etc/systemd/system-generators",
    "/run/systemd/system-generators",
    "/usr/local/lib/systemd/system-generators",
    "/usr/lib/systemd/system-generators",
)
MODULES_DIR = "/usr/lib/modules"
# modprobe and udev read the binary indexes, not the text ones.
BINARY_INDEXES = ("modules.dep.bin", "modules.alias.bin")
_MAX_LINKS = 40
_SHOWN = 12


class InPlan:
    """Paths inside the image: symlinks followed as the booted initrd would, intermediate ones too
    (/sbin → usr/sbin), never outside the plan. Results are memoized (the check asks often)."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.paths: dict[str, Entry] = {e.path: e for e in entries}
        # Parents the plan does not list are directories all the same (the cpio writer adds them).
        self.dirs = {posixpath.dirname(p) for p in self.paths}
        for d in list(self.dirs):
            while d not in ("/", "") and (d := posixpath.dirname(d)) not in self.dirs:
                self.dirs.add(d)
        self._memo: dict[str, str | None] = {}

    def resolve(self, path: str) -> str | None:
        """The canonical path of `path` if it exists in the image, else None."""
        found = self._memo.get(path, "")
        if found == "":
            found = self._memo[path] = self._resolve(posixpath.normpath("/" + path), 0)
        return found

    def entry(self, path: str) -> Entry | None:
        """The entry `path` leads to (None for a missing path, or a directory the plan implies)."""
        canonical = self.resolve(path)
        return self.paths.get(canonical) if canonical is not None else None

    def _resolve(self, path: str, depth: int) -> str | None:
        parts = path.strip("/").split("/")
        for i in range(len(parts)):
            here = "/" + "/".join(parts[: i + 1])
            e = self.paths.get(here)
            if e is None and here in self.dirs:
                continue
            if e is None or depth > _MAX_LINKS:
                return None
            if e.is_symlink:
                target = e.linkto if e.linkto.startswith("/") else f"{posixpath.dirname(here)}/{e.linkto}"
                rest = "/".join(parts[i + 1 :])
                return self._resolve(posixpath.normpath(f"{target}/{rest}" if rest else target), depth + 1)
        return "/" + "/".join(parts)


def _executable(e: Entry | None) -> bool:
    return e is not None and stat.S_ISREG(e.mode) and bool(e.mode & 0o111)


# --- /init


def init_problems(image: InPlan) -> list[str]:
    target = image.resolve("/init")
    if target is None:
        return ["/init is missing, or a symlink that leads nowhere in the image: the kernel runs it"]
    if target != SYSTEMD:
        return [f"/init leads to {target}, not to systemd ({SYSTEMD})"]
    if not _executable(image.paths.get(target)):
        return [f"/init leads to {SYSTEMD}, which is not an executable file"]
    return []


# --- libraries


def _dirs(needs: FileNeeds, path: str) -> list[str]:
    origin = posixpath.dirname(path)
    return [*(d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in needs.runpath), *LIBDIRS]


def missing_libraries(needs: Mapping[str, FileNeeds], image: InPlan) -> list[str]:
    """One line per library (or ELF interpreter) that files of the image need and that is not in
    it, naming those files (systemd first: without it nothing starts).

    A soname that another object of the image already carries is found by name, as the loader does
    once some object of the process loaded it (libsystemd-core needs libsystemd-shared, which
    systemd's RUNPATH brings in)."""
    sonames = {posixpath.basename(p) for p in image.paths}
    missing: dict[str, list[str]] = {}
    for path, n in needs.items():
        if not n.elf:
            continue
        if n.interpreter and image.resolve(n.interpreter) is None:
            missing.setdefault(f"the ELF interpreter {n.interpreter}", []).append(path)
        for soname in n.needed:
            if soname in sonames:
                continue
            if not any(image.resolve(f"{d}/{soname}") for d in _dirs(n, path)):
                missing.setdefault(soname, []).append(path)
    return [_needed_by(what, users) for what, users in sorted(missing.items())]


def _needed_by(what: str, users: list[str]) -> str:
    users = sorted(users, key=lambda p: (p != SYSTEMD, p))
    more = f" and {len(users) - 3} more" if len(users) > 3 else ""
    return f"{what} is not in the image; needed by {', '.join(users[:3])}{more}"


# --- programs that something runs


def _program(image: InPlan, program: str) -> str | None:
    """The image path of a program as an Exec*= line names it (absolute, or by the search path)."""
    if program.startswith("/"):
        return image.resolve(program)
    for d in EXEC_SEARCH_PATH:
        found = image.resolve(f"{d}/{program}")
        if found is not None:
            return found
    return None


def _can_run(n: FileNeeds, image: InPlan) -> bool:
    """A unit whose Condition*/Assert* paths are all in the image and whose negated ones (`!PATH`) are
    not (else systemd skips it)."""
    for c in n.conditions:
        negated = c.startswith("!")
        if _present(c.removeprefix("!"), image) == negated:
            return False
    return True


def _present(path: str, image: InPlan) -> bool:
    if any(ch in path for ch in "*?["):
        return any(fnmatch.fnmatchcase(p, path) for p in image.paths)
    return image.resolve(path) is not None or path in image.dirs


def run_programs(needs: Mapping[str, FileNeeds], image: InPlan) -> list[tuple[str, str]]:
    """(who runs it, program) for the udev rules, units and generators of the image."""
    out = [
        (path, program)
        for path, n in needs.items()
        if not n.elf and not n.interpreter and _can_run(n, image)
        for program in n.runs
    ]
    for d in GENERATOR_DIRS:
        prefix = d + "/"
        out += [
            ("systemd (generator)", p)
            for p, e in image.paths.items()
            if p.startswith(prefix) and "/" not in p[len(prefix) :] and not e.is_dir
        ]
    return out


def missing_programs(needs: Mapping[str, FileNeeds], image: InPlan) -> list[str]:
    out = []
    for who, program in run_programs(needs, image):
        found = _program(image, program)
        if found is None:
            out.append(f"{who} runs {program}, which is not in the image")
        elif not _executable(image.paths.get(found)):
            out.append(f"{who} runs {program}, which is not an executable file in the image")
        else:
            out += _interpreter_problems(found, needs, image)
    return sorted(set(out))


def _interpreter_problems(program: str, needs: Mapping[str, FileNeeds], image: InPlan) -> list[str]:
    n = needs.get(program)
    if n is None or n.elf or not n.interpreter:
        return []
    if image.resolve(n.interpreter) is None:
        return [f"{program} is a script for {n.interpreter}, which is not in the image"]
    return [f"{program} runs {name} (#!{n.interpreter}), which is not in the image"
            for name in n.runs if _program(image, name) is None]  # fmt: skip


# --- kernel modules


def _index_lines(e: Entry | None) -> list[tuple[str, list[str]]] | None:
    if e is None or e.data is None:
        return None
    out = []
    for line in e.data.decode("utf-8", "replace").splitlines():
        rel, sep, rest = line.partition(":")
        if sep:
            out.append((rel.strip(), rest.split()))
        elif line.strip():
            out.append(("", [line.strip()]))  # not an index line
    return out


def module_files(plan: Plan, image: InPlan) -> set[str]:
    """The image's module files, relative to its kernel's module directory."""
    prefix = f"{MODULES_DIR}/{plan.kver}/"
    return {
        p[len(prefix) :]
        for p, e in image.paths.items()
        if p.startswith(prefix) and p.endswith(MODULE_SUFFIXES) and stat.S_ISREG(e.mode)
    }


def available_modules(plan: Plan, image: InPlan) -> set[str]:
    """Module names the booted image can use: its module files and the kernel's built-ins."""
    return {module_name(rel) for rel in module_files(plan, image)} | _builtin(plan, image)


def module_problems(plan: Plan, image: InPlan) -> list[str]:
    kdir = f"{MODULES_DIR}/{plan.kver}"
    files = module_files(plan, image)
    out = []
    if files or plan.modules:
        out += _index_problems(kdir, files, image)
    out += [
        f"module {m.name} ({m.reason}) was selected, but {kdir}/{m.path} is not in the image"
        for m in plan.modules
        if m.path not in files
    ]
    out += _required_problems(plan, {module_name(rel) for rel in files}, image)
    return out


def _index_problems(kdir: str, files: set[str], image: InPlan) -> list[str]:
    lines = _index_lines(image.paths.get(f"{kdir}/modules.dep"))
    if lines is None:
        return [f"the image has {len(files)} module files but no {kdir}/modules.dep"]
    bad = [dep[0] for rel, dep in lines if not rel]
    if bad:
        return [f"{kdir}/modules.dep in the image is not a module index: {bad[0][:60]!r}"]
    listed = {rel for rel, _ in lines}
    out = [f"{kdir}/modules.dep in the image does not list {rel}: modprobe cannot load it"
           for rel in sorted(files - listed)]  # fmt: skip
    out += [
        f"{kdir}/modules.dep in the image lists {rel}, which is not in it" for rel in sorted(listed - files)
    ]
    deps = {d for _, ds in lines for d in ds}
    out += [f"{kdir}/modules.dep in the image names {d} as a dependency, which is not in it"
            for d in sorted(deps - files)]  # fmt: skip
    out += [f"{kdir}/{name} is not in the image (modprobe reads it)"
            for name in BINARY_INDEXES if f"{kdir}/{name}" not in image.paths]  # fmt: skip
    return out


def _builtin(plan: Plan, image: InPlan) -> set[str]:
    """The kernel's built-in modules: its modules.builtin (copied into the image), and those the
    plan resolved to built-ins."""
    e = image.paths.get(f"{MODULES_DIR}/{plan.kver}/modules.builtin")
    names = set(plan.builtin)
    if e is not None and e.data is not None:
        names |= {
            module_name(line.strip())
            for line in e.data.decode("utf-8", "replace").splitlines()
            if line.strip()
        }
    return names


def _required_problems(plan: Plan, in_image: set[str], image: InPlan) -> list[str]:
    have = in_image | _builtin(plan, image)
    out = []
    for req in plan.required_modules:
        if not have.intersection(req.names):
            out.append(
                f"{req.reason}: module {' or '.join(req.names)} is neither in the image nor built into "
                f"kernel {plan.kver}"
            )
    return out


# --- all of it


def problems(plan: Plan) -> list[str]:
    """Everything that would keep the image from booting; [] when there is nothing."""
    image = InPlan(plan.entries)
    needs = plan.needs if plan.needs is not None else scan(plan.entries)
    return [
        *init_problems(image),
        *missing_libraries(needs, image),
        *missing_programs(needs, image),
        *module_problems(plan, image),
        *sysext_problems(plan, image.resolve, available_modules(plan, image)),
    ]


def require_bootable(plan: Plan) -> None:
    """Raise an InitrdError naming what is missing, if anything is."""
    found = problems(plan)
    if not found:
        return
    shown = [f"\n  - {p}" for p in found[:_SHOWN]]
    more = f"\n  ... and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    raise InitrdError(
        f"the image for kernel {plan.kver} would not boot; nothing was written:{''.join(shown)}{more}",
        hint="install (or reinstall) what provides the missing files, or add them with --add-package; "
        "--no-check writes the image anyway (for experts)",
    )
