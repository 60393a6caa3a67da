"""Figures people would rather look at than read; every one titled, labelled, with units.

All functions return a matplotlib Figure and never call ``show``: the CLI
saves them (``--plot``), notebooks display them.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() in ("", "agg") else None
import matplotlib.pyplot as plt  # noqa: E402

from .result import Result  # noqa: E402

MiB = 2**20


def save(fig, path: str) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def timeline(result: Result, *, label: str | None = None, ax=None, color: str | None = None):
    """Remaining RAM and disk vs time, iterations marked, downtime shaded, actions annotated."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 4.5))
    tl = result.timeline
    name = label or result.source
    if len(tl):
        ax.plot(tl["time_s"], tl["memory_remaining"] / MiB, drawstyle="default", color=color,
                label=f"RAM remaining ({name})")
        if tl["disk_remaining"].max() > 0:
            ax.plot(tl["time_s"], tl["disk_remaining"] / MiB, linestyle="--", color=color,
                    label=f"disk remaining ({name})")
    rounds = result.rounds
    for t in rounds["time_elapsed_s"]:
        ax.axvline(t, color=color or "grey", alpha=0.15, linewidth=0.8)
    if result.converged and result.downtime_s > 0:
        end = result.total_time_s
        ax.axvspan(end - result.downtime_s, end, color="red", alpha=0.25, label="downtime")
    for a in result.actions:
        ax.annotate(f"{a.action}" + ("" if a.value is None else f" {a.value:g}"), xy=(a.time_s, 0),
                    xytext=(a.time_s, ax.get_ylim()[1] * 0.8), fontsize=8, rotation=90,
                    arrowprops={"arrowstyle": "->", "alpha": 0.5})
    ax.set_xlabel("time since start of migration [s]")
    ax.set_ylabel("remaining [MiB]")
    verdict = "converged" if result.converged else result.outcome.replace("_", " ")
    ax.set_title(f"Migration timeline ({verdict}, {result.iterations} iterations, "
                 f"downtime {result.downtime_s * 1000:.0f} ms)")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig or ax.figure


def bytes_per_iteration(result: Result):
    """Bytes sent and bytes newly dirtied in each iteration."""
    fig, ax = plt.subplots(figsize=(8, 4))
    r = result.rounds
    ax.bar(r["memory_iteration"] - 0.2, r["sent_bytes"] / MiB, width=0.4, label="sent")
    ax.bar(r["memory_iteration"] + 0.2, r["dirtied_bytes"] / MiB, width=0.4, label="newly dirtied at sync")
    ax.set_xlabel("memory iteration (dirty-sync-count)")
    ax.set_ylabel("MiB")
    ax.set_title("Bytes per iteration")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return fig


def predicted_vs_measured(predicted: Sequence[float], measured: Sequence[float], *, what: str = "total time",
                          unit: str = "s"):
    """Scatter with the y = x line and +-10 % band."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5, 5))
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    ax.scatter(m, p, s=18)
    hi = float(max(p.max(initial=0), m.max(initial=0))) * 1.05 or 1.0
    xs = np.linspace(0, hi, 10)
    ax.plot(xs, xs, color="black", linewidth=0.8, label="exact")
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="grey", alpha=0.2, label="+-10 %")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel(f"measured {what} [{unit}]")
    ax.set_ylabel(f"predicted {what} [{unit}]")
    ax.set_title(f"Predicted vs measured {what}")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def verdict_grid(cells: list[dict], *, title: str = "Predicted total migration time"):
    """Heatmap bandwidth x max downtime coloured by total time; non-converging cells hatched."""
    import numpy as np

    bws = sorted({c["bandwidth_Bps"] for c in cells})
    dts = sorted({c["max_downtime_s"] for c in cells})
    z = np.full((len(bws), len(dts)), np.nan)
    for c in cells:
        if c["converged"]:
            z[bws.index(c["bandwidth_Bps"]), dts.index(c["max_downtime_s"])] = c["total_time_s"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_facecolor("#dddddd")
    mesh = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis")
    for i in range(len(bws)):
        for j in range(len(dts)):
            ax.text(j, i, "no" if np.isnan(z[i, j]) else f"{z[i, j]:.3g}s", ha="center", va="center", fontsize=7,
                    color="black" if np.isnan(z[i, j]) else "white")
    ax.set_xticks(range(len(dts)), [f"{d * 1000:g} ms" for d in dts])
    ax.set_yticks(range(len(bws)), [f"{b * 8 / 1e9:.3g} Gbit/s" for b in bws])
    ax.set_xlabel("max downtime")
    ax.set_ylabel("bandwidth")
    ax.set_title(title + " (grey: does not converge)")
    fig.colorbar(mesh, ax=ax, label="total time [s]")
    return fig
