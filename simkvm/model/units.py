"""Human units in, SI out: the only place strings like "8GiB" become numbers.

Inside simkvm every quantity is bytes, seconds or bytes per second, with the
unit in the variable name (``memory_bytes``, ``downtime_s``,
``bandwidth_Bps``). The rule for sizes and rates is case-sensitive (README,
"Units"): ``B`` is a byte and ``b`` a bit (``10Gb/s`` = ``10Gbit/s`` = 1.25 GB/s,
``10GB/s`` = 10 GB/s); KiB/MiB/GiB are binary, kB/MB/GB decimal; a bare
``16G`` is 16 GiB, as in QEMU's ``-m 16G`` and libvirt's ``unit='G'``;
lower-case ``10gb/s`` or ``100mb/s`` is refused with a hint.
"""
from __future__ import annotations

import math
import re

from .errors import UserError

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
#: QEMU's target page on x86-64 (TARGET_PAGE_SIZE): the unit of the dirty bitmap and of a sent page.
PAGE_BYTES = 4096

# One rule for sizes and rates, case-sensitive like the SI and IEC symbols (and libvirt's units):
#   B = byte, b = bit;  K/k = kilo, M = mega, G = giga, T = tera, P = peta (upper case);
#   with "i" binary (KiB = 1024 B), without decimal (kB = KB = 1000 B);
#   a bare prefix means what QEMU's "-m 16G" and libvirt's unit='G' mean: binary (16G = 16 GiB).
# Lower-case m/g/t/p prefixes ("10gb/s", "100mb/s") are refused: nobody can tell bits from bytes there.
_PREFIX_POWER = {"": 0, "k": 1, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_UNIT = re.compile(r"^(?P<prefix>[kKMGTP]?)(?P<binary>i?)(?P<base>B|b|bit|bits|byte|bytes|)$")
_AMBIGUOUS = re.compile(r"^[mgtp]i?(B|b|bit|bits|byte|bytes)?$")


def _unit_factor(unit: str) -> tuple[float, bool] | None:
    """(bytes per unit, is a bit unit) for a size/rate unit without "/s"; None if it is not one."""
    m = _UNIT.match(unit)
    if not m or (m.group("binary") and not m.group("prefix")):
        return None
    prefix, binary, base = m.group("prefix"), bool(m.group("binary")), m.group("base")
    power = _PREFIX_POWER[prefix]
    if base == "":
        return float(1024 ** power), False  # bytes; a bare prefix is binary, as in QEMU and libvirt
    factor = float((1024 if binary else 1000) ** power)
    return (factor / 8, True) if base in ("b", "bit", "bits") else (factor, False)


def _ambiguous_hint(what: str, value: object, number: float, unit: str, *, rate: bool) -> str:
    letter = unit[0].upper()
    n = f"{number:g}"
    if rate:
        return (f"{what}: {value!r} is ambiguous: write {n}{letter}bit/s or {n}{letter}b/s (bits) or "
                f"{n}{letter}B/s (bytes), {n}{letter}iB/s (binary bytes); the prefix is upper case")
    return f"{what}: {value!r} is ambiguous: write {n}{letter}iB (binary) or {n}{letter}B (decimal bytes)"


_TIME_UNITS: dict[str, float] = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "secs": 1,
    "second": 1, "seconds": 1, "min": 60, "m": 60, "minute": 60, "minutes": 60, "h": 3600,
    "hour": 3600, "hours": 3600,
}
_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
_QUANTITY = re.compile(rf"^\s*{_NUMBER}\s*([A-Za-zµ/%]*)\s*$")


def _split(text: str, what: str, example: str) -> tuple[float, str]:
    match = _QUANTITY.match(text)
    if not match:
        raise UserError(f"{what} must be a number with a unit like {example!r}, got {text!r}")
    return float(match.group(1)), match.group(2)


