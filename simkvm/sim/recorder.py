"""The one place where the simulator writes down what happened.

Processes report events (a round began, a phase changed, a controller acted);
the recorder turns them into the rows of :mod:`simkvm.model.result`, so the
algorithms stay free of bookkeeping.
"""
from __future__ import annotations

from typing import Any

from ..model.result import Action, TimelinePoint


class Recorder:
    def __init__(self, keep_timeline: bool = True) -> None:
        self.rounds: list[dict[str, Any]] = []
        self.timeline: list[TimelinePoint] = []
        self.actions: list[Action] = []
        self.keep_timeline = keep_timeline

    def round_started(self, **row: Any) -> None:
        """A bitmap sync began memory iteration ``row['memory_iteration']``."""
        if self.rounds:
            prev = self.rounds[-1]
            prev["duration_s"] = row["time_elapsed_s"] - prev["time_elapsed_s"]
            prev["sent_bytes"] = row["memory_processed"] - prev["memory_processed"]
        row.setdefault("duration_s", 0.0)
        row.setdefault("sent_bytes", 0.0)
        self.rounds.append(row)

    def close_last_round(self, time_s: float, memory_processed: float) -> None:
        if self.rounds:
            last = self.rounds[-1]
            last["duration_s"] = time_s - last["time_elapsed_s"]
            last["sent_bytes"] = memory_processed - last["memory_processed"]

    def point(self, time_s: float, phase: str, iteration: int, mem_remaining: float, mem_processed: float,
              disk_remaining: float, disk_processed: float) -> None:
        if self.keep_timeline:
            self.timeline.append(TimelinePoint(time_s, phase, iteration, mem_remaining, mem_processed,
                                               disk_remaining, disk_processed))

    def action(self, time_s: float, action: str, value: float | None = None) -> None:
        self.actions.append(Action(time_s=time_s, action=action, value=value))
