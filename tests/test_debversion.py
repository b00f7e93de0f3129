import itertools
import subprocess

import pytest

from mkosi_initrd.packages.debversion import compare, satisfies

VERSIONS = [
    "1.0", "1.0~rc1", "1.0-1", "1:0.9", "1.0a", "1.0+b1", "1.0.1", "252.39-1~deb12u2", "252.39-1",
    "1.0~", "1.0~~", "1.0-0", "1.0-1~bpo", "1.00", "1.0-1.1", "0.23.18.1", "2:1.02.185-2", "1.5.82",
]  # fmt: skip


def test_order_matches_dpkg_on_every_pair() -> None:
    pairs = list(itertools.combinations(VERSIONS, 2))
    # One dpkg call per pair would be slow; dpkg checks a whole chain through a shell loop.
    script = "".join(
        f"dpkg --compare-versions '{a}' lt '{b}' && echo -1 || "
        f"(dpkg --compare-versions '{a}' eq '{b}' && echo 0 || echo 1)\n"
        for a, b in pairs
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert [compare(a, b) for a, b in pairs] == [int(x) for x in out]


@pytest.mark.parametrize(
    ("version", "op", "wanted", "ok"),
    [
        ("252.39-1~deb12u2", ">=", "252", True),
        ("1.0~rc1", ">=", "1.0", False),
        ("1:1.0", ">", "9.9", True),
        ("2.2.1", "=", "2.2.1", True),
        ("2.2.1", "<", "2.2.1", False),
    ],
)
def test_satisfies(version: str, op: str, wanted: str, ok: bool) -> None:
    assert satisfies(version, op, wanted) is ok
