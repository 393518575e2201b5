"""Chapter 11, the energy landscape between sparse solutions (seed 002, Evci et al. 2019: E-F3, E-F4,
E-F6/7, E-F8).

The difficulty chapter's P-S, L-S and S-S at one sparsity (the same runs, shared through the store).
Linear paths (:func:`sparsegap.landscape.linear_path`) lead to P-S from three starts; Bézier curves
(:mod:`sparsegap.curves`, runs of kind ``curve``) join S-S to P-S inside the sparse subspace or through the
dense space. Every path reports the objective's cross-entropy and L2 terms apart.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import landscape as L
from .. import params as P
from ..config import RunConfig, TrainConfig
from ..curves import curve_path
from ..runs import RunStore, load_curve, load_data, run_all
from .. import stats
from ..stats import Interval
from ..verdict import Evidence, Verdict, detectable_line, status_of
from .difficulty import RUN_PARAMETERS, detect_phrase, settings, solution_configs
from .procedure import executor_of
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


def run_energy(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
               executor=None):
    sols, curves = configs(p)
    runs = run_all([*sols.values(), *curves.values()], store, device=device, progress=progress,
                   executor=executor_of(p, executor))
    return dict(zip(sols, runs[:len(sols)])), dict(zip(curves, runs[len(sols):]))


def init_paths(p: dict, sols: dict) -> pd.DataFrame:
    """E-F3 with E-F6/7: linear paths to P-S from the three starts, per seed, over [t_min, t_max], with the
    objective's terms (λ = the runs' weight decay). Kept beside P-S; evaluated on the measurement device of
    ``p["device"]`` (:func:`~sparsegap.runs.measure_plan.measurement_device`)."""
    from ..runs.measure_plan import measurement_device
    dev = measurement_device(p.get("device", "cpu"))
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
                              lambda run=run: L.linear_path(run.init_model(), ps.model(), data, ts=ts, device=dev,
                                                            weight_decay=p["weight_decay"]).to_dict("records"))
            out.append(pd.DataFrame(rows).assign(start=name, seed=seed))
    return pd.concat(out, ignore_index=True)


def scratch_paths(p: dict, sols: dict, curves: dict, store: RunStore | None) -> pd.DataFrame:
    """E-F4, E-F8: S-S ↔ P-S along the straight line and along every trained curve, per seed, evaluated on the
    measurement device of ``p["device"]``."""
    from ..runs.measure_plan import measurement_device
    dev = measurement_device(p.get("device", "cpu"))
    s = p["sparsity"]
    ts = np.linspace(0.0, 1.0, p["curve_points"])
    out = []
    for seed in p["seeds"]:
        ss, ps = sols[("S-S", s, seed)], sols[("P-S", s, seed)]
        data = load_data(ps.config.data)
        rows = ps.measure("path_from_ss", {"from": ss.config.run_id, "points": len(ts), "wd": p["weight_decay"]},
                          lambda: L.linear_path(ss.model(), ps.model(), data, ts=ts, device=dev,
                                                weight_decay=p["weight_decay"]).to_dict("records"))
        out.append(pd.DataFrame(rows).assign(path="line", seed=seed))
        for name, _, _ in CURVES:
            run = curves[(name, seed)]
            rows = run.measure("curve_path", {"points": len(ts), "wd": p["weight_decay"]},
                               lambda run=run: curve_path(load_curve(run.config, store), data, ts=ts, device=dev,
                                                          weight_decay=p["weight_decay"]).to_dict("records"))
            out.append(pd.DataFrame(rows).assign(path=name, seed=seed))
    return pd.concat(out, ignore_index=True)


def barrier(d: pd.DataFrame) -> float:
    """The path's highest train loss minus the larger of its two endpoints' (t = 0 and t = 1)."""
    d = d[(d.subset == "train") & (d.t >= 0) & (d.t <= 1)].sort_values("t")
    return float(d.loss.max() - max(d.loss.iloc[0], d.loss.iloc[-1]))


def barrier_heights(paths: pd.DataFrame) -> pd.Series:
    """The barrier height of one path per seed (index: seed)."""
    return pd.Series({seed: barrier(d) for seed, d in paths.groupby("seed")}, dtype=float).sort_index()


def barrier_test(heights: pd.Series, floor: float) -> tuple[Interval, str]:
    """(the 95% interval of the mean height over seeds, the outcome of "there is a barrier"): it holds when
    the interval lies above ``floor`` (a loss rise no smaller than this counts), fails when it lies below."""
    iv = stats.mean_interval(heights.to_numpy(float))
    return iv, iv.shifted(-floor).test(+1)


def weight_norms(p: dict, sols: dict) -> pd.DataFrame:
    """E-F6/7: the L2 norm ‖θ‖₂ of every trainable parameter, per seed, of P-S and the three starts of the
    paths to it (Init-D, Init-D on the mask, the random sparse init), and of L-S and S-S beside their own
    inits. Long table: seed, network, norm."""
    s, rows = p["sparsity"], []
    for seed in p["seeds"]:
        ps, ls, ss = (sols[(k, s, seed)] for k in ("P-S", "L-S", "S-S"))
        nets = {"P-S": ps, "L-S": ls, "S-S": ss}
        nets = {name: run.model() for name, run in nets.items() if not run.diverged}
        nets |= {start: run.init_model() for start, run in (("dense init", ps), ("dense init on the mask", ls),
                                                            ("random sparse init", ss))}
        rows += [{"seed": seed, "network": name,
                  "norm": float(sum(q.detach().double().pow(2).sum() for q in m.parameters())) ** 0.5}
                 for name, m in nets.items()]
    return pd.DataFrame(rows, columns=["seed", "network", "norm"])


CLAIM_INIT = ("The training loss decreases monotonically along the straight line to the pruned solution P-S, from the "
              "dense init, from the dense init on the mask and from a random sparse init.")
CLAIM_LINE = "A barrier separates the scratch solution S-S from the pruned solution P-S on the straight line between them."
CLAIM_CURVES = ("A quadratic Bézier curve confined to the sparse subspace keeps a barrier between S-S and P-S, while one "
                "that may use the dense space removes it.")
CLAIM_CUBIC = "A cubic Bézier curve confined to the sparse subspace still keeps a barrier between S-S and P-S."
CLAIM_NORM = ("The solutions found are consistently of lower weight magnitude than their initialization: the pruned "
              "solution's L2 norm is smaller than that of every start of the paths to it (Appendix C, Fig. 6).")


def _rise(losses, tol: float = 0.01) -> float:
    """The largest rise between neighbouring points as a share of the path's drop (first to last point);
    :func:`sparsegap.studies.redense.monotone` allows ``tol``. Infinite for a path that does not drop."""
    v = np.asarray(losses, dtype=float)
    drop = v[0] - v[-1]
    return float(max(0.0, np.max(np.diff(v))) / drop) if drop > 0 else math.inf


def init_verdict(paths: pd.DataFrame, *, scale: str = "") -> Verdict:
    """E-F3: from every start, the train loss on t in [0, 1] decreases monotonically
    (:func:`sparsegap.studies.redense.monotone`: no rise between neighbours above 1% of the drop). Per start it
    holds when the path of every seed is monotone, fails when the seeds agree that it rises (the 95% interval
    of the largest rise, as a share of the drop, lies above 1%), and is undecided otherwise (some seeds' paths
    rise, others do not)."""
    evidence, seeds, counts = [], set(), []
    for start, d in paths.groupby("start", sort=False):
        rises, oks = [], []
        for seed, e in d[(d.subset == "train") & (d.t >= 0) & (d.t <= 1)].groupby("seed"):
            loss = e.sort_values("t").loss
            oks.append(monotone(loss))
            rises.append(_rise(loss))
            seeds.add(int(seed))
        finite = [r for r in rises if math.isfinite(r)]
        iv = stats.mean_interval(finite) if finite else Interval.exact(math.inf)
        if all(oks):
            outcome = "holds"
        elif len(finite) < len(rises):  # a path whose loss does not drop at all contradicts the claim
            outcome = "undecided" if any(oks) else "fails"
        else:  # the seeds agree on a rise: its interval lies above the 1% that counts as float noise
            outcome = "fails" if iv.shifted(-0.01).test(+1) == "holds" else "undecided"
        counts.append((start, sum(oks), len(oks)))
        evidence.append(Evidence(f"largest rise along the path from the {start}, share of its drop", iv, ".1%",
                                 paper="monotone from every start (Fig. 3)" if not evidence else "", outcome=outcome))
    if not evidence:
        return Verdict("E-F3", CLAIM_INIT, "inconclusive", ("No path was measured.",), scale,
                       finding="No path was measured, so the claim cannot be tested.")
    status = status_of([e.outcome for e in evidence])
    finding = (f"The train loss falls monotonically to P-S on {sum(c[1] for c in counts)} of "
               f"{sum(c[2] for c in counts)} paths (three starts, every seed); the largest rise from the "
               f"{counts[0][0]} is {evidence[0].effect.format('.1%')} of the drop.")
    reasons = ("; ".join(f"from the {a}: monotone for {k} of {n} seeds" for a, k, n in counts) + ". A path is "
               "monotone when no rise between neighbouring points exceeds 1% of its drop; a start fails when its "
               "seeds' largest rise lies clearly above that.",)
    return Verdict("E-F3", CLAIM_INIT, status, reasons, scale, finding=finding, evidence=tuple(evidence),
                   seeds=tuple(sorted(seeds)))


def _barrier_evidence(paths: pd.DataFrame, name: str, floor: float, *, claim: int = +1, paper: str = ""):
    """(Evidence on the barrier of path ``name`` with the outcome of "has a barrier" (claim=+1) or "has none"
    (claim=-1), the per-seed heights)."""
    h = barrier_heights(paths[paths.path == name])
    if h.empty:
        return None, h
    iv, has = barrier_test(h, floor)
    outcome = has if claim > 0 else {"holds": "fails", "fails": "holds"}.get(has, "undecided")
    return Evidence(f"barrier height on the {name} (train loss above the higher end)", iv, ".3g", paper=paper,
                    outcome=outcome), h


def _barrier_verdict(claim_id: str, claim: str, tests: list, floor: float, *, scale: str, part: str = "",
                     context: tuple = ()) -> Verdict:
    evidence = [e for e, _ in tests if e is not None]
    if not evidence:
        return Verdict(claim_id, claim, "inconclusive", ("No path was measured.",), scale, part=part,
                       finding="No path was measured, so the claim cannot be tested.")
    status = status_of([e.outcome for e in evidence])
    key = evidence[0]
    def said(e):
        iv = e.effect
        word = "a barrier" if iv.lo > floor else "no barrier" if iv.hi < floor else "cannot tell"
        return f"the {e.name.split('on the ')[1].split(' (')[0]} rises {iv.format('.3g')} above its higher end ({word})"
    finding = "; ".join(said(e) for e in evidence) + f", against a floor of {floor:g} in train loss"
    finding = finding[0].upper() + finding[1:]
    if status == "inconclusive":
        finding += f"; {detect_phrase(key.effect, '.3g')}"
    finding += "."
    reasons = (f"A barrier counts when the 95% interval of its mean height over seeds lies above {floor:g}; none, "
               f"when it lies below.", detectable_line("barrier height", key.effect.shifted(-floor), ".3g"))
    seeds = sorted({int(k) for _, h in tests for k in h.index})
    return Verdict(claim_id, claim, status, reasons, scale, part=part, finding=finding,
                   evidence=tuple(evidence) + tuple(context), seeds=tuple(seeds))


def line_verdict(paths: pd.DataFrame, floor: float, *, scale: str = "") -> Verdict:
    """E-F4 (a): the straight line from S-S to P-S has a barrier: the 95% interval of the per-seed barrier
    height lies above ``floor`` (fails when it lies below)."""
    test = _barrier_evidence(paths, "line", floor, paper="a barrier as high as at random init (Fig. 4 left)")
    return _barrier_verdict("E-F4", CLAIM_LINE, [test], floor, scale=scale, part="a")


def curves_verdict(paths: pd.DataFrame, floor: float, *, scale: str = "") -> Verdict:
    """E-F4 (b): the sparse quadratic curve has a barrier (interval above ``floor``) and the dense quadratic
    curve has none (interval below ``floor``); the paired difference of their heights per seed (same
    endpoints) is shown beside."""
    sparse = _barrier_evidence(paths, "quadratic, sparse", floor, paper="a barrier (Fig. 4 middle)")
    dense = _barrier_evidence(paths, "quadratic, dense", floor, claim=-1, paper="none (Fig. 4 right)")
    context = ()
    common = sorted(set(sparse[1].index) & set(dense[1].index))
    if common:
        iv = stats.paired_difference(sparse[1].loc[common], dense[1].loc[common])
        context = (Evidence("barrier height, sparse − dense quadratic curve", iv, ".3g"),)
    return _barrier_verdict("E-F4", CLAIM_CURVES, [sparse, dense], floor, scale=scale, part="b", context=context)


def cubic_verdict(paths: pd.DataFrame, floor: float, *, scale: str = "") -> Verdict:
    """E-F8: the sparse cubic curve has a barrier (interval above ``floor``); its height against the sparse
    quadratic curve's, paired by seed, is shown beside (the paper: the cubic curve does not lower it)."""
    cubic = _barrier_evidence(paths, "cubic, sparse", floor, paper="a small barrier remains (Fig. 8)")
    quad = barrier_heights(paths[paths.path == "quadratic, sparse"])
    common = sorted(set(cubic[1].index) & set(quad.index))
    context = ((Evidence("barrier height, cubic − quadratic sparse curve", 
                         stats.paired_difference(cubic[1].loc[common], quad.loc[common]), ".3g"),) if common else ())
    return _barrier_verdict("E-F8", CLAIM_CUBIC, [cubic], floor, scale=scale, context=context)


