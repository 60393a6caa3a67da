"""The figures: each titled, with units on its axes, and showing what its input says.

Oracles, not pixels: a converged migration has exactly one downtime span where the VM stopped; a
post-copy run has a post-copy span; a convergence map's boundary lies between the grid points where
``simulate`` flips from converging to not.
"""
from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import simkvm  # noqa: E402
from simkvm import plot  # noqa: E402
from simkvm.model.result import Action  # noqa: E402

UNIT = re.compile(r"\[[^\]]+\]")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plot.plt.close("all")


def _plan(**changes):
    base = simkvm.Plan.from_dict({
        "name": "t", "vm": {"memory": "4GiB", "disks": [{"size": "2GiB", "allocated": "1GiB"}]},
        "workload": {"memory": {"model": "uniform", "dirty_rate": "100MiB/s", "wss": "1GiB"}},
        "link": {"bandwidth": "10Gbit/s"}, "migration": {"max_downtime": "300ms"},
    })
    return base.with_(**changes) if changes else base


def _readable(fig) -> None:
    """Non-empty title somewhere, and every labelled axis says its unit in brackets."""
    titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
    assert any(t.strip() for t in titles), "figure has no title"
    main = [ax for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]
    assert main, "no axis is labelled"
    for ax in main:
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            if label:
                assert UNIT.search(label), f"axis label {label!r} has no [unit]"


def _spans(ax, rgba_close_to: str) -> list:
    """axvspan rectangles (Polygon patches / Rectangles) of a colour."""
    target = np.array(matplotlib.colors.to_rgb(rgba_close_to))
    out = []
    for p in ax.patches:
        if np.allclose(np.array(p.get_facecolor()[:3]), target, atol=0.02):
            out.append(p)
    return out


def _main_ax(fig):
    return next(ax for ax in fig.axes if ax.get_ylabel().startswith("remaining"))


def test_timeline_of_a_converged_migration_has_one_downtime_span_where_the_vm_stopped():
    r = simkvm.simulate(_plan())
    assert r.converged
    fig = plot.timeline(r)
    _readable(fig)
    ax = _main_ax(fig)
    spans = _spans(ax, "red")
    assert len(spans) == 1
    x0, x1 = spans[0].get_x(), spans[0].get_x() + spans[0].get_width()
    assert x1 - x0 == pytest.approx(r.downtime_s)
    tl = r.timeline
    assert x0 == pytest.approx(float(tl[tl["phase"] == "switchover"]["time_s"].iloc[0]))
    assert not _spans(ax, "tab:purple")  # no post-copy
    # RAM and disk curves, one faint line per iteration
    assert len([l for l in ax.lines if l.get_label().startswith(("RAM", "disk"))]) == 2
    assert len([l for l in ax.lines if l.get_alpha() == 0.15]) == r.iterations
    assert "converged" in fig.axes[0].get_title()


def test_timeline_of_a_failed_migration_has_no_downtime_and_says_so():
    r = simkvm.simulate(_plan(**{"link.bandwidth": "1Gbit/s", "workload.memory.dirty_rate": "400MiB/s"}))
    assert not r.converged
    fig = plot.timeline(r)
    _readable(fig)
    assert not _spans(_main_ax(fig), "red")
    assert "not converged" in fig.axes[0].get_title()


def test_timeline_shades_postcopy_and_lists_each_policy_action_in_its_lane():
    plan = simkvm.load_plan("plans/nonconverging.yaml").with_(policy="ovirt-post-copy")
    r = simkvm.simulate(plan)
    assert r.outcome == "postcopy"
    fig = plot.timeline(r)
    _readable(fig)
    lane, ax = fig.axes[0], _main_ax(fig)
    assert lane is not ax and "ovirt-post-copy" in lane.get_title()
    assert len(_spans(ax, "tab:purple")) == 1
    assert len(_spans(ax, "red")) == 1
    markers = [l for l in lane.lines if l.get_marker() == "v"]
    assert len(markers) == len(r.actions)
    assert [t.get_text() for t in lane.get_yticklabels()] == ["set downtime", "postcopy"]


def test_timeline_into_a_shared_axis_keeps_mib_and_returns_its_figure():
    r = simkvm.simulate(_plan())
    fig, ax = plot.plt.subplots()
    assert plot.timeline(r, ax=ax, label="predicted") is fig
    assert ax.get_ylabel() == "remaining [MiB]"
    plot.plt.close(fig)


