"""Orchestration policies: what Nova, oVirt, KubeVirt and Proxmox do to a migration that drags on.

Each policy is one small class, read from its project's source (each class names the
file it follows). It never touches QEMU or the simulator
directly: it looks at a :class:`Snapshot` every ``poll_interval_s`` and
returns :class:`~simkvm.model.result.Action` requests. The simulator's controller
process and the real executor's monitor both feed it and carry its actions
out, so there is one implementation of each policy, not two.

Writing a new policy::

    @register("my-policy")
    class Mine(Policy):
        poll_interval_s = 1.0
        def observe(self, s: Snapshot) -> list[Action]:
            if s.elapsed_s > 60 and not s.in_postcopy:
                return [Action(s.elapsed_s, "start_postcopy")]
            return []

Options given in the plan (``policy: {name: my-policy, foo: 1}``) arrive as
keyword arguments of ``__init__``; unknown ones are refused.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .model.errors import PlanError
from .model.limits import MAX_TIME_S
from .model.result import Action
from .model.units import GiB, parse_duration

if TYPE_CHECKING:  # pragma: no cover
    from .model.plan import Plan, PolicySpec



@dataclass
class Snapshot:
    """What a controller can see of a running migration (libvirt job stats, basically)."""

    elapsed_s: float  # since the migration started
    iteration: int  # memory_iteration (dirty-sync-count), 0 before RAM migration starts
    memory_remaining: float
    data_remaining: float  # RAM + disk
    memory_total: float
    in_postcopy: bool = False
    paused: bool = False
    max_downtime_s: float = 0.3


class Policy:
    """Base: a controller that does nothing (QEMU alone)."""

    name = "qemu"
    poll_interval_s: float = math.inf

    def __init__(self, plan: "Plan") -> None:
        self.plan = plan

    def configure(self, plan: "Plan") -> "Plan":
        """Settings the orchestrator applies before starting (aids, initial downtime)."""
        return plan

    def start(self, elapsed_s: float) -> list[Action]:
        """Actions at the start of the job."""
        return []

    def observe(self, s: Snapshot) -> list[Action]:
        return []


POLICIES: dict[str, type[Policy]] = {}


def register(name: str) -> Callable[[type[Policy]], type[Policy]]:
    def deco(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICIES[name] = cls
        return cls

    return deco


register("qemu")(Policy)


def make_policy(plan: "Plan") -> Policy:
    spec = plan.policy
    cls = POLICIES[spec.name]
    return cls(plan, **_converted(cls, spec)) if spec.params else cls(plan)


def validate_policy(spec: "PolicySpec") -> None:
    if spec.name not in POLICIES:
        raise PlanError(f"policy must be one of {', '.join(sorted(POLICIES))}; got {spec.name!r}")
    _converted(POLICIES[spec.name], spec)


#: Whole-number options (Nova's downtime steps) stay small: each is a step the policy keeps.
MAX_POLICY_STEPS = 1000


def _converted(cls: type[Policy], spec: "PolicySpec") -> dict[str, Any]:
    """The plan's options for ``cls``, each checked against the type its ``__init__`` declares:
    durations (human units allowed), other numbers finite and >= 0, whole numbers, true/false, names."""
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "plan")]
    out = {}
    for key, value in spec.params:
        if key not in allowed:
            raise PlanError(f"policy {spec.name!r} has no option {key!r}; options: {', '.join(allowed) or 'none'}")
        where, kind = f"policy.{key}", str(params[key].annotation).strip("'\"")
        if kind == "bool":
            if not isinstance(value, bool):
                raise PlanError(f"{where} must be true or false, got {value!r}")
        elif kind == "str":
            if not isinstance(value, str):
                raise PlanError(f"{where} must be a name, got {value!r}")
        elif kind == "int":
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value != int(value) or not 0 <= value <= MAX_POLICY_STEPS):
                raise PlanError(f"{where} must be a whole number from 0 to {MAX_POLICY_STEPS}, got {value!r}")
            value = int(value)
        else:  # a float: a duration (downtime, timeouts) or seconds per GiB
            if key.endswith("_s") or key in ("downtime", "progress_timeout"):
                value = parse_duration(value, where)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise PlanError(f"{where} must be a number >= 0, got {value!r}")
            if value > MAX_TIME_S:
                raise PlanError(f"{where} must be at most {MAX_TIME_S:g} (a week), got {value!r}")
            value = float(value)
        out[key] = value
    return out


def _data_gib(plan: "Plan", *, floor_gib: float = 0.0) -> list[float]:
    sizes = [plan.vm.memory_bytes / GiB] + [d.size_bytes / GiB for d in plan.migrated_disks]
    return [max(x, floor_gib) for x in sizes]


# ----------------------------------------------------------------- Nova
@register("nova")
class Nova(Policy):
    """nova/virt/libvirt/migration.py: downtime steps on the wall clock, completion timeout."""

    poll_interval_s = 0.5

    def __init__(self, plan: "Plan", downtime: float = 0.5, steps: int = 10, delay: float = 75,
                 completion_timeout: float = 800, timeout_action: str = "abort",
                 permit_post_copy: bool = False, permit_auto_converge: bool = False) -> None:
        super().__init__(plan)
        if timeout_action not in ("abort", "force_complete"):
            raise PlanError("policy nova: timeout_action must be abort or force_complete")
        downtime_ms = max(downtime * 1000, 100)  # nova's minimum live_migration_downtime is 100 ms
        steps = max(int(steps), 3)
        data_gb = sum(_data_gib(plan, floor_gib=2))
        delay_s = int(delay * data_gb)
        base = downtime_ms / steps
        offset = (downtime_ms - base) / steps
        # (time, downtime) pairs: i = 0 .. steps; libvirt takes whole milliseconds
        self.steps = [(delay_s * i, int(base + offset * i) / 1000) for i in range(steps + 1)]
        self.completion_timeout_s = int(completion_timeout * data_gb)
        self.timeout_action = timeout_action
        self.permit_post_copy = permit_post_copy
        self.permit_auto_converge = permit_auto_converge
        self._applied = -1
        self._timed_out = False

    def configure(self, plan: "Plan") -> "Plan":
        changes: dict[str, Any] = {}
        if self.permit_post_copy:
            changes["aids.postcopy.enabled"] = True
        elif self.permit_auto_converge:  # nova: auto-converge only when post-copy is not in use
            changes["aids.auto_converge.enabled"] = True
        return plan.with_(**changes) if changes else plan

    def start(self, elapsed_s: float) -> list[Action]:
        self._applied = 0
        return [Action(elapsed_s, "set_downtime", self.steps[0][1])]

    def observe(self, s: Snapshot) -> list[Action]:
        actions = []
        current = max((i for i, (t, _) in enumerate(self.steps) if t < s.elapsed_s), default=0)
        if current > self._applied:
            self._applied = current
            actions.append(Action(s.elapsed_s, "set_downtime", self.steps[current][1]))
        if (self.completion_timeout_s and not s.in_postcopy and not self._timed_out
                and s.elapsed_s > self.completion_timeout_s):
            self._timed_out = True
            if self.timeout_action == "abort":
                actions.append(Action(s.elapsed_s, "abort"))
            elif self.permit_post_copy:
                actions.append(Action(s.elapsed_s, "start_postcopy"))
            else:
                actions.append(Action(s.elapsed_s, "pause"))
        return actions


# ----------------------------------------------------------------- oVirt
_OVIRT = {
    # name: (initial downtime ms, [(iteration limit, action, value)], aids)
    "minimal-downtime": (100, [(1, "set_downtime", 150), (2, "set_downtime", 200), (3, "set_downtime", 300),
                               (4, "set_downtime", 400), (6, "set_downtime", 500), (-1, "abort", None)],
                         {"aids.auto_converge.enabled": True}),
    "suspend-workload": (100, [(1, "set_downtime", 150), (2, "set_downtime", 200), (3, "set_downtime", 300),
                               (4, "set_downtime", 400), (6, "set_downtime", 500), (8, "set_downtime", 5000),
                               (-1, "abort", None)],
                         {"aids.auto_converge.enabled": True}),
    "post-copy": (100, [(1, "set_downtime", 150), (2, "set_downtime", 200), (3, "start_postcopy", None),
                        (-1, "abort", None)],
                  {"aids.postcopy.enabled": True}),
    "very-large-vm": (300, [(1, "set_downtime", 400), (2, "set_downtime", 500), (3, "set_downtime", 700),
                            (4, "set_downtime", 1000), (6, "set_downtime", 1500), (8, "set_downtime", 5000),
                            (-1, "abort", None)], {}),
}


class OVirt(Policy):
    """vdsm's convergence schedule: one step per 10 s poll once iterations grew past its limit."""

    poll_interval_s = 10.0
    schedule = "minimal-downtime"

    def __init__(self, plan: "Plan") -> None:
        super().__init__(plan)
        init, steps, self._aids = _OVIRT[self.schedule]
        self.initial_downtime_s = init / 1000
        self.pending = [(limit, action, None if v is None else v / 1000) for limit, action, v in steps]
        self._first_iteration: int | None = None
        self._last_iteration = 0

    def configure(self, plan: "Plan") -> "Plan":
        return plan.with_(**self._aids) if self._aids else plan

    def start(self, elapsed_s: float) -> list[Action]:
        return [Action(elapsed_s, "set_downtime", self.initial_downtime_s)]

    def observe(self, s: Snapshot) -> list[Action]:
        if s.iteration <= 0 or s.in_postcopy:
            return []
        if self._first_iteration is None:
            self._first_iteration = s.iteration
        grew = s.iteration > self._last_iteration
        self._last_iteration = s.iteration
        relative = s.iteration - self._first_iteration
        if not grew or not self.pending:
            return []
        limit, action, value = self.pending[0]
        if limit == -1 or relative > limit:
            self.pending.pop(0)
            return [Action(s.elapsed_s, action, value)]
        return []