def norm_verdict(norms: pd.DataFrame, *, scale: str = "") -> Verdict:
    """E-F6/7 (Appendix C, Fig. 6: the L2 term along the paths of Fig. 3): the solution P-S has a smaller L2
    norm than each start of its paths (Init-D, its own init; Init-D on the mask; the random sparse init): per
    seed ‖P-S‖₂ − ‖start‖₂ is a paired difference whose 95% interval must lie below zero (it fails where it
    lies above). L-S and S-S against their own inits are shown beside; the paper does not measure them."""
    wide = norms.pivot_table(index="seed", columns="network", values="norm")
    evidence = []
    for start in STARTS:
        if "P-S" not in wide or start not in wide:
            continue
        d = wide[["P-S", start]].dropna()
        if d.empty:
            continue
        iv = stats.paired_difference(d["P-S"], d[start])
        evidence.append(Evidence(f"‖P-S‖₂ − ‖{start}‖₂", iv, ".3g",
                                 paper="smaller than at every start (App. C, Fig. 6)" if not evidence else "",
                                 outcome=iv.test(-1)))
    if not evidence:
        return Verdict("E-F6/7", CLAIM_NORM, "inconclusive", ("No solution was measured.",), scale,
                       finding="No solution was measured, so the claim cannot be tested.")
    for sol, start in (("L-S", "dense init on the mask"), ("S-S", "random sparse init")):
        if sol in wide and start in wide and not wide[[sol, start]].dropna().empty:
            d = wide[[sol, start]].dropna()
            evidence.append(Evidence(f"‖{sol}‖₂ − ‖its init‖₂", stats.paired_difference(d[sol], d[start]), ".3g"))
    parts = [e.outcome for e in evidence if e.outcome]
    status, key = status_of(parts), evidence[0]
    d = wide[["P-S", "dense init"]].dropna() if "dense init" in wide else wide[["P-S"]].iloc[:0]
    ratio = f" (P-S's norm is {float((d['P-S'] / d['dense init']).mean()):.0%} of Init-D's)" if len(d) else ""
    if status == "inconclusive":
        finding = (f"P-S's norm differs from Init-D's by {key.effect.format('.3g')}, within noise; "
                   f"{detect_phrase(key.effect, '.3g')}.")
    else:
        finding = (f"P-S ends {key.effect.format('.3g')} in L2 norm from Init-D{ratio}; it is clearly smaller than "
                   f"{parts.count('holds')} of the {len(parts)} starts of its paths.")
    reasons = ("‖θ‖₂ over every trainable parameter, as in the L2 term of the objective.",
               detectable_line("change in norm", key.effect, ".3g"))
    return Verdict("E-F6/7", CLAIM_NORM, status, reasons, scale, finding=finding, evidence=tuple(evidence),
                   seeds=tuple(sorted(int(k) for k in wide.index)))


