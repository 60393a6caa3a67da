"""The calibration's search: how far a re-simulated run is from its measurement, and a
coordinate search in log space that minimises the sum over the runs."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from ..model.result import Result


def _median_dirty_rate(res: Result) -> float | None:
    rates = [float(x["memory_dirty_rate"]) for x in res.round_records
             if x.get("memory_dirty_rate") not in (None, 0) and float(x["memory_dirty_rate"]) > 0]
    return float(np.median(rates)) if rates else None


def run_terms(pred: Result, meas: Result, *, downtime: bool = True) -> dict[str, float]:
    """Squared normalised errors of one run (the fit's objective adds them up); ``downtime=False``
    leaves the run's downtime out (a disk writer's: see calibrate.objective)."""
    terms: dict[str, float] = {}
    if meas.converged:
        if pred.converged:
            terms["total_time"] = ((pred.total_time_s - meas.total_time_s) / meas.total_time_s) ** 2
            if downtime:
                terms["downtime"] = ((pred.downtime_s - meas.downtime_s) / max(meas.downtime_s, 0.03)) ** 2
            terms["iterations"] = 0.3 * ((pred.iterations - meas.iterations) / max(meas.iterations, 3)) ** 2
        else:
            terms["verdict"] = 1.0
    elif pred.converged:
        terms["verdict"] = 1.0
    pr, mr = _median_dirty_rate(pred), _median_dirty_rate(meas)
    if pr and mr:
        terms["dirty_rate"] = 0.5 * math.log(pr / mr) ** 2
    return terms


def to_u(value: float, dim: tuple[str, float, float, float]) -> float:
    """A constant's value in the search's coordinate u = log(x + eps) (below its lower bound: at it)."""
    _, lo, _, eps = dim
    return math.log(max(value, lo) + eps)


def from_u(u: float, dim: tuple[str, float, float, float]) -> float:
    """The value at coordinate ``u``, kept within the constant's bounds."""
    _, lo, hi, eps = dim
    return min(max(math.exp(u) - eps, lo), hi)


def _moved(x: Mapping[str, float], dim: tuple[str, float, float, float], by: float) -> float:
    """Coordinate ``dim`` of ``x`` moved by ``by`` in u = log(x + eps), kept within its bounds."""
    return from_u(to_u(x[dim[0]], dim) + by, dim)


def coordinate_search(f: Callable[[dict[str, float]], float], start: Mapping[str, float],
                      space: Sequence[tuple[str, float, float, float]], *, step: float = math.log(2.0),
                      min_step: float = 0.002, max_evals: int = 3000) -> tuple[dict[str, float], float, int]:
    """Minimise ``f`` one coordinate at a time in u = log(x + eps); when a sweep gains nothing, try
    two coordinates at once (a valley across two axes: a faster wire and a slower resume give the
    same downtime) before halving the step. The objective counts iterations, so it has steps and
    ridges that one-axis moves alone stop at."""
    x = dict(start)
    best = f(x)
    evals = 1
    while step >= min_step and evals < max_evals:
        improved = False
        for dim in space:
            name = dim[0]
            while True:  # walk this coordinate downhill at this step size
                moved = False
                for direction in (+1, -1):
                    cand = _moved(x, dim, direction * step)
                    if cand == x[name]:
                        continue
                    trial = {**x, name: cand}
                    val = f(trial)
                    evals += 1
                    if val < best - 1e-12:
                        x, best, improved, moved = trial, val, True, True
                        break
                if not moved or evals >= max_evals:
                    break
        if not improved:
            for i, a in enumerate(space):
                for b in space[i + 1:]:
                    for da, db in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                        if improved or evals >= max_evals:
                            break
                        trial = {**x, a[0]: _moved(x, a, da * step), b[0]: _moved(x, b, db * step)}
                        if trial == x:
                            continue
                        val = f(trial)
                        evals += 1
                        if val < best - 1e-12:
                            x, best, improved = trial, val, True
        if not improved:
            step /= 2
    return x, best, evals
