"""UKI assembly on the real systemd-stub and the installed distro kernel; signing with sbsign/sbverify."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pefile
import pytest

from fixtures.host import FakeHost
from fixtures.kernel import kernel_under_test
from fixtures.uki_inputs import STUB, make_cpio, make_keypair, sbverify, unsigned_copy
from mkosi_initrd.config.model import Config
from mkosi_initrd.errors import InitrdError
from mkosi_initrd.uki import pe as pemod
from mkosi_initrd.uki.assemble import UKI_SBAT, build_uki
from mkosi_initrd.uki.describe import describe, format_description, is_uki
from mkosi_initrd.uki.options import UkiInputs, UkiOptions, uki_options

KERNEL, KVER = kernel_under_test().image, kernel_under_test().kver
STUB_SECTIONS = [".text", ".reloc", ".data", ".dynamic", ".rela", ".dynsym", ".sbat", ".sdmagic"]
OS_RELEASE = 'NAME="Test OS"\nID=testos\nPRETTY_NAME="Test OS 1"\n'
pytestmark = pytest.mark.usefixtures("host_kernel")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc/kernel").mkdir(parents=True)
    (r / "etc/os-release").write_text(OS_RELEASE)
    FakeHost(r).cmdline("BOOT_IMAGE=/vmlinuz root=/dev/sda1 initrd=/initrd.img quiet")
    # The root's own command line, as an image ships it: a sysroot's UKI never takes /proc's.
    (r / "usr/lib/kernel").mkdir(parents=True)
    (r / "usr/lib/kernel/cmdline").write_text("root=/dev/sda1 quiet\n")
    return r


@pytest.fixture
def config(root: Path) -> Config:
    return Config(root=root, kver=KVER, procfs=root / "proc")  # the root fixture's FakeHost


@pytest.fixture
def initrd(tmp_path: Path) -> Path:
    return make_cpio(tmp_path, "initrd.cpio", {"init": b"#!/bin/sh\n", "etc/initrd-release": b"ID=x\n"})


def options(config: Config, environ: dict[str, str] | None = None, **kw: object) -> UkiOptions:
    return uki_options(config, UkiInputs(kernel_image=KERNEL, **kw), environ=environ or {})  # type: ignore[arg-type]


def section(pe: pefile.PE, name: str) -> pefile.SectionStructure:
    found = pemod.find_section(pe, name)
    assert found is not None, f"no {name} section"
    return found


def objdump_sections(path: Path) -> list[tuple[str, int, int, int]]:
    """(name, size, vma, file offset) from binutils, an oracle independent of pefile."""
    out = subprocess.run(["objdump", "-h", path], capture_output=True, text=True, check=True).stdout
    rows = re.findall(r"^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", out, re.M)
    return [(name, int(size, 16), int(vma, 16), int(off, 16)) for name, size, vma, off in rows]


def inner_kernel(uki_path: Path, tmp_path: Path) -> Path:
    """The signed kernel inside .linux, cut at the end of its signature table (the section is padded)."""
    data = section_bytes(uki_path, ".linux", raw=True)
    security = pefile.PE(data=data, fast_load=True).OPTIONAL_HEADER.DATA_DIRECTORY[4]
    out = tmp_path / "inner.efi"
    out.write_bytes(data[: security.VirtualAddress + security.Size])
    return out


def section_bytes(path: Path, name: str, raw: bool = False) -> bytes:
    image = pefile.PE(str(path), fast_load=True)
    s = pemod.find_section(image, name)
    assert s is not None, f"{path} has no {name}"
    data = bytes(s.get_data())
    return data if raw else data[: s.Misc_VirtualSize]


def test_sections_follow_the_stub_in_ukify_order_aligned(
    config: Config, initrd: Path, tmp_path: Path
) -> None:
    out = tmp_path / "uki.efi"
    build_uki(config, options(config, cmdline="root=/dev/vda"), [initrd], out)

    rows = objdump_sections(out)
    assert [r[0] for r in rows] == [*STUB_SECTIONS, ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    image = pefile.PE(str(out), fast_load=True)
    fa, sa = image.OPTIONAL_HEADER.FileAlignment, image.OPTIONAL_HEADER.SectionAlignment
    ends = 0
    for i, s in enumerate(image.sections):
        assert s.PointerToRawData % fa == 0 and s.SizeOfRawData % fa == 0, pemod.section_name(s)
        assert s.VirtualAddress >= ends, f"{pemod.section_name(s)} overlaps the previous section"
        # The stub's own addresses stay (its .sdmagic is not SectionAlignment-aligned); ours are aligned.
        assert i < len(STUB_SECTIONS) or s.VirtualAddress % sa == 0, pemod.section_name(s)
        ends = s.VirtualAddress + s.Misc_VirtualSize
    assert image.OPTIONAL_HEADER.SizeOfImage == pemod.round_up(ends, sa)
    assert image.OPTIONAL_HEADER.SizeOfHeaders <= image.sections[0].PointerToRawData
    assert image.FILE_HEADER.PointerToSymbolTable == 0 and image.OPTIONAL_HEADER.CheckSum == 0
    assert image.OPTIONAL_HEADER.Subsystem == 10  # still an EFI application
    assert out.stat().st_size == max(s.PointerToRawData + s.SizeOfRawData for s in image.sections)


def test_linux_section_is_the_kernel_byte_for_byte(config: Config, initrd: Path, tmp_path: Path) -> None:
    out = tmp_path / "uki.efi"
    build_uki(config, options(config), [initrd], out)

    kernel = KERNEL.read_bytes()
    image = pefile.PE(str(out), fast_load=True)
    linux = pemod.find_section(image, ".linux")
    assert linux is not None
    assert out.read_bytes()[linux.PointerToRawData : linux.PointerToRawData + len(kernel)] == kernel
    assert linux.Misc_VirtualSize == pefile.PE(str(KERNEL), fast_load=True).OPTIONAL_HEADER.SizeOfImage
    assert linux.Characteristics == pemod.SCN_MEM_READ | pemod.SCN_CNT_CODE
    assert describe(out)["linux"]["signed"]  # the distro's signature came along untouched


def test_text_sections_hold_osrel_cmdline_uname(config: Config, initrd: Path, tmp_path: Path) -> None:
    out = tmp_path / "uki.efi"
    build_uki(config, options(config, cmdline="root=/dev/vda rw"), [initrd], out)

    assert section_bytes(out, ".osrel") == OS_RELEASE.encode()
    assert section_bytes(out, ".cmdline") == b"root=/dev/vda rw\0"
    assert section_bytes(out, ".uname") == KVER.encode()
    stub = pefile.PE(str(STUB), fast_load=True)
    for name in (".text", ".data", ".sdmagic"):  # the stub's own sections are carried over unchanged
        assert section_bytes(out, name, raw=True) == bytes(section(stub, name).get_data())


def test_sbat_merges_stub_entries_with_the_uki_line(config: Config, initrd: Path, tmp_path: Path) -> None:
    out = tmp_path / "uki.efi"
    build_uki(config, options(config), [initrd], out)

    stub_sbat = section_bytes(STUB, ".sbat").split(b"\0")[0].decode().splitlines()
    raw = section_bytes(out, ".sbat", raw=True)
    text = raw.split(b"\0")[0].decode()
    assert raw.startswith(text.encode() + b"\0") and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("sbat,1,") and sum(line.startswith("sbat,") for line in lines) == 1
    assert lines[:-1] == stub_sbat  # the stub's lines (systemd, distro) in order
    assert lines[-1] == UKI_SBAT
    # The merged text is longer than the gap before .sdmagic: the raw data holds it all (shim reads that),
    # the loaded size stops at the next section.
    image = pefile.PE(str(out), fast_load=True)
    sbat, sdmagic = section(image, ".sbat"), section(image, ".sdmagic")
    assert sbat.VirtualAddress + sbat.Misc_VirtualSize <= sdmagic.VirtualAddress


def test_microcode_goes_first_in_initrd_each_part_padded_to_4(
    config: Config, initrd: Path, tmp_path: Path
) -> None:
    ucode = make_cpio(tmp_path, "ucode.cpio", {"kernel/x86/microcode/GenuineIntel.bin": b"u" * 5})
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 7)
    out = tmp_path / "uki.efi"
    build_uki(config, options(config), [initrd, odd], out, microcode=ucode)

    # The 252 stub has no .ucode support: the early cpio leads .initrd.
    assert ".ucode" not in [r[0] for r in objdump_sections(out)]
    u, i = ucode.read_bytes(), initrd.read_bytes()
    expected = u + bytes(-len(u) % 4) + i + bytes(-len(i) % 4) + b"x" * 7 + b"\0"
    assert section_bytes(out, ".initrd") == expected


def test_newer_stub_gets_microcode_as_ucode_section(config: Config, initrd: Path, tmp_path: Path) -> None:
    # The same stub, its .sdmagic saying v256 (the first systemd-stub that reads .ucode).
    data = STUB.read_bytes()
    magic = re.search(rb"systemd-stub 252[^ ]*", data)
    assert magic is not None
    stub256 = tmp_path / "linuxx64-256.efi.stub"
    stub256.write_bytes(data.replace(magic.group(0), b"systemd-stub 256".ljust(len(magic.group(0)), b" ")))
    ucode = make_cpio(tmp_path, "ucode.cpio", {"kernel/x86/microcode/AuthenticAMD.bin": b"a" * 9})
    out = tmp_path / "uki.efi"
    build_uki(config, options(config, stub=stub256), [initrd], out, microcode=ucode)

    names = [r[0] for r in objdump_sections(out)][len(STUB_SECTIONS) :]
    assert names == [".osrel", ".cmdline", ".uname", ".initrd", ".ucode", ".linux"]
    assert section_bytes(out, ".ucode") == ucode.read_bytes()
    assert section_bytes(out, ".initrd") == initrd.read_bytes() + bytes(-initrd.stat().st_size % 4)


def test_splash_and_devicetree_take_their_places(config: Config, initrd: Path, tmp_path: Path) -> None:
    splash, dtb = tmp_path / "splash.bmp", tmp_path / "board.dtb"
    splash.write_bytes(b"BM" + bytes(100))
    dtb.write_bytes(b"\xd0\x0d\xfe\xed" + bytes(60))
    out = tmp_path / "uki.efi"
    build_uki(config, options(config, splash=splash, devicetree=dtb), [initrd], out)

    names = [r[0] for r in objdump_sections(out)][len(STUB_SECTIONS) :]
    assert names == [".osrel", ".cmdline", ".dtb", ".uname", ".splash", ".initrd", ".linux"]
    assert section_bytes(out, ".splash") == splash.read_bytes()
    assert section_bytes(out, ".dtb") == dtb.read_bytes()


def test_describe_lists_sections_texts_and_the_initrd_files(
    config: Config, initrd: Path, tmp_path: Path
) -> None:
    out = tmp_path / "uki.efi"
    build_uki(config, options(config, cmdline="quiet"), [initrd], out)

    d = describe(out)
    assert [s["name"] for s in d["sections"]][-5:] == [".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
    assert d["cmdline"] == "quiet" and d["uname"] == KVER and d["osrel"]["ID"] == "testos"
    assert d["signed"] is False and d["stub_version"] == 252
    assert d["sbat"][-1] == UKI_SBAT
    assert d["initrd"]["files"] == ["/etc/initrd-release", "/init"]
    assert d["initrd"]["segments"] == [{"offset": 0, "compression": "none", "files": 2}]
    text = format_description(d, list_files=True)
    assert "cmdline: quiet" in text and "/etc/initrd-release" in text
    assert is_uki(out) and not is_uki(KERNEL) and not is_uki(initrd)


# --- command line ----------------------------------------------------------------------------------


def test_cmdline_flag_wins_over_files(config: Config, root: Path) -> None:
    (root / "etc/kernel/cmdline").write_text("from-etc\n")
    assert options(config, cmdline=" given ").cmdline == "given"


def test_cmdline_from_etc_then_usr_lib_kernel(config: Config, root: Path) -> None:
    (root / "usr/lib/kernel/cmdline").write_text("from-usr-lib\n")
    assert options(config).cmdline == "from-usr-lib"
    (root / "etc/kernel/cmdline").write_text("# a comment\nroot=UUID=1234\n  rw   quiet\n")
    assert options(config).cmdline == "root=UUID=1234 rw quiet"


def test_cmdline_conf_root_replaces_etc_kernel(config: Config, root: Path, tmp_path: Path) -> None:
    (root / "etc/kernel/cmdline").write_text("from-etc\n")
    conf_root = tmp_path / "confroot"
    conf_root.mkdir()
    env = {"KERNEL_INSTALL_CONF_ROOT": str(conf_root)}
    (conf_root / "cmdline").write_text("from-conf-root\n")
    assert options(config, env).cmdline == "from-conf-root"


def test_sysroot_without_cmdline_files_is_refused_naming_both(config: Config, root: Path) -> None:
    # root's proc/cmdline stands for the build machine's: a UKI for the sysroot must not get it.
    (root / "usr/lib/kernel/cmdline").unlink()
    with pytest.raises(InitrdError) as e:
        options(config)
    message = str(e.value)
    assert f"{root}/etc/kernel/cmdline and {root}/usr/lib/kernel/cmdline do not exist" in message
    assert "/proc/cmdline is not used" in message and "--cmdline" in e.value.hint
    assert "sda1" not in message
    (root / "usr/lib/kernel/cmdline").write_text("root=LABEL=target\n")
    assert options(config).cmdline == "root=LABEL=target"


def test_sysroot_with_empty_conf_root_is_refused(config: Config, tmp_path: Path) -> None:
    conf_root = tmp_path / "confroot"
    conf_root.mkdir()
    with pytest.raises(InitrdError, match=f"{conf_root}/cmdline does not exist"):
        options(config, {"KERNEL_INSTALL_CONF_ROOT": str(conf_root)})


def test_running_system_falls_back_to_proc_without_boot_image_and_initrd(root: Path, tmp_path: Path) -> None:
    # The running system (--root /): its own /proc/cmdline, as kernel-install does. An empty conf
    # root keeps this machine's /etc/kernel/cmdline out of the test.
    conf_root = tmp_path / "confroot"
    conf_root.mkdir()
    host = Config(root=Path("/"), kver=KVER, procfs=root / "proc")
    assert options(host, {"KERNEL_INSTALL_CONF_ROOT": str(conf_root)}).cmdline == "root=/dev/sda1 quiet"


# --- inputs ----------------------------------------------------------------------------------------


def test_kernel_of_another_version_is_refused(root: Path) -> None:
    cfg = Config(root=root, kver="9.9.9-other", procfs=root / "proc")
    with pytest.raises(InitrdError, match=f"is version {re.escape(KVER)}.*9.9.9-other"):
        options(cfg)


def test_default_kernel_image_found_in_the_root(config: Config, root: Path) -> None:
    (root / "boot").mkdir()
    shutil.copyfile(KERNEL, root / "boot" / f"vmlinuz-{KVER}")
    assert uki_options(config, environ={}).kernel_image == root / "boot" / f"vmlinuz-{KVER}"
    with pytest.raises(InitrdError, match="no kernel image"):
        uki_options(Config(root=root / "proc", kver=KVER), environ={})


def test_stub_from_kernel_install_boot_stub_and_flag(config: Config, tmp_path: Path) -> None:
    copy = tmp_path / "stub.efi"
    copy.write_bytes(STUB.read_bytes())
    assert options(config, {"KERNEL_INSTALL_BOOT_STUB": str(copy)}).stub == copy
    assert options(config, {"KERNEL_INSTALL_BOOT_STUB": "/nonexistent"}, stub=copy).stub == copy
    assert options(config).stub == STUB


def test_signed_stub_is_refused(config: Config, tmp_path: Path) -> None:
    key, cert = make_keypair(tmp_path)
    signed = tmp_path / "signed.stub"
    subprocess.run(
        ["sbsign", "--key", key, "--cert", cert, "--output", signed, STUB], check=True, capture_output=True
    )
    with pytest.raises(InitrdError, match="is signed"):
        options(config, stub=signed)


def test_a_uki_as_kernel_image_is_refused(config: Config, initrd: Path, tmp_path: Path) -> None:
    out = tmp_path / "uki.efi"
    build_uki(config, options(config), [initrd], out)
    with pytest.raises(InitrdError, match="is a unified kernel image already"):
        uki_options(config, UkiInputs(kernel_image=out), environ={})


def test_pefile_finds_nothing_new_to_warn_about(config: Config, initrd: Path, tmp_path: Path) -> None:
    out = tmp_path / "uki.efi"
    build_uki(config, options(config), [initrd], out)
    assert pefile.PE(str(out)).get_warnings() == pefile.PE(str(STUB)).get_warnings()


def test_not_a_pe_kernel_is_refused(config: Config, initrd: Path) -> None:
    with pytest.raises(InitrdError, match="not a PE image"):
        uki_options(config, UkiInputs(kernel_image=initrd), environ={})


# --- PE header room --------------------------------------------------------------------------------


def test_header_grows_when_the_section_table_needs_room(tmp_path: Path) -> None:
    sections = [pemod.Section.of(f".s{i}", bytes([i]) * (i + 1)) for i in range(12)]  # stub room is 7
    out = tmp_path / "grown.efi"
    with open(out, "wb") as f:
        pemod.add_sections(STUB.read_bytes(), sections, f)

    image = pefile.PE(str(out), fast_load=True)
    assert (
        image.OPTIONAL_HEADER.SizeOfHeaders
        > pefile.PE(str(STUB), fast_load=True).OPTIONAL_HEADER.SizeOfHeaders
    )
    assert [r[0] for r in objdump_sections(out)] == STUB_SECTIONS + [f".s{i}" for i in range(12)]
    assert section_bytes(out, ".s11") == bytes([11]) * 12
    stub = pefile.PE(str(STUB), fast_load=True)
    assert section_bytes(out, ".text", raw=True) == bytes(section(stub, ".text").get_data())


def test_no_header_room_left_is_a_clear_error(tmp_path: Path) -> None:
    sections = [pemod.Section.of(f".s{i}", b"x") for i in range(500)]
    with (
        open(tmp_path / "x.efi", "wb") as f,
        pytest.raises(InitrdError, match="header room for .* more sections"),
    ):
        pemod.add_sections(STUB.read_bytes(), sections, f)


# --- signing ---------------------------------------------------------------------------------------


def test_signed_uki_verifies_and_keeps_the_distro_kernel(
    config: Config, initrd: Path, tmp_path: Path
) -> None:
    key, cert = make_keypair(tmp_path)
    out = tmp_path / "uki.efi"
    build_uki(
        config, options(config, secureboot_private_key=key, secureboot_certificate=cert), [initrd], out
    )

    assert sbverify(cert, out).returncode == 0, sbverify(cert, out).stderr
    other_key, other_cert = make_keypair(tmp_path, "other")
    assert sbverify(other_cert, out).returncode != 0
    kernel = KERNEL.read_bytes()
    assert section_bytes(out, ".linux")[: len(kernel)] == kernel  # signed by the distro: left alone
    d = describe(out)
    assert d["signed"] is True and d["signers"] == ["CN = mkosi-initrd test db"]
    assert d["linux"]["signers"] and "mkosi-initrd" not in " ".join(d["linux"]["signers"])  # the distro's
    assert "signed by CN = mkosi-initrd test db" in format_description(d)


def test_unsigned_kernel_gets_signed_inside(config: Config, initrd: Path, tmp_path: Path) -> None:
    key, cert = make_keypair(tmp_path)
    bare = unsigned_copy(KERNEL, tmp_path)
    out = tmp_path / "uki.efi"
    opts = uki_options(
        config,
        UkiInputs(kernel_image=bare, secureboot_private_key=key, secureboot_certificate=cert),
        environ={},
    )
    build_uki(config, opts, [initrd], out)

    assert sbverify(cert, inner_kernel(out, tmp_path)).returncode == 0
    assert sbverify(cert, out).returncode == 0


def test_no_sign_kernel_leaves_an_unsigned_kernel_unsigned(
    config: Config, initrd: Path, tmp_path: Path
) -> None:
    key, cert = make_keypair(tmp_path)
    bare = unsigned_copy(KERNEL, tmp_path)
    out = tmp_path / "uki.efi"
    opts = uki_options(
        config,
        UkiInputs(
            kernel_image=bare, secureboot_private_key=key, secureboot_certificate=cert, sign_kernel=False
        ),
        environ={},
    )
    build_uki(config, opts, [initrd], out)
    data = bare.read_bytes()
    assert section_bytes(out, ".linux")[: len(data)] == data
    assert sbverify(cert, out).returncode == 0


def test_sign_kernel_re_signs_a_signed_kernel(config: Config, initrd: Path, tmp_path: Path) -> None:
    key, cert = make_keypair(tmp_path)
    out = tmp_path / "uki.efi"
    opts = options(config, secureboot_private_key=key, secureboot_certificate=cert, sign_kernel=True)
    build_uki(config, opts, [initrd], out)
    assert sbverify(cert, inner_kernel(out, tmp_path)).returncode == 0


def test_uki_conf_in_the_root_configures_signing(
    config: Config, root: Path, initrd: Path, tmp_path: Path
) -> None:
    key, cert = make_keypair(root / "etc/kernel", "secure-boot")
    (root / "etc/kernel/uki.conf").write_text(
        "[UKI]\nSecureBootPrivateKey=/etc/kernel/secure-boot.key\n"
        "SecureBootCertificate=/etc/kernel/secure-boot.crt\nSecureBootSigningTool=sbsign\n"
    )
    opts = options(config)
    assert opts.signing is not None and opts.signing.key == key and opts.signing.tool == "sbsign"
    out = tmp_path / "uki.efi"
    build_uki(config, opts, [initrd], out)
    assert sbverify(cert, out).returncode == 0


def test_flags_win_over_uki_conf(config: Config, root: Path, tmp_path: Path) -> None:
    (root / "etc/kernel/uki.conf").write_text(
        "[UKI]\nSecureBootPrivateKey=/missing.key\nSecureBootCertificate=/missing.crt\nSignKernel=yes\n"
    )
    key, cert = make_keypair(tmp_path)
    opts = options(config, secureboot_private_key=key, secureboot_certificate=cert, sign_kernel=False)
    assert opts.signing is not None
    assert (opts.signing.key, opts.signing.cert, opts.signing.sign_kernel) == (key, cert, False)


def test_conf_root_uki_conf_replaces_the_roots(config: Config, root: Path, tmp_path: Path) -> None:
    (root / "etc/kernel/uki.conf").write_text("[UKI]\nSecureBootPrivateKey=/missing.key\n")
    conf_root = tmp_path / "confroot"
    conf_root.mkdir()
    (conf_root / "cmdline").write_text("root=/dev/vda\n")
    assert options(config, {"KERNEL_INSTALL_CONF_ROOT": str(conf_root)}).signing is None
    key, cert = make_keypair(conf_root)
    (conf_root / "uki.conf").write_text(f"[UKI]\nSecureBootPrivateKey={key}\nSecureBootCertificate={cert}\n")
    opts = options(config, {"KERNEL_INSTALL_CONF_ROOT": str(conf_root)})
    assert opts.signing is not None and opts.signing.key == key


def test_key_without_certificate_is_an_error(config: Config, tmp_path: Path) -> None:
    key, cert = make_keypair(tmp_path)
    with pytest.raises(InitrdError, match="private key is set but no certificate"):
        options(config, secureboot_private_key=key)
    with pytest.raises(InitrdError, match="certificate is set but no private key"):
        options(config, secureboot_certificate=cert)


def test_unreadable_key_is_an_error(config: Config, tmp_path: Path) -> None:
    _, cert = make_keypair(tmp_path)
    with pytest.raises(InitrdError, match="cannot read the Secure Boot private key"):
        options(config, secureboot_private_key=tmp_path / "nope.key", secureboot_certificate=cert)
    with pytest.raises(InitrdError, match="cannot read the Secure Boot private key"):
        options(config, secureboot_private_key=tmp_path, secureboot_certificate=cert)  # a directory


def test_missing_signing_tool_is_an_error(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = make_keypair(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # neither sbsign nor systemd-sbsign on $PATH
    with pytest.raises(InitrdError, match="neither sbsign nor systemd-sbsign is installed"):
        options(config, secureboot_private_key=key, secureboot_certificate=cert)
    monkeypatch.setenv("PATH", os.defpath)
    if not Path("/usr/lib/systemd/systemd-sbsign").exists():
        with pytest.raises(InitrdError, match="systemd-sbsign is not installed"):
            options(
                config, secureboot_private_key=key, secureboot_certificate=cert, signtool="systemd-sbsign"
            )


def test_failed_signing_leaves_the_old_output_and_no_temp_files(
    config: Config, initrd: Path, tmp_path: Path
) -> None:
    key, _ = make_keypair(tmp_path)
    _, wrong_cert = make_keypair(tmp_path, "other")
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "uki.efi"
    out.write_bytes(b"previous")
    opts = options(config, secureboot_private_key=key, secureboot_certificate=wrong_cert)
    with pytest.raises(InitrdError, match="sbsign failed"):
        build_uki(config, opts, [initrd], out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in outdir.iterdir()) == ["uki.efi"]


def test_builds_leave_nothing_but_the_output(config: Config, initrd: Path, tmp_path: Path) -> None:
    key, cert = make_keypair(tmp_path)
    outdir = tmp_path / "out"
    outdir.mkdir()
    build_uki(config, options(config), [initrd], outdir / "plain.efi")
    signed = options(config, secureboot_private_key=key, secureboot_certificate=cert, sign_kernel=True)
    build_uki(config, signed, [initrd], outdir / "signed.efi")
    assert sorted(p.name for p in outdir.iterdir()) == ["plain.efi", "signed.efi"]
    assert (outdir / "plain.efi").stat().st_mode & 0o777 == 0o600  # like the initrd: may hold secrets
