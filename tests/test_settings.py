"""The settings table (config/settings.py) against what is made of it: Config, BuildOptions and UkiInputs
field by field, the ini reader and the command line."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import pytest

from mkosi_initrd.build.options import BuildOptions, build_options
from mkosi_initrd.cli import parse_args
from mkosi_initrd.config.load import load_config
from mkosi_initrd.config.model import Config
from mkosi_initrd.config.settings import SETTINGS, Setting, settings_of
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.uki.options import UkiInputs, uki_inputs

# Config fields that are no setting: the command's, the environment's, and the command line's share
# of `packages` (errors name --add-package for those).
NOT_SETTINGS = {"root", "kver", "source_date_epoch", "config_files", "added_packages"}


def defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_every_config_field_is_one_setting_with_the_same_default() -> None:
    settings = {s.name: s for s in settings_of("config")}
    assert len(settings) == len(settings_of("config"))  # each name once
    assert set(settings) == {f.name for f in dataclasses.fields(Config)} - NOT_SETTINGS
    assert {n: s.default for n, s in settings.items()} == {
        n: d for n, d in defaults(Config).items() if n in settings
    }


def test_every_uki_input_is_a_uki_setting() -> None:
    assert [s.name for s in settings_of("uki")] == [f.name for f in dataclasses.fields(UkiInputs)]
    assert all(s.group and s.commands == ("build",) for s in settings_of("uki"))


def test_build_settings_are_build_options_with_their_defaults() -> None:
    build = {s.name: s.default for s in settings_of("build")}
    assert set(build) <= {f.name for f in dataclasses.fields(BuildOptions)}
    assert build == {n: d for n, d in defaults(BuildOptions).items() if n in build} | {"output": None}


def test_file_settings_are_unique_and_documented() -> None:
    ini = [(s.section, s.key) for s in SETTINGS if s.section]
    assert len(ini) == len(set(ini)) > 5
    assert all(s.doc for s in SETTINGS if s.section) and not any(s.doc for s in SETTINGS if not s.section)


def _is(value: object, hint: object) -> bool:
    """isinstance for the annotations Config uses (unions, tuple[X, ...], tuple[X, Y])."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, a) for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_is(v, args[0]) for v in value)
        return len(value) == len(args) and all(_is(v, a) for v, a in zip(value, args, strict=True))
    if hint is type(None):
        return value is None
    assert isinstance(hint, type)
    return isinstance(value, hint)


FILES = """\
[Packages]
Packages=fx-a fx-b
RemovePackages=less
Profiles=lvm
WithRecommends=yes
Backend=dpkg
[Files]
ExtraFiles=/etc/a /etc/b:/etc/c
RemoveFiles=/usr/share/x
[Kernel]
Modules=nvme -nvme
Firmware=i915/*
Generic=no
[Output]
Compression=xz
CompressionLevel=4
Microcode=yes
Check=yes
[UKI]
Addons=/etc/kernel/debug.addon.efi
Credentials=/etc/kernel/a.cred /etc/kernel/b.cred
[Extensions]
SysextSupport=no
VerityCertificate=/etc/v.crt
"""

COMMAND_LINE = [
    "build", "--generic", "--profile", "raid", "--backend", "rpm", "--add-package", "fx-c",
    "--remove-package", "gzip", "--add-module", "nvme", "--add-firmware", "amd/*", "--with-recommends",
    "--sysfs", "/s", "--procfs", "/p", "--compression", "gzip", "--level", "9", "--no-microcode",
    "--no-check",
]  # fmt: skip


