"""`--html FILE`: one self-contained page per answer, with the same numbers the command prints.

Checked as a document, not as pixels: it parses, loads nothing from outside (every image is an inline
PNG that decodes), and its verdict and tables are the result's (iterations, recommendations, VMs).
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from simkvm import load_plan, simulate


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []
        self.external: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.external.append(a[key])
        if tag == "img":
            self.images.append(base64.b64decode(a["src"].split("base64,", 1)[1]))
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simkvm", *args], capture_output=True, text=True, timeout=600,
                          check=False)


def _page(path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    assert not page.external, f"the page loads {page.external}: not self-contained"
    for png in page.images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    return page


def test_predict_html_has_the_verdict_rounds_and_inline_figures(tmp_path):
    out = tmp_path / "predict.html"
    proc = _run("predict", "plans/example.yaml", "--html", str(out))
    assert proc.returncode == 0 and f"report written to {out}" in proc.stderr
    page = _page(out)
    result = simulate(load_plan("plans/example.yaml"))
    text = " ".join(page.text)
    assert "predicted: CONVERGES" in text and result.reason in text
    rounds = next(t for t in page.tables if t[0][0] == "iter")
    assert len(rounds) - 1 == result.iterations
    assert [row[0] for row in rounds[1:]] == [str(i) for i in range(1, result.iterations + 1)]
    assert len(page.images) >= 2  # timeline and bytes per iteration


def test_plan_html_lists_the_recommendations_of_the_json(tmp_path):
    out = tmp_path / "plan.html"
    args = ["plan", "plans/nonconverging.yaml", "--bandwidths", "1Gbit/s,10Gbit/s", "--downtimes", "300ms,1s",
            "--max-bandwidth", "10Gbit/s"]
    proc = _run(*args, "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(_run(*args, "--json").stdout)
    page = _page(out)
    recs = next(t for t in page.tables if t[0][:2] == ["#", "setting"])
    assert [row[1] for row in recs[1:]] == [r["setting"] for r in data["recommendations"]]
    grid = next(t for t in page.tables if t[0][0].startswith("bandwidth"))
    assert len(grid) - 1 == 2 and all(len(row) == 3 for row in grid)
    assert sum(cell == "no" for row in grid[1:] for cell in row[1:]) == sum(not c["converged"] for c in data["grid"])
    assert len(page.images) == 1
    assert "needs a change" in " ".join(page.text)


def test_fleet_html_says_which_vms_fit_and_what_to_change(tmp_path):
    csv = tmp_path / "fleet.csv"
    csv.write_text("name,memory,dirty_rate,wss,disk,disk_allocated,disk_write_rate,zero_fraction\n"
                   "quiet,4GiB,2MiB/s,128MiB,10GiB,2GiB,0,0.5\n"
                   "busy,8GiB,400MiB/s,4GiB,10GiB,2GiB,0,0.1\n")
    out = tmp_path / "fleet.html"
    proc = _run("fleet", str(csv), "--bandwidth", "1Gbit/s", "--window", "1h", "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    page = _page(out)
    vms = next(t for t in page.tables if t[0][0] == "vm" and "fits" in t[0])
    fits = {row[0]: row[6] for row in vms[1:]}
    assert fits == {"quiet": "yes", "busy": "no"}
    change = next(t for t in page.tables if t[0][:2] == ["vm", "converges from"])
    assert [row[0] for row in change[1:]] == ["busy"] and "Gbit/s" in change[1][1]
    assert "1 of 2 VMs fit" in " ".join(page.text)
    assert len(page.images) == 2


@pytest.mark.parametrize("command", [["predict", "plans/example.yaml"], ["fleet", "data/fleet.csv"]])
def test_html_into_a_missing_directory_is_one_line_exit_2(command, tmp_path):
    proc = _run(*command, "--html", str(tmp_path / "nope" / "r.html"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_compare_html_has_both_verdicts_the_error_table_and_one_figure(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(_run("predict", "plans/example.yaml", "--json").stdout)
    b.write_text(_run("predict", "plans/example.yaml", "--bandwidth", "25Gbit/s", "--json").stdout)
    out = tmp_path / "compare.html"
    proc = _run("compare", str(a), str(b), "--html", str(out))
    assert proc.returncode == 0, proc.stderr
    page = _page(out)
    text = " ".join(page.text)
    assert "predicted converged, predicted converged: they agree" in text
    assert "total time" in text and len(page.images) == 1
    assert sum(t[0][0] == "iter" for t in page.tables) == 2  # each result's rounds
