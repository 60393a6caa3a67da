"""The units rule (README "Units"): case-sensitive b/B, binary bare prefixes, ambiguous case refused.

Oracles are the definitions: 1 Gbit/s = 1e9/8 B/s, 1 GB = 1e9 B, 1 GiB = 2**30 B, and QEMU's
``-m 16G`` = 16 GiB.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from simkvm.model.errors import UserError
from simkvm.model.units import fmt_bits, fmt_bytes, fmt_duration, parse_rate, parse_size

GiB = 2**30


@pytest.mark.parametrize("text,expected", [
    ("10Gb/s", 10e9 / 8), ("10Gbit/s", 10e9 / 8), ("10Gbps", 10e9 / 8), ("100Mbit/s", 100e6 / 8),
    ("10GB/s", 10e9), ("100MBps", 100e6), ("125MiB/s", 125 * 2**20), ("1Gibit/s", GiB / 8),
    ("1G/s", GiB), ("5kB/s", 5000), ("5kb/s", 625), ("1000", 1000), (1000, 1000),
])
def test_rates(text, expected):
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize("text,expected", [
    ("16G", 16 * GiB), ("16Gi", 16 * GiB), ("16GiB", 16 * GiB), ("16GB", 16e9), ("1.5TB", 1.5e12),
    ("64KiB", 65536), ("64kB", 64000), ("64KB", 64000), ("512M", 512 * 2**20), ("4096", 4096), ("1 byte", 1),
])
def test_sizes(text, expected):
    assert parse_size(text) == pytest.approx(expected)


@pytest.mark.parametrize("parse,text,hint", [
    (parse_rate, "10gb/s", "10Gb/s (bits) or 10GB/s (bytes)"),
    (parse_rate, "100mb/s", "100Mb/s (bits) or 100MB/s (bytes)"),
    (parse_rate, "10gbps", "10Gbit/s"),
    (parse_size, "16gb", "16GiB (binary) or 16GB"),
    (parse_size, "16g", "16GiB"),
    (parse_size, "16Gb", "in bits"),
    (parse_rate, "100MiB", "ending in /s"),
])
def test_ambiguous_case_is_refused_with_a_hint(parse, text, hint):
    with pytest.raises(UserError) as err:
        parse(text)
    assert hint in str(err.value)


def test_the_cli_refuses_lower_case_with_one_line():
    out = subprocess.run([sys.executable, "-m", "simkvm", "predict", "--memory", "4GiB", "--bandwidth", "10gb/s"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "ambiguous" in out.stderr


@pytest.mark.parametrize("n,text", [(1010 * 2**20, "0.986 GiB"), (1023, "0.999 KiB"), (512, "512 B"),
                                    (2**30, "1 GiB"), (3e18, "2,665 PiB")])
def test_bytes_take_the_next_unit_up(n, text):
    assert fmt_bytes(n) == text


@pytest.mark.parametrize("s,text", [(0.9996, "1 s"), (3440, "57.3 min"), (19200, "5.33 h"), (0.0185, "18.5 ms"),
                                    (1e7, "2,778 h")])
def test_durations_take_the_next_unit_up(s, text):
    assert fmt_duration(s) == text


def test_no_exponent_anywhere():
    for k in range(-6, 22):
        for m in (1, 3.3, 9.99):
            x = m * 10**k
            assert "e" not in fmt_bytes(x) and "e" not in fmt_duration(x) and "e" not in fmt_bits(x)
    assert fmt_bits(229 * 2**20) == "1.92 Gbit/s"