def test_action_labels_carry_units():
    assert plot._action_text("set_downtime", 0.15) == "downtime 150 ms"
    assert plot._action_text("throttle", 0.3) == "throttle 30 %"
    assert plot._action_text("start_postcopy", None) == "post-copy"
    r = simkvm.simulate(_plan())
    r.actions = [Action(1.0, "set_downtime", 0.1), Action(2.0, "abort")]
    fig = plot.timeline(r)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "100 ms" in texts


def test_bytes_per_iteration_has_two_bars_per_iteration():
    r = simkvm.simulate(_plan())
    fig = plot.bytes_per_iteration(r)
    _readable(fig)
    assert len(fig.axes[0].patches) == 2 * len(r.rounds)


def test_predicted_vs_measured_and_verdict_grid_are_readable():
    _readable(plot.predicted_vs_measured([1, 2, 3], [1.1, 2.2, 2.9]))
    cells = simkvm.planner.grid(_plan(), [1.25e8, 1.25e9], [0.1, 0.3])
    fig = plot.verdict_grid(cells)
    _readable(fig)
    assert len(fig.axes[0].texts) == 4


GRID_SPEC = {
    "base": {"name": "map", "vm": {"memory": "4GiB"},
             "workload": {"memory": {"model": "uniform", "dirty_rate": "100MiB/s", "wss": "2GiB"}},
             "link": {"bandwidth": "1Gbit/s"}, "migration": {"max_downtime": "300ms"}},
    "axes": {"workload.memory.dirty_rate": {"log": ["10MiB/s", "2GiB/s"], "num": 12},
             "link.bandwidth": {"log": ["1Gbit/s", "20Gbit/s"], "num": 6},
             "migration.max_downtime": ["50ms", "1s"]},
}


@pytest.fixture(scope="module")
def grid_table():
    return simkvm.sweep(GRID_SPEC, workers=1)


