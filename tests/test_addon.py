"""`mkosi-initrd addon`: PE addons on the Debian 13 root's real addonx64.efi.stub (systemd 257), read back
with pefile, signed with sbsign like the UKI, and listed by `inspect`."""

from __future__ import annotations

import json
from pathlib import Path

import pefile
import pytest

from fixtures.trixie import TrixieRoot
from fixtures.uki_inputs import make_cpio, make_keypair, sbverify
from mkosi_initrd import cli
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki.addon import ADDON_SBAT, addon_options
from mkosi_initrd.uki.describe import describe

STUB_SECTIONS = [".text", ".sdmagic"]  # what systemd 257's addon stub consists of


def addon(trixie: TrixieRoot, out: Path, *args: str) -> Path:
    name = out.name.removesuffix(".addon.efi")
    assert cli.main(["addon", name, "--root", str(trixie.root), "-o", str(out), *args]) == 0
    return out


def payload(pe: pefile.PE, name: str) -> bytes:
    s = pemod.find_section(pe, name)
    assert s is not None, name
    return bytes(s.get_data()[: s.Misc_VirtualSize])


def test_addon_carries_the_cmdline_initrd_and_ucode_after_the_stubs_sections(
    trixie: TrixieRoot, tmp_path: Path
) -> None:
    initrd = make_cpio(tmp_path, "extra.cpio", {"etc/extra.conf": b"x=1\n"})
    ucode = make_cpio(tmp_path, "ucode.cpio", {"kernel/x86/microcode/GenuineIntel.bin": b"\x01" * 100})
    flags = ["--cmdline", " debug  rd.x=1\n", "--initrd", str(initrd), "--ucode", str(ucode)]
    out = addon(trixie, tmp_path / "debug.addon.efi", *flags)
    pe = pefile.PE(str(out))
    names = [pemod.section_name(s) for s in pe.sections]
    assert names == [*STUB_SECTIONS, ".cmdline", ".initrd", ".ucode", ".sbat"]
    assert payload(pe, ".cmdline") == b"debug rd.x=1\0"
    assert payload(pe, ".initrd") == initrd.read_bytes() and payload(pe, ".ucode") == ucode.read_bytes()
    assert payload(pe, ".sbat").rstrip(b"\0").decode().splitlines()[-1] == ADDON_SBAT
    assert pemod.find_section(pe, ".linux") is None and not pemod.is_signed(pe)
    last = pe.sections[-1]
    assert pe.OPTIONAL_HEADER.SizeOfImage >= last.VirtualAddress + last.Misc_VirtualSize
    # The stub's own bytes are untouched: its code still starts the file's first section.
    stub = pefile.PE(str(trixie.addon_stub))
    assert payload(pe, ".text") == payload(stub, ".text")
    assert pe.OPTIONAL_HEADER.AddressOfEntryPoint == stub.OPTIONAL_HEADER.AddressOfEntryPoint


def test_inspect_lists_an_addons_sections_and_its_files(
    trixie: TrixieRoot, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    initrd = make_cpio(tmp_path, "extra.cpio", {"etc/extra.conf": b"x=1\n"})
    out = addon(trixie, tmp_path / "x.addon.efi", "--cmdline", "quiet", "--initrd", str(initrd))
    d = describe(out)
    assert d["type"] == "addon" and d["cmdline"] == "quiet" and d["stub_version"] == 257
    assert [s["name"] for s in d["sections"]] == [*STUB_SECTIONS, ".cmdline", ".initrd", ".sbat"]
    assert "/etc/extra.conf" in d["initrd"]["files"] and d["ucode"] is None
    capsys.readouterr()
    assert cli.main(["inspect", "--files", str(out)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{out}: UKI addon, {out.stat().st_size} bytes, unsigned")
    assert "  cmdline: quiet\n" in shown and "    /etc/extra.conf\n" in shown
    assert [line.split()[0] for line in shown.splitlines() if line.startswith("    .")] == [
        *STUB_SECTIONS, ".cmdline", ".initrd", ".sbat"
    ]  # fmt: skip
    assert cli.main(["inspect", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["cmdline"] == "quiet"


def test_addon_is_signed_with_the_key_of_the_roots_uki_conf(trixie: TrixieRoot, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/kernel").mkdir(parents=True)
    key, cert = make_keypair(root / "etc/kernel")  # named as the root sees them, as for the UKI
    (root / "etc/kernel/uki.conf").write_text(
        "[UKI]\nSecureBootPrivateKey=/etc/kernel/db.key\nSecureBootCertificate=/etc/kernel/db.crt\n"
        "SecureBootSigningTool=sbsign\n"
    )
    options = addon_options(root, "debug", cmdline="debug", stub=trixie.addon_stub, environ={})
    assert options.signing is not None and options.signing.cert == cert
    out = tmp_path / "debug.addon.efi"
    assert cli.main(["addon", "debug", "--root", str(root), "--stub", str(trixie.addon_stub),
                     "--cmdline", "debug", "-o", str(out)]) == 0  # fmt: skip
    assert sbverify(cert, out).returncode == 0
    d = describe(out)
    assert d["signed"] and d["signers"] == ["CN = mkosi-initrd test db"] and d["cmdline"] == "debug"
    other_key, other_cert = make_keypair(tmp_path, "other")
    assert sbverify(other_cert, out).returncode != 0


def test_missing_addon_stub_names_the_package_and_the_roots_path(tmp_path: Path) -> None:
    with pytest.raises(InitrdError) as e:
        addon_options(tmp_path, "debug", cmdline="debug", environ={})
    assert e.value.message == (
        f"no addon stub in {tmp_path}: /usr/lib/systemd/boot/efi/addonx64.efi.stub is missing"
    )
    assert "systemd-boot-efi" in e.value.hint


def test_addon_sections_a_stub_too_old_to_load_are_refused(trixie: TrixieRoot, tmp_path: Path) -> None:
    old = tmp_path / "addonx64.efi.stub"
    data = trixie.addon_stub.read_bytes()
    old.write_bytes(data.replace(b"systemd-addon 257.", b"systemd-addon 254."))
    initrd = make_cpio(tmp_path, "extra.cpio", {"etc/extra.conf": b"x=1\n"})
    assert addon_options(tmp_path, "a", cmdline="debug", stub=old, environ={}).cmdline == "debug"
    with pytest.raises(
        InitrdError, match=r"systemd 254: systemd-stub loads \.initrd from addons only since"
    ):
        addon_options(tmp_path, "a", cmdline="debug", initrd=initrd, stub=old, environ={})


@pytest.mark.parametrize(
    "kw, message",
    [
        ({}, "addon a: nothing to put in it"),
        ({"cmdline": "  "}, "addon a: nothing to put in it"),
        ({"ucode": "compressed"}, "is not an uncompressed newc cpio"),
        ({"initrd": "text"}, "is not a newc cpio"),
    ],
)
def test_addon_inputs_are_checked_before_anything_is_written(
    trixie: TrixieRoot, tmp_path: Path, kw: dict[str, str], message: str
) -> None:
    files = {"compressed": tmp_path / "c.zst", "text": tmp_path / "t.txt"}
    files["compressed"].write_bytes(b"\x28\xb5\x2f\xfd" + bytes(20))
    files["text"].write_text("hello\n")
    args = {k: (files[v] if k != "cmdline" else v) for k, v in kw.items()}
    out = tmp_path / "a.addon.efi"
    with pytest.raises(InitrdError, match=message):
        addon_options(trixie.root, "a", output=out, environ={}, **args)  # type: ignore[arg-type]
    assert not out.exists()
