"""Host profiles: what `simkvm calibrate` learned about one machine, as one YAML file.

Sections (SI numbers or human units):

* ``host:`` the plan's host constants (fixed costs, per-page and per-sync costs, ...);
* ``link: {capacity}`` the wire speed when QEMU lifts the rate limit for stop-and-copy;
* ``guest:`` what the testbed guest image does besides its workload:
  ``os_nonzero`` bytes of RAM non-zero beyond the plan's zero fraction (a correction,
  may be negative), ``kernel_reserve: true`` (the guest's kernel also keeps free, zero pages
  its memory report counts as used, growing with RAM: :mod:`simkvm.guestos`), ``background_dirty_rate`` / ``background_wss`` (its
  OS's own dirtying) and ``background_hot`` (pages it rewrites all the time);
* ``network: {reconvergence}`` what the network adds to the downtime before the
  VM's traffic reaches it again (measured with the testbed's network probe);
* ``fit:`` the calibration's record (runs used, residuals, the testbed guest image it measured:
  ``guest_image``, see :func:`check_guest_image`); never applied.

A plan's ``profile: FILE`` key loads ``host`` and ``link`` (the plan's own values win);
:func:`apply_profile` forces all three sections onto a plan, guest included, which is
what the validation campaign does after mapping a real guest onto the plan.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

from .guestos import os_nonzero_bytes
from .io import read_yaml
from .model import codec
from .model.errors import PlanError
from .model.plan import Host, Plan, VersionWarning
from .model.qemu import normalise as normalise_qemu
from .model.units import parse_rate, parse_size

SECTIONS = ("host", "link", "guest", "network", "fit")
LINK_KEYS = ("capacity", "efficiency")
GUEST_KEYS = ("os_nonzero", "kernel_reserve", "background_dirty_rate", "background_wss", "background_hot")
NETWORK_KEYS = ("reconvergence",)


def load_profile(profile: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """``{"host", "link", "guest", "fit"}`` from a file or mapping; a bare mapping is host constants."""
    if isinstance(profile, Mapping):
        data: Any = dict(profile)
        where = "profile"
    elif not isinstance(profile, (str, Path)):
        raise PlanError(f"profile must be a profile file's path or a mapping of sections, got {profile!r}")
    else:
        p = Path(profile)
        where = f"profile {p}"
        if not p.exists():
            raise PlanError(f"profile {str(p)!r} does not exist; make one with simkvm calibrate DIR -o {p}")
        data = read_yaml(p, "profile")
    if not isinstance(data, Mapping):
        raise PlanError(f"{where}: must be a mapping with a 'host:' section")
    if not any(k in data for k in SECTIONS):
        data = {"host": dict(data)}
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        raise PlanError(f"{where}: unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    notmap = [k for k in SECTIONS if data.get(k) is not None and not isinstance(data[k], Mapping)]
    if notmap:
        raise PlanError(f"{where}: section {notmap[0]!r} must be a mapping of keys, got {data[notmap[0]]!r}")
    prof = {k: dict(data.get(k) or {}) for k in SECTIONS}
    for section, known in (("link", LINK_KEYS), ("guest", GUEST_KEYS), ("network", NETWORK_KEYS)):
        bad = [k for k in prof[section] if k not in known]
        if bad:
            raise PlanError(f"{where}: unknown {section} key {bad[0]!r}; known: {', '.join(known)}")
    try:  # the host keys and units, checked against the plan schema now: one line if wrong
        codec.build(Host, prof["host"], "host")
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from None
    return prof


class GuestImageWarning(UserWarning):
    """A profile's guest constants were measured on another testbed guest image than the one running."""


def check_guest_image(profile: str | Path | Mapping[str, Any], image: str | None) -> str | None:
    """Warn (and return why) when ``profile`` was calibrated on another testbed guest image than ``image``.

    The guest section (its OS's non-zero bytes, its own dirtying) describes the guest image the calibration
    booted; after the image changes (a new kernel, a changed workload) a profile still loads but predicts
    another guest. Profiles from before the image was recorded (no ``fit.guest_image``) are not checked."""
    prof = profile if isinstance(profile, Mapping) and "fit" in profile else load_profile(profile)
    calibrated = (prof.get("fit") or {}).get("guest_image")
    if not calibrated or not image or calibrated == image:
        return None
    what = f"profile {profile}" if isinstance(profile, (str, Path)) else "the profile"
    why = (f"{what} was calibrated on testbed guest image {calibrated}, the testbed now boots {image}: its guest "
           f"constants describe another guest; recalibrate (simkvm campaign run + simkvm calibrate) or use a "
           f"profile calibrated on this image")
    warnings.warn(why, GuestImageWarning, stacklevel=2)
    return why


def apply_profile(plan: Plan, profile: Mapping[str, Any]) -> Plan:
    """``plan`` with every constant of the profile forced (capacity never below the plan's bandwidth)."""
    prof = load_profile(profile) if not {"host", "link", "guest", "network"} & set(profile) else profile
    host = prof.get("host") or {}
    # the plan's QEMU version stays: the profile only says which one it was calibrated on
    changes: dict[str, Any] = {f"host.{k}": v for k, v in host.items() if k != "qemu"}
    if host.get("qemu") is not None and normalise_qemu(host["qemu"]) != plan.host.qemu:
        warnings.warn(f"the profile was calibrated on QEMU {normalise_qemu(host['qemu'])}; this plan predicts "
                      f"QEMU {plan.host.qemu} (host.qemu): its constants may not carry over", VersionWarning,
                      stacklevel=2)
    link = prof.get("link") or {}
    if link.get("efficiency") is not None:
        changes["link.efficiency"] = link["efficiency"]
    guest = prof.get("guest") or {}
    if guest.get("os_nonzero") is not None or guest.get("kernel_reserve"):
        nonzero = os_nonzero_bytes(plan.vm.memory_bytes, float(guest.get("os_nonzero") or 0.0),
                                   bool(guest.get("kernel_reserve")))
        changes["vm.zero_fraction"] = min(1.0, max(0.0, plan.vm.zero_fraction - nonzero / plan.vm.memory_bytes))
    if guest.get("background_dirty_rate") is not None:
        changes["vm.background_dirty_rate"] = guest["background_dirty_rate"]
        changes["vm.background_wss"] = min(parse_size(guest.get("background_wss", 16 * 2**20)),
                                           plan.vm.memory_bytes)
    if guest.get("background_hot") is not None:
        changes["vm.background_hot"] = min(parse_size(guest["background_hot"]), plan.vm.memory_bytes)
    network = prof.get("network") or {}
    if network.get("reconvergence") is not None:
        changes["network.reconvergence"] = network["reconvergence"]
    plan = plan.with_(**changes) if changes else plan
    if link.get("capacity") is not None:
        cap = parse_rate(link["capacity"], "profile link.capacity")
        plan = plan.with_(**{"link.capacity": max(cap, plan.link.bandwidth_Bps)})
    return plan
