"""Human units in, SI out: the only place strings like "8GiB" become numbers.

Inside simkvm every quantity is bytes, seconds or bytes per second, with the
unit in the variable name (``memory_bytes``, ``downtime_s``,
``bandwidth_Bps``). Rates in bits are decimal (1 Gbit/s = 125,000,000 B/s, as
network people mean it); KiB/MiB/GiB are binary, kB/MB/GB decimal.
"""
from __future__ import annotations

import math
import re

from .errors import UserError

_SIZE_UNITS: dict[str, float] = {
    "": 1, "b": 1, "byte": 1, "bytes": 1,
    "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
}
_BIT_UNITS: dict[str, float] = {
    "bit": 1 / 8, "bits": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8,
    "kibit": 2**10 / 8, "mibit": 2**20 / 8, "gibit": 2**30 / 8,
    "bps": 1 / 8, "kbps": 1e3 / 8, "mbps": 1e6 / 8, "gbps": 1e9 / 8, "tbps": 1e12 / 8,
}
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
    """Bytes from "8GiB", "512MiB", "1.5TB" or a bare number of bytes."""
    plain = _number(value, what, "8GiB")
    if plain is None:
        number, unit = _split(str(value), what, "8GiB")
        key = unit.lower()
        if key not in _SIZE_UNITS:
            raise UserError(f"{what}: unknown size unit {unit!r} in {value!r}; use B, KiB, MiB, GiB, TiB, kB, MB, GB")
        plain = (number * _SIZE_UNITS[key], "")
    return _finite(plain[0], what, value, allow_zero=allow_zero)


def parse_rate(value: object, what: str = "rate", *, allow_zero: bool = True) -> float:
    """Bytes per second from "1Gbit/s", "125MiB/s", "10Gbps" or a bare number of B/s."""
    plain = _number(value, what, "1Gbit/s")
    if plain is None:
        text = str(value).strip()
        if text.endswith("/s"):
            text = text[:-2]
        number, unit = _split(text, what, "1Gbit/s")
        key = unit.lower()
        if key in _BIT_UNITS and unit not in ("Mb", "Gb", "Kb", "Tb"):
            factor = _BIT_UNITS[key]
        elif unit in ("Mb", "Gb", "Kb", "Tb", "kb"):
            factor = _SIZE_UNITS[unit.lower()] / 8  # lower-case b is a bit, as in networking
        elif key in _SIZE_UNITS:
            factor = _SIZE_UNITS[key]
        else:
            raise UserError(
                f"{what}: unknown rate unit {unit!r} in {value!r}; use e.g. 1Gbit/s, 100Mbit/s, 125MiB/s, 50MB/s"
            )
        if not str(value).strip().endswith("/s") and key not in ("bps", "kbps", "mbps", "gbps", "tbps") and key:
            raise UserError(f"{what} must be a rate ending in /s like '100MiB/s', got {value!r}")
        plain = (number * factor, "")
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


_BIN = [("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)]


def fmt_bytes(n: float) -> str:
    """Binary units for sizes, three significant figures."""
    if n is None or not math.isfinite(n):
        return "-"
    for name, factor in _BIN:
        if abs(n) >= factor:
            return f"{n / factor:.3g} {name}"
    return f"{n:.0f} B"


def fmt_rate(bps: float) -> str:
    if bps is None or not math.isfinite(bps):
        return "-"
    return fmt_bytes(bps) + "/s"


def fmt_duration(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if abs(s) < 1:
        return f"{s * 1000:.3g} ms"
    if abs(s) < 120:
        return f"{s:.3g} s"
    return f"{s / 60:.3g} min"
