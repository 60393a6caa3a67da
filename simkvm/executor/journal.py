"""The executor's journal: what it is about to do, written before it does it.

A migration can be cut short at any instant (SIGKILL, a crash, the machine
losing power), and what it did must then be found again: the disk images it
created on the destination, whether libvirt's job had started, whether the
guest had stopped for the switchover. ``simkvm recover`` reads this journal
(:mod:`.recover`) together with what both hosts say now.

One JSON-lines file per migration, ``<state dir>/journal/<domain>-<time>-<pid>.jsonl``,
each record ``{"t": unix time, "step": ..., ...}``, flushed and fsynced
before the step it announces. The state dir is ``$SIMKVM_STATE_DIR``, else
``/var/lib/simkvm`` for root, else ``~/.local/state/simkvm``. URIs are stored
without passwords. The last record of a finished migration is ``done``.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .locate import redact_uri


def state_dir() -> Path:
    if os.environ.get("SIMKVM_STATE_DIR"):
        return Path(os.environ["SIMKVM_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/simkvm")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "simkvm"


def journal_dir() -> Path:
    return state_dir() / "journal"


class Journal:
    """Appends records to one migration's journal file (a no-op after an I/O error, said once in ``problem``)."""

    def __init__(self, domain: str, src_uri: str, dst_uri: str, directory: Path | None = None) -> None:
        self.directory = directory or journal_dir()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.path = self.directory / f"{domain}-{stamp}-{os.getpid()}.jsonl"
        self.problem: str | None = None
        self._file: Any = None
        self._lock = threading.Lock()  # the event-loop thread writes the switchover
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        except OSError as exc:
            self.problem = f"cannot write the journal {self.path}: {exc.strerror}"
        self.write("start", domain=domain, src_uri=redact_uri(src_uri), dst_uri=redact_uri(dst_uri), pid=os.getpid())

    def write(self, step: str, **data: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "step": step, **data}, default=str) + "\n"
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                self.problem = f"cannot write the journal {self.path}: {exc.strerror}"
                self._file = None

    @staticmethod
    def append(path: Path, step: str, **data: Any) -> None:
        """One record added to an existing journal (``simkvm recover`` marks what it settled)."""
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"t": round(time.time(), 3), "step": step, **data}, default=str) + "\n")
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class NoJournal:
    """Before run() opens the journal (an Execution driven step by step, as tests do)."""

    path = Path("/nonexistent/simkvm-journal")
    problem = None

    def write(self, step: str, **data: Any) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class JobRecord:
    """One journal read back: what the executor announced, in order."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    def steps(self) -> list[str]:
        return [r.get("step", "") for r in self.records]

    @property
    def finished(self) -> bool:
        return "done" in self.steps()

    @property
    def recovered(self) -> bool:
        return "recovered" in self.steps()

    @property
    def pid(self) -> int | None:
        return next((r.get("pid") for r in self.records if r.get("step") == "start"), None)

    @property
    def created_disks(self) -> list[str]:
        """Images the executor made on the destination (announced, then confirmed), minus those it removed."""
        made = [r["path"] for r in self.records if r.get("step") == "created_disk"]
        creating = [r["path"] for r in self.records if r.get("step") == "creating_disk"]
        # an image announced but never confirmed may exist (killed during the create): count it
        out = list(dict.fromkeys(made + creating))
        removed = {p for r in self.records if r.get("step") == "removed_disks" for p in r.get("paths", [])}
        return [p for p in out if p not in removed]

    @property
    def destination_defined_before(self) -> bool | None:
        """Whether the destination had a definition of the domain before the migration (None: not recorded)."""
        rec = self.last("destination_checked")
        return None if rec is None else bool(rec.get("defined"))

    @property
    def migration_started(self) -> bool:
        return "migrate3" in self.steps()

    def last(self, step: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r.get("step") == step), None)


def read(path: Path) -> JobRecord:
    job = JobRecord(path)
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a record torn by the kill: everything before it stands
            if isinstance(rec, dict):
                job.records.append(rec)
    except OSError:
        pass
    return job


def jobs_for(domain: str, directory: Path | None = None) -> list[JobRecord]:
    """Every journal of ``domain``, newest first."""
    directory = directory or journal_dir()
    if not directory.is_dir():
        return []
    paths = [p for p in directory.glob(f"{domain}-*.jsonl") if p.name[len(domain) + 1:][:8].isdigit()]
    return [read(p) for p in sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)]
