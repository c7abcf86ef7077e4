"""Sizes on the command line (``health --min-free``): binary units, as sizes are printed."""

from __future__ import annotations

import pytest

from sbbackup.cli.base import parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1 << 20),
        ("10G", 10 << 30),
        ("100T", 100 << 40),
        ("512MiB", 512 << 20),
        ("1.5g", 3 << 29),
        (" 2 kb ", 2048),
        ("1P", 1 << 50),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "10X", "1e9", "ten"])
def test_not_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)