def test_convergence_map_boundary_lies_where_simulate_flips(grid_table):
    fig = plot.convergence_map(grid_table, boundaries=[0.05])
    _readable(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "dirty rate [MiB/s]" == ax.get_xlabel() and "bandwidth [Gbit/s]" == ax.get_ylabel()
    points = np.concatenate(plot.boundary_points(fig))
    assert len(points)
    rates = np.sort(grid_table["workload.memory.dirty_rate_Bps"].unique())
    bws = np.sort(grid_table["link.bandwidth_Bps"].unique())
    base = simkvm.Plan.from_dict(GRID_SPEC["base"])
    checked = 0
    for bw in bws:
        on_row = points[np.isclose(points[:, 1], bw / plot.GBIT_Bps)]
        for x_mib, _ in on_row:
            x = x_mib * plot.MiB
            lo, hi = rates[rates < x].max(), rates[rates > x].min()
            assert x == pytest.approx((lo + hi) / 2)  # halfway between the two grid points
            ok = [simkvm.simulate(base.with_(**{"workload.memory.dirty_rate": r, "link.bandwidth": bw,
                                                  "migration.max_downtime": 0.05}), timeline=False).converged
                  for r in (lo, hi)]
            assert ok[0] != ok[1], f"boundary at {x_mib:.0f} MiB/s, {bw * 8e-9:.2g} Gbit/s does not separate"
            checked += 1
    assert checked >= 3


def test_convergence_map_draws_one_boundary_per_downtime_limit_and_greys_failures(grid_table):
    fig = plot.convergence_map(grid_table)
    ax = fig.axes[0]
    contours = [c for c in ax.collections if type(c).__name__ == "QuadContourSet"]
    assert len(contours) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("50 ms" in t for t in legend) and any("1000 ms" in t for t in legend)
    assert any("does not converge" in t for t in legend)
    # The colour layer shows only converging cells at the most permissive limit (1 s).
    coloured = np.ma.count(ax.collections[1].get_array())
    at_1s = grid_table[np.isclose(grid_table["migration.max_downtime_s"], 1.0)]
    assert coloured == int(at_1s["converged"].sum())


def test_convergence_map_on_the_ratio_axis_has_its_unit_and_the_rho_1_line(grid_table):
    fig = plot.convergence_map(grid_table, x=plot.RATIO, y="link.bandwidth_Bps")
    _readable(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "dirty rate / bandwidth [dimensionless]"
    assert any(l.get_xdata()[0] == 1.0 for l in ax.lines)


def test_convergence_map_refuses_ratio_without_bandwidth_column(grid_table):
    with pytest.raises(ValueError, match="one value is enough"):
        plot.convergence_map(grid_table.drop(columns=["link.bandwidth_Bps"]), x=plot.RATIO,
                             y="migration.max_downtime_s")


def test_geometric_series_matches_a_saturation_free_guest():
    """Sequential writes over all of RAM: the simulator should follow M rho^k within headers and syncs."""
    plan = simkvm.Plan.from_dict({
        "name": "geo", "vm": {"memory": "4GiB"},
        "workload": {"memory": {"model": "sequential", "dirty_rate": "300MiB/s", "wss": "4GiB"}},
        "link": {"bandwidth": "10Gbit/s"}, "migration": {"max_downtime": "300ms"},
    })
    r = simkvm.simulate(plan)
    rho = plan.workload.memory.dirty_rate_Bps / plan.link.bandwidth_Bps
    t, n = plot.geometric_precopy(rho, plan.vm.memory_bytes, plan.link.bandwidth_Bps, 0.3)
    assert r.precopy_time_s == pytest.approx(float(t[0]), rel=0.08)
    assert np.isnan(plot.geometric_precopy(1.2, 2**32, 1.25e9, 0.3)[0][0])


def test_ratio_curve_effect_lines_policy_comparison_and_fleet_times_are_readable(grid_table):
    one = grid_table[np.isclose(grid_table["migration.max_downtime_s"], 0.05)]
    fig = plot.ratio_curve(one, memory_bytes=4 * 2**30)
    _readable(fig)
    sim_series = [l for l in fig.axes[0].lines if l.get_label().startswith("simulated")]
    assert len(sim_series) == grid_table["link.bandwidth_Bps"].nunique()
    _readable(plot.effect_lines(grid_table, "workload.memory.dirty_rate_Bps", series="migration.max_downtime_s"))
    plan = simkvm.load_plan("plans/nonconverging.yaml")
    results = {p: simkvm.simulate(plan.with_(policy=p), timeline=False) for p in ("qemu", "proxmox")}
    fig = plot.policy_comparison(results)
    _readable(fig)
    assert len(fig.axes[0].patches) == 2
    fig = plot.fleet_times(["a", "b", "c"], [600, None, 3000], [True, False, True], window_s=3000)
    _readable(fig)
    assert "1 of 3 VMs fit" in fig.axes[0].get_title()  # 10 min, skip b, then 60 min > 50 min window


# ------------------------------------------------------------------ what a planner reads at a glance
def _no_power_ticks(fig) -> None:
    """Tick labels are plain numbers, never 10^k mathtext."""
    fig.canvas.draw()
    for ax in fig.axes:
        for tick in ax.get_xticklabels() + ax.get_yticklabels():
            assert "^" not in tick.get_text(), tick.get_text()


def test_verdict_grid_log_axes_boundary_minimum_and_readable_cell_text():
    plan = simkvm.load_plan("plans/nonconverging.yaml")
    bws, dts = [1.25e7, 1.25e8, 3.125e8, 1.25e9, 5e9], [0.03, 0.3, 2.0]
    cells = simkvm.planner.grid(plan, bws, dts)
    mb = simkvm.planner.min_bandwidth_Bps(plan)
    fig = plot.verdict_grid(cells, min_bandwidth_Bps=mb, max_downtime_s=0.3)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert ax.get_ylabel() == "bandwidth [Gbit/s]"
    _no_power_ticks(fig)
    # The boundary: a line between the last failing and the first converging bandwidth of each column.
    boundary = [ln for ln in ax.lines if ln.get_color() == "tab:red"]
    assert boundary
    xs, ys = boundary[0].get_xdata(), boundary[0].get_ydata()
    checked = 0
    for x0, x1, level in zip(xs[::2], xs[1::2], ys[::2]):
        for c in cells:
            if x0 < c["max_downtime_s"] * 1000 < x1:
                assert c["converged"] == (c["bandwidth_Bps"] * 8 / 1e9 > level), c
                checked += 1
    assert checked == len(cells)  # every column of this grid flips once
    # The minimum bandwidth at the plan's downtime is marked where it is, in Gbit/s like the axis.
    star = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert star and star[0].get_ydata()[0] == pytest.approx(mb * 8 / 1e9)
    assert any("minimum bandwidth" in t.get_text() and "Gbit/s" in t.get_text()
               for t in ax.get_legend().get_texts())
    # Every cell's text contrasts with its cell: dark ink on light cells, light ink on dark ones.
    mesh = ax.collections[1]
    for text in ax.texts:
        if text.get_text() == "no":
            continue
        value = next(c["total_time_s"] for c in cells if c["converged"]
                     and abs(c["max_downtime_s"] * 1000 - text.get_position()[0]) < 1e-6
                     and abs(c["bandwidth_Bps"] * 8 / 1e9 - text.get_position()[1]) < 1e-9)
        r, g, b, _ = mesh.cmap(mesh.norm(value))
        cell_light = 0.299 * r + 0.587 * g + 0.114 * b
        ink = np.array(matplotlib.colors.to_rgb(text.get_color())).mean()
        assert abs(cell_light - ink) > 0.4, (text.get_text(), cell_light, ink)


def test_plan_plot_says_where_it_wrote(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "grid.png"
    proc = subprocess.run([sys.executable, "-m", "simkvm", "plan", "plans/nonconverging.yaml", "--bandwidths",
                           "1Gbit/s,10Gbit/s", "--downtimes", "300ms", "--plot", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and out.stat().st_size > 0
    assert f"written to {out}" in proc.stderr


def test_bytes_per_iteration_is_on_a_log_axis():
    fig = plot.bytes_per_iteration(simkvm.simulate(simkvm.load_plan("plans/example.yaml")))
    assert fig.axes[0].get_yscale() == "log"
    _no_power_ticks(fig)


def test_downtime_scatter_band_is_the_validation_rule():
    """The shaded band is max(30 ms, 25 %): +-30 ms at 40 ms, +-100 ms at 400 ms."""
    fig = plot.predicted_vs_measured([40, 400], [40, 400], what="downtime", unit="ms")
    band = fig.axes[0].collections[-1].get_paths()[0].vertices
    upper = band[band[:, 1] >= band[:, 0]]
    upper = upper[np.argsort(upper[:, 0])]
    for x, half in ((40, 30), (400, 100)):
        assert np.interp(x, upper[:, 0], upper[:, 1]) == pytest.approx(x + half, rel=0.01)
    assert any("max(30 ms, 25%)" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_comparison_one_unit_distinct_downtime_colours_and_right_labels():
    big = simkvm.load_plan("plans/example.yaml")  # 16 GiB: GiB on the timeline
    a = simkvm.simulate(big)
    b = simkvm.simulate(big.with_(**{"link.bandwidth": "25Gbit/s"}))
    fig = plot.comparison(a, b)
    ax = fig.axes[0]
    assert ax.get_ylabel() == plot.timeline(a).axes[0].get_ylabel() == "remaining [GiB]"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("predicted 1" in s for s in labels) and any("predicted 2" in s for s in labels)
    assert not any("measured" in s for s in labels)  # two predictions: neither is called measured
    downtime = [p for p in ax.patches if "downtime" in (p.get_label() or "")]
    assert len(downtime) == 2
    assert not np.allclose(downtime[0].get_facecolor(), downtime[1].get_facecolor())


def test_long_timeline_is_in_minutes_or_hours():
    plan = simkvm.load_plan("plans/nonconverging.yaml")
    short = plot.timeline(simkvm.simulate(_plan()))
    assert short.axes[-1].get_xlabel().endswith("[s]")
    long = simkvm.simulate(plan.with_(policy="nova"))  # hours of downtime steps
    assert long.total_time_s > 3 * 3600
    ax = plot.timeline(long).axes[-1]
    assert ax.get_xlabel().endswith("[h]")
    assert ax.get_xlim()[1] < 10  # hours, not seconds


def test_convergence_map_legend_is_off_the_data_and_ticks_are_plain(grid_table):
    fig = plot.convergence_map(grid_table)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    axes_box = ax.get_window_extent()
    assert legend.y1 <= axes_box.y0 + 1  # below the axes, not over the cells
    _no_power_ticks(fig)