for _name in _OVIRT:
    register(f"ovirt-{_name}")(type(f"OVirt_{_name.replace('-', '_')}", (OVirt,), {"schedule": _name}))


# --------------------------------------------------------------- KubeVirt
@register("kubevirt")
class KubeVirt(Policy):
    """virt-launcher's migration monitor: completion and progress timeouts every 400 ms."""

    poll_interval_s = 0.4

    def __init__(self, plan: "Plan", completion_timeout_per_gib: float = 150, progress_timeout: float = 150,
                 allow_post_copy: bool = False, allow_workload_disruption: bool = False) -> None:
        super().__init__(plan)
        self.acceptable_s = completion_timeout_per_gib * math.ceil(sum(_data_gib(plan)))
        self.progress_timeout_s = progress_timeout
        self.allow_post_copy = allow_post_copy
        self.allow_workload_disruption = allow_workload_disruption
        self._lowest = math.inf
        self._progress_at = 0.0
        self._paused = False
        self._gave_up = False  # abort or post-copy asked for: once (an abort during setup takes effect after it)

    def configure(self, plan: "Plan") -> "Plan":
        return plan.with_(**{"aids.postcopy.enabled": True}) if self.allow_post_copy else plan

    def observe(self, s: Snapshot) -> list[Action]:
        if s.in_postcopy or self._gave_up:
            return []
        if s.data_remaining < self._lowest:
            self._lowest = s.data_remaining
            self._progress_at = s.elapsed_s
        if s.elapsed_s > self.acceptable_s:
            if self.allow_workload_disruption and not self._paused and not self.allow_post_copy:
                self._paused = True
                self.acceptable_s *= 2
                return [Action(s.elapsed_s, "pause")]
            self._gave_up = True
            return [Action(s.elapsed_s, "start_postcopy" if self.allow_post_copy else "abort")]
        if s.elapsed_s - self._progress_at > self.progress_timeout_s:
            self._gave_up = True
            return [Action(s.elapsed_s, "abort")]
        return []