def _number(value: object, what: str, example: str) -> tuple[float, str] | None:
    if isinstance(value, bool):
        raise UserError(f"{what} must be a quantity like {example!r}, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value), ""
    if not isinstance(value, str):
        raise UserError(f"{what} must be a quantity like {example!r}, got {value!r}")
    return None


def _finite(x: float, what: str, original: object, *, allow_zero: bool, allow_negative: bool = False) -> float:
    if not math.isfinite(x):
        raise UserError(f"{what} must be finite, got {original!r}")
    if x < 0 and not allow_negative:
        raise UserError(f"{what} must not be negative, got {original!r}")
    if x == 0 and not allow_zero:
        raise UserError(f"{what} must be > 0, got {original!r}")
    return x


def parse_size(value: object, what: str = "size", *, allow_zero: bool = True) -> float:
    """Bytes from "8GiB", "512MiB", "1.5TB", "16G" (= 16 GiB, as QEMU and libvirt read it) or a bare number of bytes."""
    plain = _number(value, what, "8GiB")
    if plain is None:
        number, unit = _split(str(value), what, "8GiB")
        if _AMBIGUOUS.match(unit):
            raise UserError(_ambiguous_hint(what, value, number, unit, rate=False))
        found = _unit_factor(unit)
        if found is None:
            raise UserError(f"{what}: unknown size unit {unit!r} in {value!r}; use B, KiB, MiB, GiB, TiB "
                            "(binary) or kB, MB, GB, TB (decimal)")
        if found[1]:
            prefix = unit[0] if unit[0] in "kKMGTP" else ""
            raise UserError(f"{what}: {value!r} is in bits (lower-case b); a size is in bytes (upper-case B): "
                            f"write {number:g}{prefix.upper()}iB (binary) or {number:g}{prefix}B (decimal)")
        plain = (number * found[0], "")
    return _finite(plain[0], what, value, allow_zero=allow_zero)


def parse_rate(value: object, what: str = "rate", *, allow_zero: bool = True) -> float:
    """Bytes per second from "1Gbit/s", "10Gb/s" (bits), "10GB/s" (bytes), "125MiB/s", "10Gbps" or a bare
    number of B/s."""
    plain = _number(value, what, "1Gbit/s")
    if plain is None:
        text = str(value).strip()
        per_second = text.endswith("/s")
        number, unit = _split(text[:-2] if per_second else text, what, "1Gbit/s")
        if not per_second and unit.endswith(("bps", "Bps")):  # 10Gbps (bits), 100MBps (bytes)
            unit, per_second = unit[:-2] + ("it" if unit[-3] == "b" else ""), True
        if _AMBIGUOUS.match(unit):
            raise UserError(_ambiguous_hint(what, value, number, unit, rate=True))
        found = _unit_factor(unit)
        if found is None:
            raise UserError(
                f"{what}: unknown rate unit {unit!r} in {value!r}; use e.g. 1Gbit/s, 10Gb/s (bits), "
                "125MiB/s, 50MB/s (bytes)")
        if unit and not per_second:
            raise UserError(f"{what} must be a rate ending in /s like '100MiB/s', got {value!r}")
        plain = (number * found[0], "")
    return _finite(plain[0], what, value, allow_zero=allow_zero)


def parse_duration(value: object, what: str = "duration", *, allow_zero: bool = True) -> float:
    """Seconds from "300ms", "2s", "1.5min" or a bare number of seconds."""
    plain = _number(value, what, "300ms")
    if plain is None:
        number, unit = _split(str(value), what, "300ms")
        key = unit.lower() if unit != "µs" else unit
        if key == "":
            key = "s"
        if key not in _TIME_UNITS:
            raise UserError(f"{what}: unknown time unit {unit!r} in {value!r}; use ms, s, min, h")
        plain = (number * _TIME_UNITS[key], "")
    return _finite(plain[0], what, value, allow_zero=allow_zero)


def parse_fraction(value: object, what: str = "fraction", *, allow_one: bool = True) -> float:
    """A share in [0, 1] from 0.3 or "30%"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number, _ = _split(value.strip()[:-1], what, "30%")
        x = number / 100
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        x = float(value)
    else:
        try:
            x = float(str(value))
        except ValueError:
            raise UserError(f"{what} must be a fraction like 0.3 or '30%', got {value!r}") from None
    if not (0.0 <= x <= 1.0) or (x == 1.0 and not allow_one):
        bound = "1" if allow_one else "1 (exclusive)"
        raise UserError(f"{what} must be between 0 and {bound}, got {value!r}")
    return x


_BIN = [("B", 1), ("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30), ("TiB", 2**40), ("PiB", 2**50)]


def _g3(x: float) -> str:
    """Three significant figures, never an exponent (a value past the largest unit keeps its digits)."""
    text = f"{x:.3g}"
    if "e+" in text:
        return f"{x:,.0f}"
    return f"{x:.3f}" if "e-" in text else text


def fmt_bytes(n: float) -> str:
    """Binary units for sizes, three significant figures: the next unit up once a value reaches 1000
    (``0.986 GiB``, never ``1.01e+03 MiB``)."""
    if n is None or not math.isfinite(n):
        return "-"
    for name, factor in _BIN:
        if abs(n) / factor < 999.5 or name == _BIN[-1][0]:
            return f"{n:.0f} B" if factor == 1 else f"{_g3(n / factor)} {name}"
    raise AssertionError("unreachable")


def fmt_rate(bps: float) -> str:
    if bps is None or not math.isfinite(bps):
        return "-"
    return fmt_bytes(bps) + "/s"


def fmt_duration(s: float) -> str:
    """ms below a second, s below two minutes, min below two hours, then h; three significant figures."""
    if s is None or not math.isfinite(s):
        return "-"
    if abs(s) < 0.9995:
        return f"{_g3(s * 1000)} ms"
    if abs(s) < 119.5:
        return f"{_g3(s)} s"
    if abs(s) < 7170:
        return f"{_g3(s / 60)} min"
    return f"{_g3(s / 3600)} h"


def fmt_bits(bps: float) -> str:
    """A rate as network people quote it: decimal bits per second (``1.92 Gbit/s``, ``400 Mbit/s``)."""
    if bps is None or not math.isfinite(bps):
        return "-"
    bits = bps * 8
    for name, factor in (("Tbit/s", 1e12), ("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3), ("bit/s", 1)):
        if abs(bits) >= factor * 0.9995 or factor == 1:
            return f"{_g3(bits / factor)} {name}"
    raise AssertionError("unreachable")
