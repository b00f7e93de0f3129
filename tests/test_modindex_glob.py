"""modindex.glob_match agrees with fnmatchcase on alias-like patterns (it only avoids the regexes)."""

from __future__ import annotations

import random
from fnmatch import fnmatchcase

import pytest

from mkosi_initrd.kernel.index import glob_match


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("abc", "a*c"),
        ("ac", "a*c"),
        ("a", "a*a"),
        ("aa", "a*a"),
        ("abcbc", "a*bc*c"),
        ("", "*"),
        ("ab", "a*b*"),
        ("pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00", "pci:v00008086d*sv*sd*bc06sc*i*"),
        ("pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00", "pci:v00008086d*sv*sd*bc03sc*i*"),
        ("usb:v1D6Bp0002d0601dc09dsc00dp01ic09isc00ip00in00", "usb:v*p*d*dc*dsc*dp*ic09isc*ip*in*"),
        (
            "cpu:type:x86,ven0002fam0017mod0031:feature:,0000,0001,0081,",
            "cpu:type:x86,ven*fam*mod*:feature:*0081*",
        ),
        ("acpi:PNP0A03:", "acpi*:PNP0A0[38]:*"),
        ("of:Nfoo", "of:N?oo"),
    ],
)
def test_matches_like_fnmatchcase(name: str, pattern: str) -> None:
    assert glob_match(name, pattern) == fnmatchcase(name, pattern)


def test_random_star_patterns_match_like_fnmatchcase() -> None:
    rng = random.Random(3)
    for _ in range(20000):
        name = "".join(rng.choice("ab:") for _ in range(rng.randrange(0, 9)))
        pattern = "".join(rng.choice("ab:**") for _ in range(rng.randrange(0, 7)))
        assert glob_match(name, pattern) == fnmatchcase(name, pattern), (name, pattern)