def test_files_and_command_line_give_each_field_its_type(tmp_path: Path) -> None:
    conf = tmp_path / "etc/mkosi-initrd/mkosi-initrd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(FILES)
    hints = typing.get_type_hints(Config)
    in_files = {s.name for s in settings_of("config") if s.section and f"\n{s.key}=" in FILES}
    on_command_line = {s.name for s in settings_of("config") if set(s.flags) & set(COMMAND_LINE)}
    assert in_files | on_command_line == {s.name for s in settings_of("config")}  # every one is set
    for cli in (None, parse_args(COMMAND_LINE).values):
        config = load_config(tmp_path, "1.0", cli)
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)}
        assert {n: v for n, v in values.items() if not _is(v, hints[n])} == {}
    both = load_config(tmp_path, "1.0", parse_args(COMMAND_LINE).values)
    assert both.packages == ("fx-a", "fx-b", "fx-c") and both.modules == ("nvme", "-nvme", "nvme")
    assert both.extra_files == (("/etc/a", "/etc/a"), ("/etc/b", "/etc/c"))
    assert both.addons == ("/etc/kernel/debug.addon.efi",)
    assert both.credentials == ("/etc/kernel/a.cred", "/etc/kernel/b.cred")
    assert (both.generic, both.backend, both.compression, both.level, both.microcode) == (
        True, "rpm", "gzip", 9, False,
    )  # fmt: skip
    assert (both.sysfs, both.procfs) == (Path("/s"), Path("/p"))


def test_what_neither_says_is_the_default(tmp_path: Path) -> None:
    assert load_config(tmp_path, "1.0") == Config(root=tmp_path, kver="1.0")
    assert load_config(tmp_path, "1.0", parse_args(["build"]).values) == Config(root=tmp_path, kver="1.0")


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.flags and not s.positional], ids=str)
def test_each_flag_sets_its_setting(setting: Setting) -> None:
    value = {"flag": None, "tristate": None, "words": "x", "number": "3", "path": "/p", "text": "x"}
    word = setting.choices[-1] if setting.choices else value[setting.kind]
    argv = [setting.commands[0], setting.flags[-1], *([word] if word is not None else [])]
    if setting.commands[0] in ("inspect", "addon", "sysext"):
        argv.append("FILE")  # the positional argument (inspect's FILE, addon's and sysext's NAME)
    values = parse_args(argv).values
    expected = {"flag": not setting.negate, "tristate": True, "words": ("x",)}.get(setting.kind)
    got = values.words(setting.name) if setting.kind == "words" else values.get(setting.name)
    if setting.kind in ("path", "number"):
        expected = Path(str(word)) if setting.kind == "path" else int(str(word))
    elif setting.kind == "text" or setting.choices and setting.kind != "words":
        expected = word
    elif setting.choices:
        expected = (word,)
    assert got == expected


def test_the_plugins_and_the_command_lines_build_options_agree(tmp_path: Path) -> None:
    values = parse_args(["-o", str(tmp_path / "i"), "--format", "uki", "--cmdline", "quiet"]).values
    options = build_options(values)
    assert (options.output, options.format, options.use_cache) == (tmp_path / "i", "uki", True)
    assert uki_inputs(values) == UkiInputs(cmdline="quiet")
    assert build_options(parse_args(["--no-cache"]).values) == BuildOptions(Path("initrd"), use_cache=False)


def test_the_check_is_on_unless_the_files_or_the_command_line_turn_it_off(tmp_path: Path) -> None:
    # The kernel-install plugin passes no flags: Check=no is how an expert turns it off there.
    assert load_config(tmp_path, "1.0").check is True
    conf = tmp_path / "etc/mkosi-initrd/mkosi-initrd.conf.d/50-check.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("[Output]\nCheck=no\n")
    assert load_config(tmp_path, "1.0").check is False
    conf.write_text("[Output]\nCheck=yes\n")
    assert load_config(tmp_path, "1.0", parse_args(["build", "--no-check"]).values).check is False


@pytest.mark.parametrize(
    "line, message",
    [
        ("Addons=debug.addon.efi", "Addons=debug.addon.efi: the path must be absolute"),
        ("Addons=/etc/kernel/debug.efi", "systemd-stub reads only NAME.addon.efi files"),
        ("Credentials=/etc/kernel/passphrase", "systemd-stub reads only NAME.cred files"),
    ],
)
def test_companion_settings_refuse_names_systemd_stub_would_ignore(
    tmp_path: Path, line: str, message: str
) -> None:
    conf = tmp_path / "etc/mkosi-initrd/mkosi-initrd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[UKI]\n{line}\n")
    with pytest.raises(InitrdError, match=message):
        load_config(tmp_path, "1.0")
