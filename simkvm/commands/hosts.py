"""The VM and its two hosts on the command line: ``--domain``, ``--src``, ``--dst`` (migrate, preflight)."""
from __future__ import annotations

import argparse

from ..model.errors import UserError


def host_uri(value: str) -> str:
    """A libvirt URI, or a testbed host name ('a', 'b') as a shorthand for its URI."""
    if "://" in value or value.startswith(("qemu:", "test:")):
        return value
    from ..testbed.hosts import HOST_NAMES, Testbed

    if value in HOST_NAMES:
        return Testbed().uri(value)
    raise UserError(f"--src/--dst must be a libvirt URI like qemu+tcp://127.0.0.1:16591/system "
                    f"or a testbed host ({', '.join(HOST_NAMES)}), got {value!r}")


def add_domain_and_hosts(p: argparse.ArgumentParser) -> None:
    """--domain, --src, --dst: the VM and the two hosts (URIs, or testbed hosts a/b; see host_uri)."""
    p.add_argument("--domain", required=True, help="name of the running domain on the source")
    p.add_argument("--src", required=True, help="source libvirt URI (or testbed host 'a'/'b')")
    p.add_argument("--dst", required=True, help="destination libvirt URI (or testbed host 'a'/'b')")
