"""mkosi's module pattern semantics (kernel/patterns.py), on module keys as the kernel's paths give them."""

from mkosi_initrd.kernel.patterns import PatternSet, compile_pattern, matches, module_key


def key(path: str) -> str:
    return module_key(path)


def decide(patterns: list[str], path: str) -> str | None:
    p = PatternSet(compile_pattern(t, "listed") for t in patterns).decide(key(path))
    return None if p is None else p.text


def test_plain_name_matches_the_basename_only() -> None:
    assert matches(compile_pattern("ext4", "x"), key("kernel/fs/ext4/ext4"))
    assert not matches(compile_pattern("ext4", "x"), key("kernel/fs/ext4/ext4-extra"))
    assert not matches(compile_pattern("fs", "x"), key("kernel/fs/ext4/ext4"))


def test_dash_and_underscore_are_the_same() -> None:
    assert matches(compile_pattern("dm_mod", "x"), key("kernel/drivers/md/dm-mod"))
    assert matches(compile_pattern("usb-storage", "x"), key("kernel/drivers/usb/storage/usb_storage"))


def test_glob_in_basename() -> None:
    p = compile_pattern("raid[0-9]*", "x")
    assert matches(p, key("kernel/drivers/md/raid456"))
    assert not matches(p, key("kernel/drivers/md/raid-x"))


def test_path_suffix_starts_at_a_component_boundary() -> None:
    p = compile_pattern("fs/nfs/nfs", "x")
    assert matches(p, key("kernel/fs/nfs/nfs"))
    assert not matches(p, key("kernel/xfs/nfs/nfs"))


def test_leading_slash_anchors_at_kernel_dir() -> None:
    p = compile_pattern("/fs/nls/", "x")
    assert matches(p, key("kernel/fs/nls/nls_utf8"))
    assert not matches(p, key("kernel/drivers/fs/nls/x"))
    assert matches(compile_pattern("/updates/", "x"), key("updates/extra/raid7"))


def test_trailing_slash_selects_a_directory_at_any_depth() -> None:
    p = compile_pattern("crypto/", "x")
    assert matches(p, key("kernel/crypto/aes_generic"))
    assert matches(p, key("kernel/arch/x86/crypto/aesni-intel"))
    assert matches(p, key("kernel/crypto/async_tx/async_xor"))
    assert not matches(p, key("kernel/drivers/cryptox/foo"))
    assert not matches(p, key("kernel/fs/crypto"))  # a module named crypto is not the directory


def test_star_does_not_cross_directories() -> None:
    assert not matches(compile_pattern("/drivers/*", "x"), key("kernel/drivers/md/dm-mod"))
    assert matches(compile_pattern("/drivers/md/dm-*", "x"), key("kernel/drivers/md/dm-mod"))


def test_last_matching_pattern_wins() -> None:
    assert decide(["crypto/", "-/drivers/crypto/"], "kernel/drivers/crypto/ccp/ccp") == "-/drivers/crypto/"
    assert decide(["crypto/", "-/drivers/crypto/", "ccp"], "kernel/drivers/crypto/ccp/ccp") == "ccp"
    assert decide(["ext4", "-ext4"], "kernel/fs/ext4/ext4") == "-ext4"
    assert decide(["-ext4", "ext*"], "kernel/fs/ext4/ext4") == "ext*"
    assert decide(["xfs"], "kernel/fs/ext4/ext4") is None
