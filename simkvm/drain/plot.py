"""A drain as a Gantt chart (one bar per VM, coloured by outcome) over the links' use."""
from __future__ import annotations

from ..plot import GBIT_Bps, plt
from .result import DrainResult

COLOURS = {"converged": "tab:green", "postcopy": "tab:blue", "paused": "tab:orange", "aborted": "tab:red",
           "not_converged": "tab:red", "refused": "tab:gray"}


def gantt(result: DrainResult, *, window_s: float | None = None, title: str | None = None):
    """Top: each VM's migration from start to end (its downtime a black tick at the end);
    bottom: each used link's bandwidth given to migrations (and background) over time."""
    vms = sorted(result.vms, key=lambda v: (v.start_s, v.name))
    links = list(result.link_usage)
    fig, (ax, lx) = plt.subplots(2, 1, figsize=(10, 2.0 + 0.28 * len(vms) + 2.2), sharex=True,
                                 gridspec_kw={"height_ratios": [max(len(vms), 3) * 0.28, 2.2]})
    for i, v in enumerate(vms):
        r = v.result
        ax.barh(i, max(r.total_time_s, 0.5), left=v.start_s, color=COLOURS.get(r.outcome, "tab:gray"),
                edgecolor="black", linewidth=0.3)
        if r.converged and r.downtime_s:
            ax.plot([v.end_s, v.end_s], [i - 0.4, i + 0.4], color="black", linewidth=1.2)
    ax.set_yticks(range(len(vms)), [f"{v.name} ({v.source}→{v.destination or '-'})" for v in vms], fontsize=7)
    ax.invert_yaxis()
    if window_s:
        ax.axvline(window_s, color="black", linestyle="--", linewidth=1)
        ax.text(window_s, -0.6, " window", fontsize=8, va="bottom")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:green", "tab:red", "tab:gray")]
    ax.legend(handles, ["converged", "did not converge", "refused"], fontsize=7, loc="lower right")
    ax.set_title(title or f"{result.name}: {result.summary_line()}", fontsize=10)
    end = result.makespan_s
    for link in links:
        series = result.link_usage[link]
        times = [t for t, _, _ in series] + [end]
        used = [m / GBIT_Bps for _, m, _ in series]
        lx.step(times, used + used[-1:], where="post", label=f"{link} ({result.mean_utilisation(link):.0%} used)")
    lx.set_xlabel("time since the drain started [s]")
    lx.set_ylabel("to migrations [Gbit/s]")
    if links:
        lx.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