# ---------------------------------------------------------------- Proxmox
@register("proxmox")
class Proxmox(Policy):
    """qemu-server's QemuMigrate: auto-converge + XBZRLE, downtime doubles when memory grows."""

    poll_interval_s = 1.0

    def __init__(self, plan: "Plan") -> None:
        super().__init__(plan)
        self.downtime_s = 0.1
        self._last_remaining: float | None = None
        self._counter = 0

    def configure(self, plan: "Plan") -> "Plan":
        cache = 2 ** int(math.log2(max(plan.vm.memory_bytes / 10, 4096)))
        return plan.with_(**{"aids.auto_converge.enabled": True, "aids.xbzrle.enabled": True,
                               "aids.xbzrle.cache_size": cache})

    def start(self, elapsed_s: float) -> list[Action]:
        return [Action(elapsed_s, "set_downtime", self.downtime_s)]

    def observe(self, s: Snapshot) -> list[Action]:
        if s.iteration <= 0:
            return []
        rem = s.memory_remaining
        if self._last_remaining is not None and (rem > self._last_remaining or rem == 0):
            self._counter += 1
        self._last_remaining = rem
        if self._counter > 5:
            self._counter = 0
            self.downtime_s = min(self.downtime_s * 2, 2000.0)
            return [Action(s.elapsed_s, "set_downtime", self.downtime_s)]
        return []