def planned_runs(p: dict) -> list:
    """The solutions and the curves (for ``bookbuild --plan``)."""
    sols, curves = configs(p)
    return [*sols.values(), *curves.values()]


def planned_measurements(p: dict) -> list:
    """The paths of :func:`init_paths` and :func:`scratch_paths`, per seed (for ``bookbuild --plan``)."""
    from ..runs.measure_plan import path_passes, planned
    sols, curves = configs(p)
    s, wd = p["sparsity"], p["weight_decay"]
    ts = np.linspace(p["t_min"], p["t_max"], p["path_points"])
    interior = int(np.count_nonzero((ts != 0.0) & (ts != 1.0)))
    out = []
    for seed in p["seeds"]:
        ps, ss = sols[("P-S", s, seed)], sols[("S-S", s, seed)]
        out += [planned(ps, "path_to_ps", {"from": start.run_id, "ts": ts.tolist(), "wd": wd},
                        *path_passes(ps, p["path_points"], interior=interior))
                for start in (ps, sols[("L-S", s, seed)], ss)]
        out.append(planned(ps, "path_from_ss", {"from": ss.run_id, "points": p["curve_points"], "wd": wd},
                           *path_passes(ps, p["curve_points"])))
        out += [planned(curves[(name, seed)], "curve_path", {"points": p["curve_points"], "wd": wd},
                        *path_passes(curves[(name, seed)], p["curve_points"])) for name, _, _ in CURVES]
    return out
