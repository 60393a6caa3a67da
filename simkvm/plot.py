"""Figures people would rather look at than read; every one titled, labelled, with units.

All functions return a matplotlib Figure and never call ``show``: the CLI
saves them (``--plot``), notebooks display them, ``experiments/fig_*.py``
regenerate the ones in the README and notebooks. Outside a Jupyter kernel the
Agg backend is used, so a headless machine (CI, ssh) never needs a display.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any, Literal, Mapping, Sequence

import matplotlib
import numpy as np

# Agg unless someone already chose (MPLBACKEND, as ipykernel sets it) or we run inside IPython/Jupyter,
# where the inline backend is what the reader wants.
if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules and "IPython" not in sys.modules:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .model.codec import key_of  # noqa: E402
from .model.result import Result  # noqa: E402
from .model.units import GiB, MiB, fmt_bits, fmt_duration  # noqa: E402

GBIT_Bps = 1e9 / 8

#: The classic pre-copy ratio: a column :func:`convergence_map` derives from a sweep table.
RATIO = "dirty_rate/bandwidth"
# Sweep table columns: the plan key with its field's unit suffix (simkvm.sweep).
DIRTY_RATE = "workload.memory.dirty_rate_Bps"
BANDWIDTH = "link.bandwidth_Bps"
DOWNTIME = "migration.max_downtime_s"

#: How a column is shown: its last dotted part -> (label, display unit, SI value of one display unit).
#: Sweep tables hold SI numbers named by plan key, so this is the only unit conversion the plots need.
QUANTITIES: dict[str, tuple[str, str, float]] = {
    "dirty_rate": ("dirty rate", "MiB/s", MiB),
    "bandwidth": ("bandwidth", "Gbit/s", GBIT_Bps),
    "capacity": ("link capacity", "Gbit/s", GBIT_Bps),
    "max_downtime": ("max downtime", "ms", 1e-3),
    "wss": ("working set size", "GiB", GiB),
    "memory": ("memory", "GiB", GiB),
    "size": ("disk size", "GiB", GiB),
    "allocated": ("disk allocated", "GiB", GiB),
    "write_rate": ("disk write rate", "MiB/s", MiB),
    "zero_fraction": ("zero pages", "%", 0.01),
    "total_time_s": ("total time", "s", 1.0),
    "precopy_time_s": ("RAM pre-copy time", "s", 1.0),
    "downtime_s": ("downtime", "ms", 1e-3),
    "service_interruption_s": ("service interruption", "ms", 1e-3),
    "iterations": ("iterations", "count", 1.0),
    "ram_transferred_bytes": ("RAM transferred", "GiB", GiB),
    "total_transferred_bytes": ("bytes transferred", "GiB", GiB),
    RATIO: ("dirty rate / bandwidth", "dimensionless", 1.0),
}


def quantity(column: str) -> tuple[str, str, float]:
    """(label, unit, scale) for a sweep column; unknown columns are shown as they are, unit '-'."""
    if column in QUANTITIES:
        return QUANTITIES[column]
    leaf = column.rsplit(".", 1)[-1]
    if leaf not in QUANTITIES and "." in column:  # an axis column: the plan key's leaf without its unit suffix
        leaf = key_of(leaf)
    return QUANTITIES.get(leaf, (leaf.replace("_", " "), "-", 1.0))


def axis_label(column: str) -> str:
    label, unit, _ = quantity(column)
    return f"{label} [{unit}]"


def save(fig, path: str) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# ------------------------------------------------------------------ one migration
#: Colour of each controller action on a timeline (one legend entry per kind).
_ACTION_COLOURS = {"set_downtime": "tab:green", "throttle": "tab:orange", "start_postcopy": "tab:purple",
                   "pause": "tab:brown", "abort": "black", "set_bandwidth": "tab:cyan"}


def _action_text(action: str, value: float | None) -> str:
    """Short, unit-bearing labels: 'downtime 150 ms' reads better than 'set_downtime 0.15'."""
    if action == "set_downtime" and value is not None:
        return f"downtime {value * 1000:.0f} ms"
    if action == "throttle" and value is not None:
        return f"throttle {value * 100:.0f} %"
    if action == "set_bandwidth" and value is not None:
        return f"bandwidth {value * 8 / 1e9:.3g} Gbit/s"
    if action == "start_postcopy":
        return "post-copy"
    return action.replace("_", " ") + ("" if value is None else f" {value:g}")


#: Time axes in the unit a reader thinks in: seconds up to 10 minutes, then minutes, then hours.
_TIME_UNITS = (("s", 1.0, 600.0), ("min", 60.0, 3 * 3600.0), ("h", 3600.0, math.inf))


def time_unit(longest_s: float) -> tuple[str, float]:
    """(unit, seconds per unit) for a time axis whose longest value is ``longest_s``."""
    for name, scale, up_to in _TIME_UNITS:
        if longest_s <= up_to:
            return name, scale
    raise AssertionError("unreachable")


def size_unit(largest_bytes: float) -> tuple[str, float]:
    """(unit, bytes per unit) for remaining data: GiB above 4 GiB, else MiB."""
    return ("GiB", GiB) if largest_bytes > 4 * GiB else ("MiB", MiB)


def _largest_remaining(result: Result) -> float:
    tl = result.timeline
    return float(max(tl["memory_remaining"].max(), tl["disk_remaining"].max())) if len(tl) else 0.0


def timeline(result: Result, *, label: str | None = None, ax=None, color: str | None = None,
             unit: str | None = None, time: str | None = None, downtime_color: str = "red"):
    """Remaining RAM and disk vs time, iterations marked, downtime shaded red, post-copy shaded
    purple, controller actions as dotted lines.

    When this call owns the figure and the result has actions, a thin lane above the plot
    lists them (one row per kind, each with its value, e.g. "150 ms", "30 %"), so a policy
    that acts twenty times does not bury the curves in text. RAM is drawn from the first
    pre-copy sync on (before it nothing is in the bitmap yet). ``unit`` is ``MiB`` or ``GiB``
    (default: GiB above 4 GiB); ``time`` is ``s``, ``min`` or ``h`` (default: by the length of the
    migration). Two results on one ``ax`` must be drawn with the same units: :func:`comparison`
    does that.
    """
    fig = lane = None
    if ax is None:
        if result.actions:
            fig, (lane, ax) = plt.subplots(2, 1, sharex=True, figsize=(10, 6),
                                           gridspec_kw={"height_ratios": [1, 4], "hspace": 0.06})
        else:
            fig, ax = plt.subplots(figsize=(10, 4.8))
    tl = result.timeline
    name = label or ("predicted" if result.source == "simulated" else "measured")
    unit = unit or size_unit(_largest_remaining(result))[0]
    scale = GiB if unit == "GiB" else MiB
    tname = time or time_unit(result.total_time_s)[0]
    tscale = {n: s for n, s, _ in _TIME_UNITS}[tname]
    if len(tl):
        ram = tl[tl["memory_iteration"] >= 1]
        line, = ax.plot(ram["time_s"] / tscale, ram["memory_remaining"] / scale, color=color, marker=".",
                        markersize=4, label=f"RAM remaining ({name})")
        color = color or line.get_color()
        if tl["disk_remaining"].max() > 0:
            ax.plot(tl["time_s"] / tscale, tl["disk_remaining"] / scale, linestyle="--", color=color,
                    label=f"disk mirror remaining ({name})")
    rounds = result.rounds
    for i, t in enumerate(rounds["time_elapsed_s"]):
        ax.axvline(t / tscale, color=color or "grey", alpha=0.15, linewidth=0.8,
                   label="memory iteration (bitmap sync)" if i == 0 and fig is not None else None)
    stop, postcopy_start, end = _switch_times(result)
    if result.downtime_s > 0 and stop is not None:
        ax.axvspan(stop / tscale, (stop + result.downtime_s) / tscale, color=downtime_color, alpha=0.3,
                   label=f"downtime {fmt_duration(result.downtime_s)} ({name})")
    if postcopy_start is not None and end is not None and end > postcopy_start:
        ax.axvspan(postcopy_start / tscale, end / tscale, color="tab:purple", alpha=0.15,
                   label=f"post-copy: VM runs on destination ({name})")
    for a in result.actions:
        ax.axvline(a.time_s / tscale, color=_ACTION_COLOURS.get(a.action, "tab:gray"), linestyle=":", linewidth=1.1)
    if lane is not None:
        _action_lane(lane, result.actions, tscale)
    ax.set_xlabel(f"time since start of migration [{tname}]")
    ax.set_ylabel(f"remaining [{unit}]")
    ax.set_ylim(bottom=0)
    verdict = "converged" if result.outcome == "converged" else result.outcome.replace("_", " ")
    policy = result.meta.get("policy")
    (lane or ax).set_title(
        f"Migration timeline{' (' + str(policy) + ')' if policy and policy != 'qemu' else ''}: "
        f"{verdict}, {result.iterations} iterations, total {fmt_duration(result.total_time_s)}, "
        f"downtime {fmt_duration(result.downtime_s)}")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    ax.grid(alpha=0.3)
    return fig or ax.figure


def comparison(first: Result, second: Result, *, labels: tuple[str, str] | None = None, title: str | None = None):
    """Two results on one axis in one unit (the timeline's: GiB above 4 GiB, minutes past 10 min), each
    in its own colour, downtime included. Labels default to what each result is ("predicted",
    "measured"); two of a kind are told apart ("predicted 1", "predicted 2")."""
    kinds = ["predicted" if r.source == "simulated" else "measured" for r in (first, second)]
    if labels is None:
        labels = (f"{kinds[0]} 1", f"{kinds[1]} 2") if kinds[0] == kinds[1] else (kinds[0], kinds[1])
    unit, _ = size_unit(max(_largest_remaining(first), _largest_remaining(second)))
    tname, _ = time_unit(max(first.total_time_s, second.total_time_s))
    fig, ax = plt.subplots(figsize=(10, 5))
    for result, label, colour, down in ((first, labels[0], "tab:blue", "tab:cyan"),
                                        (second, labels[1], "tab:red", "tab:orange")):
        timeline(result, label=label, ax=ax, color=colour, unit=unit, time=tname, downtime_color=down)
    name = (first.plan or {}).get("name") or (second.plan or {}).get("name")
    ax.set_title(title or (f"{labels[0]} vs {labels[1]}{': ' + name if name else ''} (total "
                           f"{fmt_duration(first.total_time_s)} / {fmt_duration(second.total_time_s)}; "
                           f"{first.iterations} / {second.iterations} iterations)"), fontsize=10)
    ax.set_xlabel(f"time since preparation started [{tname}]")
    return fig


def _action_lane(lane, actions: Sequence[Any], tscale: float = 1.0) -> None:
    """One row per kind of action, a marker at each, its value written above it unless the
    previous label of that row is too close (the marker still shows it happened)."""
    kinds = list(dict.fromkeys(a.action for a in actions))
    t_all = [a.time_s for a in actions]
    span = max(max(t_all) - min(t_all), 1e-9)
    last_label: dict[str, float] = {}
    for a in actions:
        row = kinds.index(a.action)
        c = _ACTION_COLOURS.get(a.action, "tab:gray")
        lane.plot([a.time_s / tscale], [row], marker="v", color=c, markersize=6, linestyle="none")
        if a.time_s - last_label.get(a.action, -math.inf) > 0.06 * span:
            last_label[a.action] = a.time_s
            text = _action_text(a.action, a.value).split(" ", 1)[-1] if a.value is not None else ""
            if text:
                lane.annotate(text, (a.time_s / tscale, row), xytext=(0, 5), textcoords="offset points", fontsize=7,
                              ha="center", va="bottom", color=c)
    lane.set_yticks(range(len(kinds)), [k.replace("start_", "").replace("_", " ") for k in kinds], fontsize=8)
    lane.set_ylim(-0.6, len(kinds) - 0.1)
    lane.set_ylabel("policy action\n[kind]", fontsize=8)
    lane.grid(alpha=0.3, axis="x")
    lane.tick_params(axis="x", labelbottom=False)


def _switch_times(result: Result) -> tuple[float | None, float | None, float | None]:
    """When the VM stopped, when post-copy began, when the migration ended, from the timeline phases
    (the end of the job is not where the pause is once post-copy or the network phase follow)."""
    tl = result.timeline
    if not len(tl):
        if result.converged and result.downtime_s > 0:
            return result.total_time_s - result.downtime_s, None, result.total_time_s
        return None, None, None
    phases = list(tl["phase"])
    times = list(tl["time_s"])
    stop = next((t for p, t in zip(phases, times) if p == "switchover"), None)
    post = next((t for p, t in zip(phases, times) if p == "postcopy"), None)
    return stop, post, times[-1]


def bytes_per_iteration(result: Result):
    """Bytes sent and bytes newly dirtied in each iteration, on a log axis: the first pass (all of RAM)
    is orders of magnitude above the rounds that decide convergence."""
    fig, ax = plt.subplots(figsize=(8, 4))
    r = result.rounds
    ax.bar(r["memory_iteration"] - 0.2, r["sent_bytes"] / MiB, width=0.4, label="sent during the iteration")
    ax.bar(r["memory_iteration"] + 0.2, r["dirtied_bytes"] / MiB, width=0.4, label="newly dirtied at its sync")
    if len(r):
        ax.axhline(float(r["threshold_bytes"].iloc[-1]) / MiB, color="black", linestyle="--", linewidth=0.8,
                   label="switchover threshold (bandwidth x max downtime)")
    ax.set_yscale("log")
    _plain_ticks(ax.yaxis)
    ax.set_xticks(list(r["memory_iteration"]))
    ax.set_xlabel("memory iteration (dirty-sync-count) [count]")
    ax.set_ylabel("data [MiB]")
    ax.set_title("Bytes per pre-copy iteration")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.grid(alpha=0.3, axis="y", which="both")
    return fig


def _plain_ticks(axis) -> None:
    """Log-axis tick labels as plain numbers (0.1, 1, 10, 1,000), not 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


#: Validation tolerances (README "Validation"): (relative, absolute in the plotted unit) per figure.
TOLERANCES = {"downtime": (0.25, 30.0)}  # downtime within max(30 ms, 25 %)


def predicted_vs_measured(predicted: Sequence[float], measured: Sequence[float], *, what: str = "total time",
                          unit: str = "s", tolerance: tuple[float, float] | None = None):
    """Scatter with the y = x line and the tolerance band: ``tolerance = (relative, absolute)`` shades
    ``|predicted - measured| <= max(absolute, relative x measured)`` (default: the figure's rule from
    :data:`TOLERANCES`, else +-10 %)."""
    rel, absolute = tolerance or TOLERANCES.get(what, (0.10, 0.0))
    fig, ax = plt.subplots(figsize=(5, 5))
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    ax.scatter(m, p, s=18, label="migration", zorder=3)
    hi = float(max(p.max(initial=0), m.max(initial=0))) * 1.05 or 1.0
    xs = np.linspace(0, hi, 200)
    band = np.maximum(absolute, rel * xs)
    ax.plot(xs, xs, color="black", linewidth=0.8, label="exact")
    rule = f"max({absolute:g} {unit}, {rel:.0%})" if absolute else f"+-{rel:.0%}"
    ax.fill_between(xs, np.maximum(xs - band, 0), xs + band, color="grey", alpha=0.2, label=f"within {rule}")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel(f"measured {what} [{unit}]")
    ax.set_ylabel(f"predicted {what} [{unit}]")
    ax.set_title(f"Predicted vs measured {what}")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def verdict_grid(cells: list[dict], *, title: str = "Predicted total migration time",
                 min_bandwidth_Bps: float | None = None, max_downtime_s: float | None = None):
    """Bandwidth x max downtime, each cell coloured and labelled with the total time, grey where it does
    not converge; both axes logarithmic with the grid's own values as ticks; the convergence boundary
    (between the last failing and the first converging bandwidth of each column) drawn, and the
    plan's minimum bandwidth at its downtime marked when given."""
    bws = sorted({c["bandwidth_Bps"] for c in cells})
    dts = sorted({c["max_downtime_s"] for c in cells})
    z = np.full((len(bws), len(dts)), np.nan)
    for c in cells:
        if c["converged"]:
            z[bws.index(c["bandwidth_Bps"]), dts.index(c["max_downtime_s"])] = c["total_time_s"]
    yv, xv = np.array(bws) * 8 / 1e9, np.array(dts) * 1000  # Gbit/s, ms
    ye, xe = _edges(yv, True), _edges(xv, True)
    fig, ax = plt.subplots(figsize=(8, 5))
    finite = z[np.isfinite(z)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (1.0, 2.0)
    norm = LogNorm(lo, hi) if lo > 0 and hi / lo > 30 else Normalize(lo, hi if hi > lo else lo + 1)
    cmap = plt.get_cmap("viridis")
    ax.pcolormesh(xe, ye, np.where(np.isnan(z), 1.0, np.nan), cmap=matplotlib.colors.ListedColormap(["#d0d0d0"]),
                  vmin=0, vmax=1)
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(z), cmap=cmap, norm=norm)
    for i, y in enumerate(yv):
        for j, x in enumerate(xv):
            v = z[i, j]
            if np.isnan(v):
                ax.text(x, y, "no", ha="center", va="center", fontsize=8, color="black")
                continue
            r, g, b, _ = cmap(norm(v))
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"  # readable on its cell
            ax.text(x, y, fmt_duration(v), ha="center", va="center", fontsize=8, color=ink)
    handles: list[Artist] = [Patch(facecolor="#d0d0d0", edgecolor="grey", label="does not converge")]
    bx, by = _grid_boundary(np.isfinite(z), xe, ye)
    if len(bx):
        ax.plot(bx, by, color="tab:red", linewidth=2.2)
        handles.append(Line2D([], [], color="tab:red", linewidth=2.2, label="convergence boundary (grid)"))
    if min_bandwidth_Bps is not None:
        my = min_bandwidth_Bps * 8 / 1e9
        ax.axhline(my, color="tab:orange", linestyle="--", linewidth=1.2)
        mx = (max_downtime_s * 1000) if max_downtime_s is not None else None
        if mx is not None:
            ax.plot([mx], [my], marker="*", markersize=14, color="tab:orange", markeredgecolor="black")
        at = f" at {fmt_duration(max_downtime_s)}" if max_downtime_s is not None else ""
        handles.append(Line2D([], [], color="tab:orange", linestyle="--", marker="*" if mx is not None else None,
                              label=f"minimum bandwidth{at}: {fmt_bits(min_bandwidth_Bps)}"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    ax.set_xticks(xv, [f"{v:g}" for v in xv])
    ax.set_yticks(yv, [f"{v:g}" for v in yv])
    ax.minorticks_off()
    ax.set_xlabel("max downtime [ms]")
    ax.set_ylabel("bandwidth [Gbit/s]")
    ax.set_title(title)
    bar = fig.colorbar(mesh, ax=ax, label="total time [s]")
    if isinstance(norm, LogNorm):
        _plain_ticks(bar.ax.yaxis)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.14), ncol=2, frameon=False)
    return fig


def _grid_boundary(ok: np.ndarray, xe: np.ndarray, ye: np.ndarray) -> tuple[list[float], list[float]]:
    """A step line along the cell edges below the first converging row of each column (the lowest
    bandwidth from which on every cell converges); a column that never converges draws nothing."""
    xs: list[float] = []
    ys: list[float] = []
    for j in range(ok.shape[1]):
        col = ok[:, j]
        if not col[-1]:
            continue
        i = len(col) - 1
        while i > 0 and col[i - 1]:
            i -= 1
        if i == 0:
            continue  # converges at every bandwidth of the grid: the boundary is below it
        xs += [float(xe[j]), float(xe[j + 1])]
        ys += [float(ye[i]), float(ye[i])]
    return xs, ys


# ------------------------------------------------------------------ many migrations (sweeps)
def with_ratio(df):
    """The sweep table with the classic ``dirty_rate/bandwidth`` column (page writes per byte sent)."""
    missing = [c for c in (DIRTY_RATE, BANDWIDTH) if c not in df.columns]
    if missing:
        raise ValueError(f"{RATIO} needs the sweep axes {DIRTY_RATE} and {BANDWIDTH}; the table lacks "
                         f"{', '.join(missing)} (add them to the sweep's axes; "
                         f"one value is enough, e.g. link.bandwidth: [10Gbit/s])")
    out = df.copy()
    out[RATIO] = out[DIRTY_RATE] / out[BANDWIDTH]
    return out


def _spans_decades(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return bool(len(v)) and v.min() > 0 and v.max() / v.min() >= 10


def convergence_map(df, x: str = DIRTY_RATE, y: str = BANDWIDTH, *, color: str = "total_time_s",
                    downtime: str = DOWNTIME, boundaries: Sequence[float | None] | None = None,
                    color_at: float | None = None, ax=None, title: str | None = None, max_cells: int = 60):
    """Where does pre-copy converge? A sweep table drawn over two of its columns.

    The background is ``color`` (total time by default) of the converging scenarios at one
    downtime limit (``color_at``, default the largest in the table: the most permissive, so
    every stricter boundary lies inside the coloured region); grey means "does not converge
    there", white "no scenario there". Contour lines are the convergence boundary (where
    ``converged`` flips, i.e. halfway between a converging and a failing grid point) for each
    downtime limit in ``boundaries`` (default: every limit in the table, up to six).

    ``x`` or ``y`` may be ``"dirty_rate/bandwidth"``. An axis with more than ``max_cells``
    distinct values (a ratio of two swept axes, or LHS samples) is cut into ``max_cells``
    bins (log-spaced when it spans decades); scenarios in one cell are pooled: the colour is
    their median, the boundary is where half of them converge. Invalid scenarios (outcome
    ``invalid``) are left out. Other swept columns must be fixed by the caller (filter the
    table), otherwise they are pooled the same way.
    """
    grid = _MapGrid(df, x, y, color, downtime, max_cells)
    limits = grid.limits
    if boundaries is None:
        boundaries = limits if len(limits) <= 6 else [limits[int(round(i))] for i in np.linspace(0, len(limits) - 1, 6)]
    if color_at is None:
        color_at = limits[-1]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(10.5, 5.5))
    share, value = grid.cells(color_at)
    handles = _map_background(ax, grid, share, value, color_at)
    handles += _map_boundaries(ax, grid, boundaries, color_at, share)
    if grid.logx:
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis)
    if grid.logy:
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis)
    ax.set_xlim(grid.xe[0], grid.xe[-1])
    ax.set_ylim(grid.ye[0], grid.ye[-1])
    if RATIO in (x, y):
        (ax.axvline if x == RATIO else ax.axhline)(1.0, color="black", linewidth=0.8, linestyle=":")
        handles.append(Line2D([], [], color="black", linestyle=":", label="dirty rate = bandwidth"))
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    # Off the data: below the axes, so no boundary or cell hides behind it.
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.13), ncol=2, frameon=False)
    ax.set_title(title or f"Convergence map: {grid.clabel} over {quantity(x)[0]} x {quantity(y)[0]}")
    return fig or ax.figure


