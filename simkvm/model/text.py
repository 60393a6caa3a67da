"""Reading a file a user names: small, regular, UTF-8, or one line saying which of these it is not.

Plans, sweep specs, campaigns, profiles and result files are all read through
:func:`read_text`, so a directory, a FIFO, /dev/zero, a multi-gigabyte file or
a binary one is refused before anything parses it.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import UserError

#: Plans, specs, campaigns and profiles are kilobytes of YAML, which PyYAML reads at ~2 MiB/s and
#: ~30 us a node: the caps keep any refusal under a second. Result files (JSON, read in C) can be larger.
MAX_YAML_BYTES = 1 * 2**20
MAX_YAML_NODES = 10_000
MAX_JSON_BYTES = 64 * 2**20
#: YAML nesting deeper than this is no plan (a plan is 4 deep); PyYAML itself recurses ~3 frames a level.
MAX_YAML_DEPTH = 64
#: Aliases (*name) in one YAML document: each one can multiply what a reader walks (a "billion laughs").
MAX_YAML_ALIASES = 100


def read_text(path: str | Path, what: str = "plan file", limit: int = MAX_YAML_BYTES) -> str:
    """A small UTF-8 text file's content; one UserError line if it is missing, not a regular file
    (a directory, a FIFO, a device such as /dev/zero), larger than ``limit`` bytes, or not UTF-8."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except FileNotFoundError:
        raise UserError(f"{what} {str(p)!r} does not exist") from None
    except OSError as exc:
        raise UserError(f"{what} {str(p)!r} cannot be read: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise UserError(f"{what} {str(p)!r} is {kind}; give a {what} (a YAML or JSON text file)")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > limit:
            raise UserError(f"{what} {str(p)!r} is {st.st_size:,} bytes; a {what} is at most {limit // 2**20} MiB")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{what} {str(p)!r} is larger than {limit // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{what} {str(p)!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                        f"save it as UTF-8") from None
