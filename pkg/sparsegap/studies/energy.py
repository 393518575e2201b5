"""Chapter 11, the energy landscape between sparse solutions (seed 002, Evci et al. 2019: E-F3, E-F4,
E-F6/7, E-F8).

The difficulty chapter's P-S, L-S and S-S at one sparsity (the same runs, shared through the store).
Linear paths (:func:`sparsegap.landscape.linear_path`) lead to P-S from three starts; Bézier curves
(:mod:`sparsegap.curves`, runs of kind ``curve``) join S-S to P-S inside the sparse subspace or through the
dense space. Every path reports the objective's cross-entropy and L2 terms apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import landscape as L
from .. import params as P
from ..config import RunConfig, TrainConfig
from ..curves import curve_path
from ..runs import RunStore, load_curve, load_data, run_all
from ..verdict import Verdict, mean_std, status_of
from .difficulty import RUN_PARAMETERS, settings, solution_configs
from .redense import monotone

STARTS = {"dense init": "P-S init", "dense init on the mask": "L-S init", "random sparse init": "S-S init"}
CURVES = (("quadratic, sparse", 2, "sparse"), ("quadratic, dense", 2, "dense"), ("cubic, sparse", 3, "sparse"))

PARAMETERS = P.ParameterSpec(
    "11_energy_landscape",
    **RUN_PARAMETERS,
    sparsity=P.fraction("the sparsity of P-S, L-S and S-S studied here (one of the difficulty chapter's)",
                        high_open=True),
    t_min=P.Param("float", "the linear paths run over t in [t_min, t_max] (the paper: -0.2)"),
    t_max=P.Param("float", "... (the paper: 1.2)"),
    path_points=P.Param("int", "points on each linear path", low=2),
    curve_points=P.Param("int", "points on each Bézier curve", low=2),
    curve_epochs=P.Param("int", "epochs of curve training", low=1),
    curve_lr=P.Param("float", "SGD learning rate of curve training", low=0.0),
    barrier_floor=P.Param("float", "a barrier must also be higher than this (absolute train loss)", low=0.0),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def configs(p: dict) -> tuple[dict, dict]:
    """(the solutions keyed (solution, sparsity, seed), the curves keyed (curve name, seed))."""
    data, model, train, gradual = settings(p)
    sols = solution_configs(data, model, train, [p["sparsity"]], p["seeds"], gradual=gradual, track=p["track"],
                            solutions=("P-S", "L-S", "S-S"))
    curve_train = TrainConfig(epochs=p["curve_epochs"], batch_size=p["batch_size"], lr=p["curve_lr"],
                              momentum=p["momentum"], weight_decay=p["weight_decay"], schedule="constant")
    curves = {(name, seed): RunConfig("curve", data, model, curve_train, seed=seed,
                                      parent=sols[("S-S", p["sparsity"], seed)],
                                      partner=sols[("P-S", p["sparsity"], seed)], curve_degree=degree, curve_mode=mode)
              for name, degree, mode in CURVES for seed in p["seeds"]}
    return sols, curves


def run_energy(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True):
    sols, curves = configs(p)
    runs = run_all([*sols.values(), *curves.values()], store, device=device, progress=progress)
    return dict(zip(sols, runs[:len(sols)])), dict(zip(curves, runs[len(sols):]))


def init_paths(p: dict, sols: dict) -> pd.DataFrame:
    """E-F3 with E-F6/7: linear paths to P-S from the three starts, per seed, over [t_min, t_max], with the
    objective's terms (λ = the runs' weight decay). Kept beside P-S."""
    s = p["sparsity"]
    ts = np.linspace(p["t_min"], p["t_max"], p["path_points"])
    out = []
    for seed in p["seeds"]:
        ps = sols[("P-S", s, seed)]
        starts = {"dense init": ps, "dense init on the mask": sols[("L-S", s, seed)],
                  "random sparse init": sols[("S-S", s, seed)]}
        data = load_data(ps.config.data)
        for name, run in starts.items():
            rows = ps.measure("path_to_ps", {"from": run.config.run_id, "ts": ts.tolist(), "wd": p["weight_decay"]},
                              lambda run=run: L.linear_path(run.init_model(), ps.model(), data, ts=ts,
                                                            weight_decay=p["weight_decay"]).to_dict("records"))
            out.append(pd.DataFrame(rows).assign(start=name, seed=seed))
    return pd.concat(out, ignore_index=True)


def scratch_paths(p: dict, sols: dict, curves: dict, store: RunStore | None) -> pd.DataFrame:
    """E-F4, E-F8: S-S ↔ P-S along the straight line and along every trained curve, per seed."""
    s = p["sparsity"]
    ts = np.linspace(0.0, 1.0, p["curve_points"])
    out = []
    for seed in p["seeds"]:
        ss, ps = sols[("S-S", s, seed)], sols[("P-S", s, seed)]
        data = load_data(ps.config.data)
        rows = ps.measure("path_from_ss", {"from": ss.config.run_id, "points": len(ts), "wd": p["weight_decay"]},
                          lambda: L.linear_path(ss.model(), ps.model(), data, ts=ts,
                                                weight_decay=p["weight_decay"]).to_dict("records"))
        out.append(pd.DataFrame(rows).assign(path="line", seed=seed))
        for name, _, _ in CURVES:
            run = curves[(name, seed)]
            rows = run.measure("curve_path", {"points": len(ts), "wd": p["weight_decay"]},
                               lambda run=run: curve_path(load_curve(run.config, store), data, ts=ts,
                                                          weight_decay=p["weight_decay"]).to_dict("records"))
            out.append(pd.DataFrame(rows).assign(path=name, seed=seed))
    return pd.concat(out, ignore_index=True)


def barrier(d: pd.DataFrame) -> float:
    """The path's highest train loss minus the larger of its two endpoints' (t = 0 and t = 1)."""
    d = d[(d.subset == "train") & (d.t >= 0) & (d.t <= 1)].sort_values("t")
    return float(d.loss.max() - max(d.loss.iloc[0], d.loss.iloc[-1]))


def has_barrier(paths: pd.DataFrame, floor: float) -> tuple[bool, list[float], float]:
    """(barrier?, per-seed heights, threshold): a barrier when the seed-mean height exceeds both ``floor``
    and twice the spread (sample std) across seeds of the larger endpoint loss."""
    heights, ends = [], []
    for _, d in paths.groupby("seed"):
        heights.append(barrier(d))
        tr = d[d.subset == "train"].sort_values("t")
        ends.append(max(tr.loss.iloc[0], tr.loss.iloc[-1]))
    spread = float(np.std(ends, ddof=1)) if len(ends) > 1 else 0.0
    threshold = max(floor, 2 * spread)
    return float(np.mean(heights)) > threshold, heights, threshold


CLAIM_INIT = ("The training loss decreases monotonically along the straight line to the pruned solution P-S, from the "
              "dense init, from the dense init on the mask and from a random sparse init.")
CLAIM_LINE = "A barrier separates the scratch solution S-S from the pruned solution P-S on the straight line between them."
CLAIM_CURVES = ("A quadratic Bézier curve confined to the sparse subspace keeps a barrier between S-S and P-S, while one "
                "that may use the dense space removes it.")
CLAIM_CUBIC = "A cubic Bézier curve confined to the sparse subspace still keeps a barrier between S-S and P-S."


def init_verdict(paths: pd.DataFrame, *, scale: str = "") -> Verdict:
    """E-F3: for every start and seed, the train loss on t in [0, 1] decreases monotonically
    (:func:`sparsegap.studies.redense.monotone`: no rise between neighbours above 1% of the drop)."""
    parts, reasons = [], []
    for start, d in paths.groupby("start", sort=False):
        oks = []
        for _, e in d[(d.subset == "train") & (d.t >= 0) & (d.t <= 1)].groupby("seed"):
            oks.append(monotone(e.sort_values("t").loss))
        parts += oks
        reasons.append(f"from the {start}: monotone for {sum(oks)} of {len(oks)} seeds.")
    return Verdict("E-F3", CLAIM_INIT, status_of(parts), tuple(reasons), scale)


def _describe(name: str, ok: bool, heights: list[float], threshold: float) -> str:
    return (f"{name}: barrier height (highest train loss minus the larger endpoint) {mean_std(heights, '.3f')} over "
            f"seeds, threshold {threshold:.3f}: {'a barrier' if ok else 'no barrier'}.")


def line_verdict(paths: pd.DataFrame, floor: float, *, scale: str = "") -> Verdict:
    """E-F4 (a): the straight line from S-S to P-S has a barrier (:func:`has_barrier`)."""
    ok, h, thr = has_barrier(paths[paths.path == "line"], floor)
    return Verdict("E-F4", CLAIM_LINE, "reproduced" if ok else "not reproduced", (_describe("line", ok, h, thr),),
                   scale, part="a")


def curves_verdict(paths: pd.DataFrame, floor: float, *, scale: str = "") -> Verdict:
    """E-F4 (b): the sparse quadratic curve has a barrier and the dense quadratic curve has none."""
    sparse_ok, hs, ts = has_barrier(paths[paths.path == "quadratic, sparse"], floor)
    dense_ok, hd, td = has_barrier(paths[paths.path == "quadratic, dense"], floor)
    return Verdict("E-F4", CLAIM_CURVES, status_of([sparse_ok, not dense_ok]),
                   (_describe("quadratic, sparse", sparse_ok, hs, ts), _describe("quadratic, dense", dense_ok, hd, td)),
                   scale, part="b")


def cubic_verdict(paths: pd.DataFrame, floor: float, *, scale: str = "") -> Verdict:
    """E-F8: the sparse cubic curve has a barrier."""
    ok, h, thr = has_barrier(paths[paths.path == "cubic, sparse"], floor)
    return Verdict("E-F8", CLAIM_CUBIC, "reproduced" if ok else "not reproduced",
                   (_describe("cubic, sparse", ok, h, thr),), scale)


def planned_runs(p: dict) -> list:
    """The solutions and the curves (for ``bookbuild --plan``)."""
    sols, curves = configs(p)
    return [*sols.values(), *curves.values()]