class _MapGrid:
    """A sweep table binned onto the map's cells: which cell each scenario falls in, and per cell the
    share that converges and the median colour value, for one downtime limit at a time."""

    def __init__(self, df, x: str, y: str, color: str, downtime: str, max_cells: int) -> None:
        if RATIO in (x, y):
            df = with_ratio(df)
        for c in (x, y, color, "converged"):
            if c not in df.columns:
                raise ValueError(f"column {c!r} is not in the sweep table; columns: {', '.join(map(str, df.columns))}")
        df = df[df["outcome"] != "invalid"] if "outcome" in df.columns else df
        if df.empty:
            raise ValueError("the sweep table has no valid scenario to draw")
        self.downtime = downtime if downtime in df.columns and downtime not in (x, y) else None
        self.limits: list[float | None] = (
            [float(v) for v in sorted(df[downtime].unique())] if self.downtime else [None])
        self.clabel, self.cunit, cscale = quantity(color)
        xall, yall = df[x].to_numpy(float) / quantity(x)[2], df[y].to_numpy(float) / quantity(y)[2]
        self.logx, self.logy = _spans_decades(xall), _spans_decades(yall)
        self.xc, self.xe, self.xbin = _cells(xall, self.logx, max_cells)
        self.yc, self.ye, self.ybin = _cells(yall, self.logy, max_cells)
        self.dt = df[downtime].to_numpy(float) if self.downtime else None
        self.conv = df["converged"].to_numpy(bool)
        self.val = df[color].to_numpy(float) / cscale

    def cells(self, limit: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Share converging and median colour value per cell (nan: no scenario in the cell)."""
        mask = np.ones(len(self.conv), bool) if limit is None or self.dt is None else np.isclose(self.dt, limit)
        if not mask.any():
            raise ValueError(f"no scenario with {self.downtime} = {limit!r}; the table has {self.limits}")
        cell = self.ybin[mask] * len(self.xc) + self.xbin[mask]
        conv, val = self.conv[mask], self.val[mask]
        share = np.full((len(self.yc), len(self.xc)), np.nan)
        value = np.full_like(share, np.nan)
        order = np.argsort(cell, kind="stable")
        ids, starts = np.unique(cell[order], return_index=True)
        for k, (c, a) in enumerate(zip(ids, starts)):
            members = order[a:starts[k + 1] if k + 1 < len(starts) else len(order)]
            share.flat[c] = conv[members].mean()
            ok = members[conv[members]]
            if len(ok) and share.flat[c] >= 0.5:
                value.flat[c] = np.median(val[ok])
        return share, value


def _map_background(ax, grid: _MapGrid, share: np.ndarray, value: np.ndarray, color_at: float | None) -> list:
    """Grey where it does not converge, the colour value where it does; returns the legend handles."""
    from matplotlib.colors import ListedColormap

    finite = value[np.isfinite(value)]
    norm: Normalize
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 30:
        norm = LogNorm(finite.min(), finite.max())
    else:
        norm = Normalize(*(finite.min(), finite.max()) if len(finite) else (0.0, 1.0))
    failing = np.where(share < 0.5, 1.0, np.nan)
    ax.pcolormesh(grid.xe, grid.ye, np.ma.masked_invalid(failing), cmap=ListedColormap(["#d0d0d0"]), vmin=0, vmax=1)
    mesh = ax.pcolormesh(grid.xe, grid.ye, np.ma.masked_invalid(value), cmap="viridis", norm=norm)
    at_txt = f" at max downtime {color_at * 1000:g} ms" if color_at is not None else ""
    bar = ax.figure.colorbar(mesh, ax=ax, label=f"{grid.clabel} [{grid.cunit}]{at_txt}")
    if isinstance(norm, LogNorm):
        _plain_ticks(bar.ax.yaxis)
    handles = [Patch(facecolor="#d0d0d0", edgecolor="grey", label="does not converge" + at_txt)]
    if np.isnan(share).any():
        handles.append(Patch(facecolor="white", edgecolor="grey", label="no scenario in this cell"))
    return handles


def _map_boundaries(ax, grid: _MapGrid, boundaries: Sequence[float | None], color_at: float | None,
                    share_at_color: np.ndarray) -> list:
    """One contour where half the scenarios of a cell converge, per downtime limit; legend handles."""
    handles = []
    styles: list[Literal["-", "--", "-.", ":"]] = ["-", "--", "-.", ":"]
    cmap = plt.get_cmap("autumn")
    for i, limit in enumerate(boundaries):
        conv = share_at_color if limit == color_at else grid.cells(limit)[0]
        finite_share = conv[np.isfinite(conv)]
        if not len(finite_share) or finite_share.min() >= 0.5 or finite_share.max() < 0.5:
            continue  # converges everywhere or nowhere: no boundary to draw
        c = cmap(i / max(len(boundaries) - 1, 1) * 0.8)
        ls = styles[i % len(styles)]
        ax.contour(grid.xc, grid.yc, np.ma.masked_invalid(conv), levels=[0.5], colors=[c], linestyles=[ls],
                   linewidths=2)
        lab = "convergence boundary" + (f", max downtime {limit * 1000:g} ms" if limit is not None else "")
        handles.append(Line2D([], [], color=c, linestyle=ls, linewidth=2, label=lab))
    return handles


def _cells(values: np.ndarray, log: bool, max_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell centres, cell edges, cell index of each value): the distinct values themselves when
    there are few (a grid axis), else ``max_cells`` bins."""
    distinct = np.unique(values)
    if len(distinct) <= max_cells:
        return distinct, _edges(distinct, log), np.searchsorted(distinct, values)
    lo, hi = distinct[0], distinct[-1]
    edges = np.geomspace(lo, hi, max_cells + 1) if log else np.linspace(lo, hi, max_cells + 1)
    centres = np.sqrt(edges[1:] * edges[:-1]) if log else (edges[1:] + edges[:-1]) / 2
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max_cells - 1)
    return centres, edges, index


