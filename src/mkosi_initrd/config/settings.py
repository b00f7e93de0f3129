"""Every setting, once: its name, its ini section and key, its command-line flags, its kind, default and
help. The ini reader (ini.py), the command line (cli.py), the man page (tools/mkman.py) and the docs
tests are made from this table; `Config`, `BuildOptions` and `UkiInputs` have a field of each name
their settings have (tests/test_settings.py holds them to it, defaults included).

Kinds: "flag" (a boolean; on the command line a flag that turns it on, or off with `negate`),
"tristate" (--x / --no-x / neither), "text", "number", "path", "words" (a list: files accumulate
words, an empty assignment clears them, the command line's repeated flag adds to them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mkosi_initrd.errors import InitrdError

PROFILES = ("lvm", "raid", "nfs", "network", "pkcs11", "plymouth")
COMPRESSIONS = ("zstd", "xz", "gzip", "none")
BACKENDS = ("rpm", "dpkg")
SELECTION = ("build", "plan")  # the commands that decide what goes into the initrd
UKI_GROUP = "UKI (--format uki)"
# The ini files' sections, in the order the docs list them.
SECTIONS = ("Packages", "Files", "Kernel", "Output", "UKI", "Extensions")


def extra_file(word: str, where: str) -> tuple[str, str]:
    """ExtraFiles= SOURCE[:DEST] → (source, destination), both absolute."""
    src, _, dst = word.partition(":")
    if not src.startswith("/") or (dst and not dst.startswith("/")):
        raise InitrdError(f"{where}: ExtraFiles={word}: paths must be absolute", hint="SOURCE[:DEST]")
    return (src, dst or src)


def companion_file(suffix: str) -> Callable[[str, str], object]:
    """Addons=/Credentials= words: absolute paths with the name systemd-stub looks for."""

    def parse(word: str, where: str) -> object:
        key = "Addons" if suffix == ".addon.efi" else "Credentials"
        if not word.startswith("/"):
            raise InitrdError(f"{where}: {key}={word}: the path must be absolute")
        if not word.endswith(suffix) or word.endswith("/" + suffix):
            raise InitrdError(
                f"{where}: {key}={word}: systemd-stub reads only NAME{suffix} files beside the UKI",
                hint=f"rename the file to end in {suffix}",
            )
        return word

    return parse


@dataclass(frozen=True)
class Setting:
    name: str  # the field of Config (target "config"), BuildOptions ("build"), UkiInputs ("uki")
    kind: str  # see the module docstring
    help: str | None  # --help; None: hidden (the tests' host probes)
    flags: tuple[str, ...] = ()  # on the command line; a name without "-" is positional
    section: str = ""  # in the ini files: [section] key=
    key: str = ""
    default: object = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    commands: tuple[str, ...] = SELECTION
    target: str = "config"  # or "build", "uki", "command" (what the command itself uses)
    group: str | None = None  # the --help group
    negate: bool = False  # the flag turns the setting off (--no-microcode)
    repeats: bool = False  # words: repeats are kept (module patterns: the last match decides)
    word: Callable[[str, str], object] | None = None  # words: (word, where) → the value; None: as is
    doc: str = ""  # an ini setting's description for the man page and README

    @property
    def ini(self) -> str:
        return f"[{self.section}] {self.key}=" if self.section else ""

    @property
    def positional(self) -> bool:
        return bool(self.flags) and not self.flags[0].startswith("-")


SETTINGS: tuple[Setting, ...] = (
    # --- what goes into the initrd (build and plan)
    Setting("kver", "text",
            "kernel version (default: the running kernel, or the only one installed in --root)",
            ("-k", "--kernel-version"), metavar="KVER", target="command", commands=(*SELECTION, "sysext")),
    Setting("root", "path",
            "root of the installed system to take packages, modules and config from (default /)",
            ("--root",), default=Path("/"), target="command", commands=(*SELECTION, "sysext")),
    Setting("generic", "flag", "build a generic initrd: no host-specific modules or configuration",
            ("-g", "--generic"), "Kernel", "Generic", default=False,
            doc="yes/no: build a generic initrd", commands=(*SELECTION, "sysext")),
    Setting("profiles", "words", "add a profile's packages and modules (repeatable)", ("--profile",),
            "Packages", "Profiles", default=(), choices=PROFILES,
            doc=f"profiles to add: `{' '.join(PROFILES)}`"),
    Setting("backend", "text", "package database backend (default: detect)", ("--backend",),
            "Packages", "Backend", choices=BACKENDS,
            doc="`rpm` or `dpkg` (default: detected from the root)"),
    Setting("packages", "words", "also include a package, virtual provide or file path (repeatable)",
            ("--add-package",), "Packages", "Packages", default=(), metavar="ENTRY",
            doc="package names, virtual provides or file paths to add"),
    Setting("remove_packages", "words", "leave out a package, and the list entry of that name (repeatable)",
            ("--remove-package",), "Packages", "RemovePackages", default=(), metavar="NAME",
            doc="package names to leave out (a list entry of that name too)"),
    Setting("modules", "words", "module pattern to include, '-PATTERN' to exclude (repeatable)",
            ("--add-module",), "Kernel", "Modules", default=(), metavar="PATTERN", repeats=True,
            doc="module patterns; `-PATTERN` excludes; the last match wins"),
    Setting("firmware", "words", "firmware glob relative to /usr/lib/firmware to include (repeatable)",
            ("--add-firmware",), "Kernel", "Firmware", default=(), metavar="GLOB",
            doc="globs relative to `/usr/lib/firmware`"),
    Setting("weak_deps", "flag", "also follow weak dependencies", ("--with-recommends",),
            "Packages", "WithRecommends", default=False, doc="yes/no: also follow weak dependencies"),
    Setting("extra_files", "words", None, (), "Files", "ExtraFiles", default=(), word=extra_file,
            doc="`SOURCE[:DEST]` absolute paths to copy into the initrd"),
    Setting("remove_files", "words", None, (), "Files", "RemoveFiles", default=(),
            doc="globs of initrd paths to leave out"),
    Setting("addons", "words", None, (), "UKI", "Addons", default=(), word=companion_file(".addon.efi"),
            doc="absolute paths of `NAME.addon.efi` files (`mkosi-initrd addon`) the kernel-install "
            "plugin puts beside the UKI (layout uki), in `ENTRY-TOKEN-KVER.efi.extra.d/`"),
    Setting("credentials", "words", None, (), "UKI", "Credentials", default=(),
            word=companion_file(".cred"),
            doc="absolute paths of `NAME.cred` credential files (`systemd-creds encrypt`) the "
            "kernel-install plugin puts beside the UKI (layout uki); the initrd sees them in "
            "`/.extra/credentials/`"),
    Setting("sysext_support", "flag",
            "let the initrd merge signed system extensions (systemd-sysext, loop, dm-verity, "
            "erofs/squashfs, libcryptsetup); on by itself when extensions are configured",
            ("--sysext-support",), "Extensions", "SysextSupport", default=False,
            doc="yes/no: the initrd merges system extensions: systemd-sysext enabled in the initrd, the "
            "loop, dm-verity, erofs, squashfs and overlay modules, libcryptsetup, the trust certificate in "
            "`/usr/lib/verity.d/` (default: on when `/etc/mkosi-initrd/sysext.d/*.conf` exist or a "
            "verity certificate is configured)"),
    Setting("verity_certificate", "path",
            "X.509 certificate (PEM) of the key extensions are signed with: the initrd trusts it "
            "(/usr/lib/verity.d/); turns on --sysext-support",
            ("--verity-certificate",), "Extensions", "VerityCertificate", metavar="CERT",
            doc="PEM certificate the initrd trusts for signed extensions (`/usr/lib/verity.d/`)",
            commands=(*SELECTION, "sysext")),
    Setting("sysfs", "path", None, ("--sysfs",), default=Path("/sys")),  # host probes, for tests
    Setting("procfs", "path", None, ("--procfs",), default=Path("/proc")),
    Setting("verbose", "flag", "show progress", ("-v", "--verbose"), default=False, target="command",
            commands=(*SELECTION, "sysext")),
    Setting("debug", "flag", "show debug output and tracebacks", ("--debug",), default=False,
            target="command"),
    # --- build
    Setting("output", "path", "output file (default: ./initrd, or ./uki.efi)", ("-o", "--output"),
            commands=("build",), target="build"),
    Setting("format", "text", "output format", ("-t", "--format"), default="cpio", choices=("cpio", "uki"),
            commands=("build",), target="build"),
    Setting("compression", "text", "compressor for the cpio (default zstd)", ("--compression",),
            "Output", "Compression", default="zstd", choices=COMPRESSIONS, commands=("build",),
            doc="`zstd` (default), `xz`, `gzip`, `none`"),
    Setting("level", "number", "compression level (default: zstd 3)", ("--level",),
            "Output", "CompressionLevel", commands=("build",), doc="compressor level (default: zstd 3)"),
    Setting("microcode_output", "path",
            "write the early microcode cpio here (x86; default: prepend nothing)",
            ("--microcode-output",), metavar="PATH", commands=("build",), target="build"),
    Setting("microcode", "flag", "no early microcode cpio", ("--no-microcode",), "Output", "Microcode",
            default=True, negate=True, commands=("build",), doc="yes/no: the early microcode cpio (x86)"),
    Setting("use_cache", "flag", "do not reuse or store a cached result", ("--no-cache",), default=True,
            negate=True, commands=("build",), target="build"),
    Setting("check", "flag",
            "skip the pre-flight check that the image would boot (for experts: an image missing a library, "
            "a program or a module is written anyway; the summary says it was not checked)",
            ("--no-check",), "Output", "Check", default=True, negate=True, commands=("build",),
            doc="yes/no: the pre-flight check that the image would boot (default yes; `no` is for experts, "
            "and the kernel-install plugin has no flags)"),
    # --- build --format uki
    Setting("kernel_image", "path", "kernel image (default /usr/lib/modules/KVER/vmlinuz)",
            ("--kernel-image",), commands=("build",), target="uki", group=UKI_GROUP),
    Setting("cmdline", "text", "kernel command line (default: the root's /etc/kernel/cmdline or"
            " /usr/lib/kernel/cmdline; /proc/cmdline for --root / only)",
            ("--cmdline",), commands=("build",), target="uki", group=UKI_GROUP),
    Setting("stub", "path", "systemd-stub to use", ("--stub",), commands=("build",), target="uki",
            group=UKI_GROUP),
    Setting("os_release", "path", "os-release for .osrel (default: the root's)", ("--os-release",),
            commands=("build",), target="uki", group=UKI_GROUP),
    Setting("splash", "path", "splash image (.bmp)", ("--splash",), commands=("build",), target="uki",
            group=UKI_GROUP),
    Setting("devicetree", "path", "device tree blob (.dtb)", ("--devicetree",), commands=("build",),
            target="uki", group=UKI_GROUP),
    Setting("secureboot_private_key", "path",
            "Secure Boot signing key (default: SecureBootPrivateKey= of uki.conf)",
            ("--secureboot-private-key",), metavar="KEY", commands=("build",), target="uki",
            group=UKI_GROUP),
    Setting("secureboot_certificate", "path",
            "its certificate (default: SecureBootCertificate= of uki.conf)",
            ("--secureboot-certificate",), metavar="CERT", commands=("build",), target="uki",
            group=UKI_GROUP),
    Setting("signtool", "text",
            "signing tool (default: SecureBootSigningTool= of uki.conf, else the one installed)",
            ("--signtool",), choices=("sbsign", "systemd-sbsign"), commands=("build",), target="uki",
            group=UKI_GROUP),
    Setting("sign_kernel", "tristate",
            "sign the inner kernel too (default: only when it is unsigned and keys are given)",
            ("--sign-kernel",), commands=("build",), target="uki", group=UKI_GROUP),
    # --- plan
    Setting("json", "flag", "print the plan as JSON", ("--json",), default=False, commands=("plan",),
            target="command"),
    Setting("packages_only", "flag",
            "plan the packages and their files alone, without a kernel (for roots that have none yet)",
            ("--packages-only",), default=False, commands=("plan",), target="command"),
    # --- addon
    Setting("name", "text", "the addon's name: the output is NAME.addon.efi unless -o says otherwise",
            ("name",), metavar="NAME", commands=("addon",), target="command"),
    Setting("cmdline", "text", "kernel command line words the addon appends to the UKI's",
            ("--cmdline",), metavar="TEXT", commands=("addon",), target="command"),
    Setting("initrd", "path",
            "a cpio (compressed or not) the addon adds to the initrd (systemd-stub >= 257)",
            ("--initrd",), metavar="FILE", commands=("addon",), target="command"),
    Setting("ucode", "path", "an early microcode cpio (uncompressed) for the addon (systemd-stub >= 257)",
            ("--ucode",), metavar="FILE", commands=("addon",), target="command"),
    Setting("output", "path", "output file (default: ./NAME.addon.efi)", ("-o", "--output"),
            commands=("addon",), target="command"),
    Setting("root", "path", "root whose addon<arch>.efi.stub and uki.conf are used (default /)",
            ("--root",), default=Path("/"), commands=("addon",), target="command"),
    Setting("stub", "path", "the addon stub (default: the root's addon<arch>.efi.stub)", ("--stub",),
            commands=("addon",), target="command"),
    Setting("secureboot_private_key", "path",
            "Secure Boot signing key (default: SecureBootPrivateKey= of uki.conf, as for the UKI)",
            ("--secureboot-private-key",), metavar="KEY", commands=("addon",), target="command"),
    Setting("secureboot_certificate", "path",
            "its certificate (default: SecureBootCertificate= of uki.conf)",
            ("--secureboot-certificate",), metavar="CERT", commands=("addon",), target="command"),
    Setting("signtool", "text",
            "signing tool (default: SecureBootSigningTool= of uki.conf, else the one installed)",
            ("--signtool",), choices=("sbsign", "systemd-sbsign"), commands=("addon",), target="command"),
    Setting("debug", "flag", "show debug output and tracebacks", ("--debug",), default=False,
            commands=("addon",), target="command"),
    # --- sysext
    Setting("name", "text", "the extension's name: NAME.sysext.raw, extension-release.NAME", ("name",),
            metavar="NAME", commands=("sysext",), target="command"),
    Setting("sysext_packages", "words", "a package whose closure the extension carries (repeatable)",
            ("--package",), default=(), metavar="PACKAGE", commands=("sysext",), target="command"),
    Setting("sysext_modules", "words",
            "a module the extension adds, with its dependencies and a module index for base + extension "
            "(repeatable)", ("--add-module",), default=(), metavar="MODULE", commands=("sysext",),
            target="command"),
    Setting("sysext_files", "words",
            "a file SRC put at DEST (default SRC) in the extension: /usr, /opt, or /etc (confext)",
            ("--files",), default=(), metavar="SRC[:DEST]", commands=("sysext",), target="command"),
    Setting("sysext_format", "text",
            "raw: a DDI (GPT, erofs, dm-verity, signature partition when signed); directory: a tree "
            "for local trusted use (/run/extensions), never signed", ("--format",), default="raw",
            choices=("raw", "directory"), commands=("sysext",), target="command"),
    Setting("verity_key", "path", "private key (PEM) that signs the image's dm-verity root hash",
            ("--verity-key",), metavar="KEY", commands=("sysext",), target="command"),
    Setting("base", "path",
            "an existing initrd (e.g. the prebuilt one) as the base instead of the plan for --root",
            ("--base",), metavar="INITRD", commands=("sysext",), target="command"),
    Setting("output", "path", "output (default: ./NAME.sysext.raw, ./NAME for --format directory)",
            ("-o", "--output"), commands=("sysext",), target="command"),
    Setting("debug", "flag", "show debug output and tracebacks", ("--debug",), default=False,
            commands=("sysext",), target="command"),
    # --- inspect
    Setting("file", "path", "the initrd, UKI, UKI addon or system extension", ("file",),
            commands=("inspect",),
            target="command"),
    Setting("json", "flag", "print as JSON", ("--json",), default=False, commands=("inspect",),
            target="command"),
    Setting("certificate", "path",
            "for a system extension: check its signature against this certificate (PEM)",
            ("--certificate",), metavar="CERT", commands=("inspect",), target="command"),
    Setting("files", "flag", "list every file", ("--files",), default=False, commands=("inspect",),
            target="command"),
    Setting("debug", "flag", "show debug output and tracebacks", ("--debug",), default=False,
            commands=("inspect",), target="command"),
)  # fmt: skip


def settings_of(target: str) -> tuple[Setting, ...]:
    return tuple(s for s in SETTINGS if s.target == target)


def in_files() -> dict[tuple[str, str], Setting]:
    """(section, key) → the setting the ini files set there, by section (SECTIONS' order)."""
    ini = sorted((s for s in SETTINGS if s.section), key=lambda s: SECTIONS.index(s.section))
    return {(s.section, s.key): s for s in ini}


class Values:
    """The command line's values by setting name; a setting not given is absent (None)."""

    def __init__(self, values: Mapping[str, object] | None = None) -> None:
        self._values = {k: v for k, v in (values or {}).items() if v is not None}

    def get(self, name: str) -> object:
        return self._values.get(name)

    def _typed(self, name: str, kind: type) -> object:
        value = self._values.get(name)
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"setting {name}: {value!r} is not a {kind.__name__}")
        return value

    def text(self, name: str) -> str | None:
        value = self._typed(name, str)
        return value if isinstance(value, str) else None

    def path(self, name: str) -> Path | None:
        value = self._typed(name, Path)
        return value if isinstance(value, Path) else None

    def number(self, name: str) -> int | None:
        value = self._typed(name, int)
        return value if isinstance(value, int) else None

    def flag(self, name: str) -> bool | None:
        value = self._typed(name, bool)
        return value if isinstance(value, bool) else None

    def words(self, name: str) -> tuple[str, ...]:
        value = self._typed(name, list)
        return tuple(str(v) for v in value) if isinstance(value, list) else ()
