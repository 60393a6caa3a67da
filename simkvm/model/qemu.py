"""What each QEMU version does differently in pre-copy: the plan's ``host.qemu``.

The simulator follows QEMU 7.2's migration loop (read from the v7.2.0 source);
later versions change it only where listed here, each read in QEMU's source
(Debian's 7.2 and 10.0.2 trees; the versions in between from the commits named).

* 8.0: the pending size is split into an estimate and an exact count
  (``qemu_savevm_state_pending_estimate`` / ``_exact``, ``must_precopy`` /
  ``can_postcopy``; commit c8df4a7aef). ``migration_iteration_run`` asks for the
  exact count when ``must_precopy <= threshold_size``, and RAM syncs its bitmap
  there only when its remaining size is below ``threshold_size`` (the check
  c8df4a7aef dropped came back in 8.0-rc4, 28ef5339c3 "migration: fix
  ram_state_pending_exact()"), so a RAM-only pre-copy syncs when 7.2's
  ``ram_save_pending`` did, postcopy-ram on or off.
* 9.0: ``migration_iteration_run`` compares the whole pending size with the
  threshold before fetching the exact count (910c164736 "migration/postcopy: Fix
  high frequency sync", 9.0-rc1, after b0504edd40 had dropped RAM's own check
  again; in 10.0.2: ``if (pending_size < s->threshold_size)``) and
  ``ram_state_pending_exact`` syncs unconditionally: the same decision again.
  Completion is unchanged from 7.2 to 10.0: ``(!pending_size || pending_size <
  s->threshold_size) && can_switchover`` (7.2: iterate while ``pending_size &&
  pending_size >= threshold_size``); ``can_switchover`` is false only while
  ``switchover-ack`` waits for a device that asked for it.
* 8.0: the NBD server uncorks its socket after each reply (``nbd_trip``, bd2cd4a441 "nbd/server:
  push pending frames after sending reply"); before, a disk mirror copying scattered granules
  waited for the client's delayed ACK once per window of ops (simkvm/sim/mirror.py).
* 8.1: the ``dirty-limit`` capability (``vcpu-dirty-limit``); ``switchover-ack``
  (the source waits for the destination's ack; only devices that ask for it,
  VFIO, make it wait, so it changes nothing here).
* 8.2: ``avail-switchover-bandwidth`` replaces the measured bandwidth in
  ``threshold_size`` and ``expected_downtime`` (``migration_update_counters``).
* 8.2: the rate limit counts only the bytes the main channel has flushed
  ("migration: Remove QEMUFile from migration_transferred_bytes()", Juan Quintela,
  2023-10-25; 10.0.2's ``migration_transferred_bytes()`` reads
  ``mig_stats.qemu_file_transferred``, which ``qemu_fflush()`` alone adds to). The
  QEMUFile flushes when its 64 iovecs are used (``add_to_iovec``, ``MAX_IOV_SIZE``), two
  per normal page (the header in the file's buffer, the page itself by
  ``qemu_put_buffer_async``), or when its 32 KiB buffer is full (zero pages' headers). So
  ``migration_rate_exceeded()`` sees a window's budget spent only at the flush that
  crosses it: each 100 ms window carries its budget plus half a flush on average (about
  64 KiB), and ``migration_update_counters()`` measures the same bytes, so the
  threshold rises with it. 7.2 counted every byte as it was queued
  (``qemu_file_acct_rate_limit``). Measured (QEMU 10.0.2, campaigns q10p-q10t): the
  windows' bandwidth figure (libvirt's ``memory_bps``) is 55-87 KB a window above
  max-bandwidth at every link speed; QEMU 7.2's is max-bandwidth to 0.1 %.
* 9.0: ``zero-page-detection`` (default ``multifd``): with multifd the sender
  threads find zero pages and send them as offsets in their packets
  (``multifd_send_zero_page_detect``); before, the migration thread checked every
  page first (7.2 ``ram_save_target_page`` calls ``save_zero_page`` before
  ``ram_save_multifd_page``), so zero pages did not spread over the channels.
  ``mapped-ram`` is for file targets only.
* 9.1: old block migration (``-b``) and non-multifd compression removed: non-shared
  storage is a mirror over NBD in every version modelled (what libvirt drives).
* 9.2: with auto-converge a timer syncs the dirty bitmap every 5 s when no sync
  happened since its last tick, after the first pass (``cpu_throttle_dirty_sync_timer_tick``,
  migration/cpu-throttle.c): long iterations then count more syncs and throttle sooner.

Unchanged from 7.2 to 10.0.2 (read in 10.0.2's migration.c): ``threshold_size`` is the
bandwidth of the last >= 100 ms window x ``downtime-limit`` (``migration_update_counters``;
8.2 lets ``avail-switchover-bandwidth`` replace the bandwidth); the rate limit is lifted at
the stop (``migration_switchover_start``: ``migration_rate_set(RATE_LIMIT_DISABLED)``, 7.2:
``qemu_file_set_rate_limit(INT64_MAX)`` in ``migration_completion``) and ``ram_save_complete``
syncs once more and sends everything left.

Not modelled: the 2025 rewrite of the completion check (QEMU 10.1, Peter Xu,
"migration: Rewrite the migration complete detect logic": ``pending <= threshold``
instead of ``<``), which is newer than the versions known here.
"""
from __future__ import annotations

from dataclasses import dataclass

KNOWN = ("7.2", "8.0", "8.1", "8.2", "9.0", "9.1", "9.2", "10.0")
DIRTY_SYNC_TIMESLICE_S = 5.0  # CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS


def _key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def normalise(version: object) -> str:
    """'7.2', 7.2, '10', 10.0 -> the version string the table uses ('10.0'); unknown stays as given."""
    if isinstance(version, bool):
        return str(version)
    if isinstance(version, (int, float)):
        version = f"{float(version):.1f}"
    text = str(version).strip()
    if text.count(".") == 0 and text.isdigit():
        text += ".0"
    parts = text.split(".")
    if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]):
        text = f"{int(parts[0])}.{int(parts[1])}"
    return text


@dataclass(frozen=True)
class Qemu:
    """The behaviour of one QEMU version's migration loop, as the simulator needs it."""

    version: str

    @property
    def nbd_replies_uncorked(self) -> bool:
        return _key(self.version) >= (8, 0)

    @property
    def has_dirty_limit(self) -> bool:
        return _key(self.version) >= (8, 1)

    @property
    def has_avail_switchover_bandwidth(self) -> bool:
        return _key(self.version) >= (8, 2)

    @property
    def rate_limit_counts_flushed(self) -> bool:
        return _key(self.version) >= (8, 2)

    @property
    def multifd_finds_zero_pages(self) -> bool:
        return _key(self.version) >= (9, 0)

    @property
    def periodic_sync_s(self) -> float:
        """Seconds between auto-converge's forced syncs (0: none in this version)."""
        return DIRTY_SYNC_TIMESLICE_S if _key(self.version) >= (9, 2) else 0.0


def qemu(version: str) -> Qemu:
    return Qemu(normalise(version))