def _edges(centres: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges halfway between grid points (geometrically on a log axis)."""
    v = np.log10(centres) if log else centres.astype(float)
    if len(v) == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5]) if log else np.array([v[0] * 0.9 - 0.5, v[0] * 1.1 + 0.5])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return 10 ** e if log else e


def boundary_points(fig_or_ax) -> list[np.ndarray]:
    """The (x, y) vertices of every convergence boundary drawn on a convergence map (for tests and
    for reading the boundary off a figure without re-deriving it)."""
    ax = fig_or_ax.axes[0] if hasattr(fig_or_ax, "axes") and not hasattr(fig_or_ax, "plot") else fig_or_ax
    out: list[np.ndarray] = []
    for coll in ax.collections:
        if type(coll).__name__ in ("QuadContourSet", "ContourSet"):
            out.extend(p.vertices.copy() for p in coll.get_paths() if len(p.vertices))
    return out


def geometric_precopy(ratio: np.ndarray | float, memory_bytes: float, bandwidth_Bps: float,
                      max_downtime_s: float, max_iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The textbook expectation the simulator is compared against: pass *k* sends ``M rho^k``, so
    pre-copy stops after the first pass whose leftover ``M rho^n`` fits in ``B d``, taking
    ``(M / B)(1 - rho^n) / (1 - rho)``. Returns (pre-copy time [s], passes); nan where it never
    converges within ``max_iterations`` passes (rho >= 1, or too slow). No working-set
    saturation, no page headers, no sync cost: that is what the comparison shows."""
    rho = np.atleast_1d(np.asarray(ratio, float))
    threshold = bandwidth_Bps * max_downtime_s
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(rho <= 0, 1, np.ceil(np.log(threshold / memory_bytes) / np.log(np.where(rho > 0, rho, 0.5))))
        n = np.maximum(n, 1)
        t = np.where(np.isclose(rho, 1), n, (1 - rho ** n) / (1 - rho)) * memory_bytes / bandwidth_Bps
    bad = (rho >= 1) | (n > max_iterations)
    return np.where(bad, np.nan, t), np.where(bad, np.nan, n)


def ratio_curve(df, *, memory_bytes: float, max_downtime_s: float | None = None, y: str = "precopy_time_s",
                ax=None, title: str | None = None):
    """The classic picture: RAM pre-copy time, in units of one full copy ``M / B``, against
    dirty rate / bandwidth, one marker series per bandwidth, the geometric series dashed.
    Non-converging scenarios are drawn as crosses on the top edge."""
    df = with_ratio(df)
    df = df[df["outcome"] != "invalid"] if "outcome" in df.columns else df
    if max_downtime_s is None:
        if DOWNTIME in df.columns and df[DOWNTIME].nunique() > 1:
            raise ValueError(f"the table sweeps {DOWNTIME}; pass max_downtime_s to pick one limit")
        max_downtime_s = float(df[DOWNTIME].iloc[0]) if DOWNTIME in df.columns else None
    if max_downtime_s is None:
        raise ValueError("pass max_downtime_s: the table has no migration.max_downtime column")
    if DOWNTIME in df.columns:
        df = df[np.isclose(df[DOWNTIME], max_downtime_s)]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 5))
    top = 0.0
    for i, (bw, part) in enumerate(sorted(df.groupby(BANDWIDTH), key=lambda kv: kv[0])):
        part = part.sort_values(RATIO)
        unit_time = memory_bytes / bw
        conv = part[part["converged"]]
        c = f"C{i}"
        ax.plot(conv[RATIO], conv[y] / unit_time, marker="o", markersize=3, linestyle="none", color=c,
                label=f"simulated, {bw * 8 / 1e9:.3g} Gbit/s")
        rho = np.geomspace(max(part[RATIO].min(), 1e-4), part[RATIO].max(), 300)
        expect, _ = geometric_precopy(rho, memory_bytes, bw, max_downtime_s)
        ax.plot(rho, expect / unit_time, color=c, linestyle="--", linewidth=1,
                label=f"geometric series, {bw * 8 / 1e9:.3g} Gbit/s")
        if len(conv):
            top = max(top, float((conv[y] / unit_time).max()))
        fails = part[~part["converged"]]
        if len(fails):
            part_fail_x = fails[RATIO].to_numpy()
            ax.scatter(part_fail_x, np.full(len(part_fail_x), 1.0), marker="x", color=c, s=14,
                       transform=ax.get_xaxis_transform(), clip_on=False)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":", label="dirty rate = bandwidth")
    ax.scatter([], [], marker="x", color="grey", label="does not converge (top edge)")
    ax.set_xscale("log")
    ax.set_ylim(0, max(top * 1.1, 1.5))
    ax.set_xlabel(axis_label(RATIO))
    ax.set_ylabel("RAM pre-copy time / (memory / bandwidth) [full copies]")
    ax.set_title(title or f"Pre-copy time vs dirty rate / bandwidth ({memory_bytes / GiB:g} GiB VM, "
                          f"max downtime {max_downtime_s * 1000:g} ms)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig or ax.figure


def effect_lines(df, x: str, *, series: str, y: str = "total_time_s", ax=None, title: str | None = None):
    """One line per value of ``series``: median ``y`` of the converging scenarios against ``x``
    (a sweep column). A line ends where its scenarios stop converging; that end is the effect."""
    df = df[df["outcome"] != "invalid"] if "outcome" in df.columns else df
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4.8))
    _, _, xs_ = quantity(x)
    slabel, su, ss = quantity(series)
    ylabel, yu, ys_ = quantity(y)
    for i, (value, part) in enumerate(sorted(df.groupby(series), key=lambda kv: kv[0])):
        med = part[part["converged"]].groupby(x)[y].median().reindex(np.sort(part[x].unique()))
        xs = med.index.to_numpy(float) / xs_
        v = value / ss
        ax.plot(xs, med.to_numpy(float) / ys_, marker="o", markersize=3, color=f"C{i % 10}",
                label=f"{slabel} {v:,.0f} {su}" if v >= 100 else f"{slabel} {v:.3g} {su}")
    if _spans_decades(df[x].to_numpy(float)):
        ax.set_xscale("log")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(f"median {ylabel} of converging scenarios [{yu}]")
    ax.set_title(title or f"Effect of {quantity(x)[0]} on {ylabel}, by {slabel}")
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9, title="line ends: stops converging", title_fontsize=8)
    ax.grid(alpha=0.3)
    return fig or ax.figure


# ------------------------------------------------------------------ comparisons and fleets
_OUTCOME_COLOURS = {"converged": "tab:green", "postcopy": "tab:purple", "paused": "tab:brown",
                    "aborted": "tab:red", "not_converged": "tab:gray", "refused": "black", "invalid": "black"}


def policy_comparison(results: Mapping[str, Result], *, title: str | None = None):
    """Total time per policy (bar colour: outcome; label: downtime and number of actions)."""
    names = list(results)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.6))
    ys = list(range(len(names)))
    times = [results[n].total_time_s for n in names]
    ax.barh(ys, times, color=[_OUTCOME_COLOURS.get(results[n].outcome, "tab:blue") for n in names])
    for yv, n in zip(ys, names):
        r = results[n]
        pause = f"downtime {r.downtime_s * 1000:.0f} ms" if r.downtime_s > 0 else "no switchover"
        ax.text(r.total_time_s, yv, f"  {r.outcome.replace('_', ' ')}, {pause}, {len(r.actions)} actions",
                va="center", fontsize=8)
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    if max(times) / max(min(times), 1e-9) > 30:  # log bars need a fixed origin well below the shortest
        ax.set_xscale("log")
        ax.set_xlim(10 ** math.floor(math.log10(max(min(times), 1e-3)) - 1), max(times) * 8)
    else:
        ax.set_xlim(0, max(times) * 1.6)
    ax.set_xlabel("total time until the job ends [s]")
    ax.set_ylabel("orchestration policy [name]")
    outcomes = dict.fromkeys(results[n].outcome for n in names)
    ax.legend(handles=[Patch(color=_OUTCOME_COLOURS.get(o, "tab:blue"), label=o.replace("_", " "))
                       for o in outcomes], fontsize=8, loc="lower right")
    ax.set_title(title or "The same non-converging migration under each orchestration policy")
    ax.grid(alpha=0.3, axis="x")
    return fig


def fleet_times(names: Sequence[str], total_times_s: Sequence[float], converged: Sequence[bool], *,
                window_s: float, title: str | None = None):
    """Per-VM migration time (bars) and the running total of migrating them one after another
    (steps) against the maintenance window (red line). A VM that does not converge has no time:
    it is drawn as a hatched bar as long as the window, because it would hold the window."""
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(names) + 1.8))
    ys = np.arange(len(names))
    t = np.array([float(x) if ok and x is not None and math.isfinite(float(x)) else np.nan
                  for x, ok in zip(total_times_s, converged)])
    ok = np.isfinite(t)
    ax.barh(ys[ok], t[ok] / 60, color="tab:blue", label="migration time (converges)")
    ax.barh(ys[~ok], np.full((~ok).sum(), window_s / 60), color="none", edgecolor="tab:red", hatch="//",
            label="does not converge")
    cumulative = np.cumsum(np.where(ok, t, 0.0)) / 60
    ax.step(cumulative, ys, where="mid", color="black", linewidth=1.2, label="cumulative, one after another")
    ax.axvline(window_s / 60, color="tab:red", linewidth=1.5, label=f"maintenance window {window_s / 60:g} min")
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlabel("time [min]")
    ax.set_ylabel("VM [name]")
    fits = int((ok & (cumulative * 60 <= window_s)).sum())
    ax.set_title(title or f"Fleet migration vs the maintenance window: {fits} of {len(names)} VMs fit")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax.grid(alpha=0.3, axis="x")
    return fig
