"""Chapter 8, re-dense training and the landscape around sparse solutions (seed 001: D-F4 to D-F7).

One chain of the double-descent chapter (magnitude pruning at one ε, the very same runs, shared
through the store), and at its characteristic rounds (overfitting, sweet spot, underfitting: the
sparsities of the paper's Fig. 4-6) a re-dense run (``RunConfig(kind="redense")``): the pruned
weights return at zero and the whole network trains on at the last learning rate of the sparse
schedule. The landscape tools of :mod:`sparsegap.landscape` then measure the linear path from each
sparse solution to its re-dense one, 1-D loss curves along filter-normalized random directions, and
the distance each solution travelled from its initialization. Measurements are kept beside their
runs (:meth:`sparsegap.runs.Run.measure`), so a rebuild reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .. import landscape as L
from .. import params as P
from .. import stats
from ..config import redense_config
from ..runs import Run, RunStore, load_data, run_all
from ..verdict import Evidence, Verdict, detectable_line
from ..verdict import status_of as _status
from .double_descent import (CHAIN_PARAMETERS, Chains, chain_configs, chain_settings, characteristic_rounds,
                             data_config, paired)
from .procedure import executor_of

PARAMETERS = P.ParameterSpec(
    "08_redense_and_landscape",
    **CHAIN_PARAMETERS,
    noise=P.Param("float", "the label-noise level ε of the chain (magnitude pruning) studied here",
                  low=0.0, high=1.0, high_open=True),
    redense_epochs=P.Param("int", "epochs of re-dense training; None: as many as the sparse run", low=1, none=True),
    redense_lr=P.Param("float", "constant lr of re-dense training; None: the last lr of the sparse schedule",
                       low=0.0, none=True),
    path_points=P.Param("int", "points on the linear path from the sparse (α=0) to the re-dense (α=1) solution",
                        low=2),
    span=P.Param("float", "the 1-D loss curves run over α in [-span, span] (α=1: a step as long as the weights)",
                 low=0.0),
    curve_points=P.Param("int", "points on each 1-D loss curve", low=3),
    sharpness_alpha=P.Param("float", "sharpness = mean train-loss rise at α = ±sharpness_alpha", low=0.0),
    direction_seed=P.Param("int", "seed of the random directions", low=0),
    **P.fast_training_parameters(), **P.environment_parameters(),
)

HEURISTIC = "magnitude"


def redense_rounds(chains: Chains, noise: float) -> list[int]:
    """The rounds re-dense training runs at: the chain's characteristic sparsities (overfitting, sweet spot,
    underfitting) that exist, the rounds of the paper's Fig. 4-6 and the ones this chapter's verdicts read."""
    ks = characteristic_rounds(chains.chain(HEURISTIC, noise), noise)
    return sorted({r for k, r in ks.items() if k != "dense" and r is not None})


def configs(p: dict, rounds: Sequence[int] | None = None) -> tuple[dict, dict]:
    """(the chain's runs, the re-dense runs), both keyed by (heuristic, ε, round, seed); re-dense at ``rounds``
    (None: every pruned round)."""
    model, train, imp = chain_settings(p)
    chain = chain_configs(data_config(p, p["noise"]), model, train, heuristic=HEURISTIC, rounds=p["rounds"],
                          seeds=p["seeds"], **imp)
    keep = set(range(1, p["rounds"] + 1) if rounds is None else rounds)
    redense = {k: redense_config(cfg, epochs=p["redense_epochs"], lr=p["redense_lr"])
               for k, cfg in chain.items() if k[2] > 0 and k[2] in keep}
    return chain, redense


@dataclass
class Redense:
    """The sparse chain and its re-dense runs (at the chain's characteristic rounds)."""

    chains: Chains
    redense: dict[tuple, Run]
    noise: float

    @property
    def rounds(self) -> list[int]:
        """The rounds with re-dense runs."""
        return sorted({k[2] for k in self.redense})

    @property
    def chain_rounds(self) -> list[int]:
        return sorted({k[2] for k in self.chains.runs})

    @property
    def seeds(self) -> list[int]:
        return sorted({k[3] for k in self.chains.runs})

    def sparse(self, rnd: int, seed: int) -> Run:
        return self.chains.runs[(HEURISTIC, self.noise, rnd, seed)]

    def dense(self, rnd: int, seed: int) -> Run:
        return self.redense[(HEURISTIC, self.noise, rnd, seed)]

    def characteristic(self) -> dict[str, int | None]:
        return characteristic_rounds(self.chains.chain(HEURISTIC, self.noise), self.noise)

    def table(self) -> pd.DataFrame:
        """Per round and seed: sparse and re-dense last-epoch accuracies (train, test, permuted samples)
        and the L2 distance each travelled from the sparse run's initialization (its rewound weights);
        the re-dense columns are NaN at rounds without a re-dense run."""
        rows = []
        for rnd in self.chain_rounds:
            for seed in self.seeds:
                sp = self.sparse(rnd, seed)
                row = {"round": rnd, "seed": seed, "sparsity": sp.config.sparsity,
                       **_final(sp, "sparse"), "sparse_distance": distance(sp, sp)}
                if (HEURISTIC, self.noise, rnd, seed) in self.redense:
                    rd = self.dense(rnd, seed)
                    row |= {**_final(rd, "redense"), "redense_distance": distance(rd, sp)}
                else:
                    row |= {f"redense_{k}": np.nan for k in ("train_acc", "test_acc", "permuted", "distance")}
                rows.append(row)
        return pd.DataFrame(rows)


def _final(run: Run, prefix: str) -> dict:
    h = run.history
    if run.diverged:
        return {f"{prefix}_{k}": np.nan for k in ("train_acc", "test_acc", "permuted")}
    return {f"{prefix}_train_acc": h["train_acc"][-1], f"{prefix}_test_acc": h["test_acc"][-1],
            f"{prefix}_permuted": h["trace"]["accuracy:permuted"]["value"][-1]}


def distance(run: Run, start: Run) -> float:
    """L2 distance of ``run``'s solution from ``start``'s initialization (weights and biases of the
    Conv and Linear layers): for a sparse run its own start, for a re-dense run its sparse parent's."""
    return run.measure("distance_from_init", {"from": start.config.run_id},
                       lambda: {"total": L.distance_from_init(run.model(), start.init_model())["total"]})["total"]


def run_redense(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
                executor=None) -> Redense:
    """Train (or load) the chain, then re-dense runs at its characteristic rounds (:func:`redense_rounds`)."""
    executor = executor_of(p, executor)
    chain, _ = configs(p, rounds=())
    chains = Chains(dict(zip(chain.keys(), run_all(list(chain.values()), store, device=device, progress=progress,
                                                   executor=executor))))
    _, redense = configs(p, rounds=redense_rounds(chains, p["noise"]))
    runs = run_all(list(redense.values()), store, device=device, progress=progress, executor=executor) if redense else []
    return Redense(chains, dict(zip(redense.keys(), runs)), p["noise"])


def interpolation(exp: Redense, rnd: int, seed: int, points: int, *, device: str = "cpu") -> pd.DataFrame:
    """Loss and accuracy on train and test along (1-α)·sparse + α·re-dense (D-F5), evaluated on ``device``
    (:func:`~sparsegap.runs.measure_plan.measurement_device`)."""
    from ..runs.measure_plan import measurement_device
    sp, rd = exp.sparse(rnd, seed), exp.dense(rnd, seed)
    data = load_data(sp.config.data)
    ts = np.linspace(0.0, 1.0, points)
    rows = rd.measure("linear_path", {"from": sp.config.run_id, "points": points},
                      lambda: L.linear_path(sp.model(), rd.model(), data, ts=ts,
                                            device=measurement_device(device)).to_dict("records"))
    return pd.DataFrame(rows).assign(round=rnd, seed=seed, sparsity=sp.config.sparsity)


def curve(run: Run, *, span: float, points: int, seed: int, device: str = "cpu") -> pd.DataFrame:
    """Train loss along a filter-normalized random direction around ``run``'s solution (D-F6), evaluated on
    ``device``. For a sparse run the direction is masked first (it stays in the sparse subspace)."""
    from ..runs.measure_plan import measurement_device
    alphas = np.linspace(-span, span, points)

    def measure():
        model = run.model()
        d = L.filter_normalized_direction(model, masks=run.masks, seed=seed)
        return L.loss_along_direction(model, d, load_data(run.config.data), alphas=alphas,
                                      device=measurement_device(device)).to_dict("records")
    return pd.DataFrame(run.measure("loss_1d", {"span": span, "points": points, "seed": seed}, measure))


def curves(exp: Redense, *, span: float, points: int, seed: int, device: str = "cpu") -> pd.DataFrame:
    """1-D train-loss curves around every sparse solution (round 0: the dense one) and every re-dense one."""
    out = []
    for rnd in [0, *exp.rounds]:
        for s in exp.seeds:
            sp = exp.sparse(rnd, s)
            out.append(curve(sp, span=span, points=points, seed=seed, device=device).assign(
                solution="sparse" if rnd else "dense", round=rnd, seed=s, sparsity=sp.config.sparsity))
            if rnd:
                out.append(curve(exp.dense(rnd, s), span=span, points=points, seed=seed, device=device).assign(
                    solution="re-dense", round=rnd, seed=s, sparsity=sp.config.sparsity))
    return pd.concat(out, ignore_index=True)


def sharpness(curves_: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per solution, round and seed: the mean rise of the train loss at α = ±alpha over its value at α = 0
    (the grid point nearest each)."""
    rows = []
    for (sol, rnd, seed), c in curves_.groupby(["solution", "round", "seed"]):
        a = c.alpha.to_numpy()
        at = lambda x: c.loss.to_numpy()[np.argmin(np.abs(a - x))]  # noqa: E731
        rows.append({"solution": sol, "round": rnd, "seed": seed, "sparsity": c.sparsity.iloc[0],
                     "sharpness": (at(-alpha) + at(alpha)) / 2 - at(0.0)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- verdicts

CLAIM_REDENSE = ("At high sparsity, re-dense training escapes the sparse solution: with the pruned weights back it "
                 "memorizes the noisy labels again and tests worse than the sparse solution.")
CLAIM_PATH = ("The training loss decreases monotonically along the straight line from a highly sparse solution to "
              "its re-dense solution: the sparse solution is no minimum of the dense space.")
CLAIM_SHARP = ("The higher the sparsity before re-dense training, the sharper the re-dense minimum, and re-dense "
               "minima are sharper than the dense network's.")
CLAIM_DIST = ("For LeNet-300-100 on MNIST, the sparse solutions' distance from initialization against sparsity is "
              "double-descent-like, and the distance and test accuracy curves are near mirror images, for sparse and "
              "re-dense solutions.")

# D-F5: a path counts as decreasing monotonically when no climb along it exceeds this share of the loss at
# its sparse end (float noise and the grid's resolution, not a barrier).
CLIMB_TOL = 0.01


def _by_seed(table: pd.DataFrame, rnd: int, column: str) -> pd.Series:
    sel = table[table["round"] == rnd].set_index("seed")[column].dropna()
    return sel.sort_index()


def high_rounds(keys: dict) -> list[tuple[str, int]]:
    """The characteristic high sparsities (sweet spot, underfitting) that exist, without repeats."""
    out, seen = [], set()
    for name in ("sweet spot", "underfitting"):
        if keys.get(name) is not None and keys[name] not in seen:
            out.append((name, keys[name]))
            seen.add(keys[name])
    return out


def _seeds(table: pd.DataFrame) -> tuple[int, ...]:
    return tuple(sorted(int(s) for s in table.seed.unique()))


def redense_verdict(table: pd.DataFrame, keys: dict, *, scale: str = "") -> Verdict:
    """D-F4, at the sweet spot (the highly sparse solution that tests best), paired over seeds (a re-dense
    run continues its own seed's sparse run): (1) the re-dense solution's last-epoch test accuracy is
    below the sparse one's; (2) its train accuracy on the permuted samples (memorized noisy labels) is
    above. "Clearly": the 95% t-interval of the paired difference excludes zero. The underfitting round
    is shown as context. Inconclusive without a sweet spot."""
    sweet = keys.get("sweet spot")
    seeds = _seeds(table)
    if sweet is None or table.loc[table["round"] == sweet, "redense_test_acc"].isna().all():
        return Verdict("D-F4", CLAIM_REDENSE, "inconclusive",
                       ("The chain has no sweet spot (see the characteristic sparsities above), so there is no highly "
                        "sparse solution that tests well to re-dense from.",), scale,
                       finding="Without a sweet spot in the chain, re-dense training cannot be tested.", seeds=seeds)
    col = lambda r, c: _by_seed(table, r, c)  # noqa: E731
    worse = paired(col(sweet, "sparse_test_acc"), col(sweet, "redense_test_acc"))
    memo = paired(col(sweet, "redense_permuted"), col(sweet, "sparse_permuted"))
    s = float(table.loc[table["round"] == sweet, "sparsity"].iloc[0])
    evidence = [Evidence(f"test accuracy, sparse − re-dense, at the sweet spot ({s:.2%})", worse, "+.1%",
                         outcome=worse.test(+1)),
                Evidence(f"permuted samples' train accuracy (memorization), re-dense − sparse, at the sweet spot",
                         memo, "+.1%", outcome=memo.test(+1))]
    under = keys.get("underfitting")
    if under is not None and not table.loc[table["round"] == under, "redense_test_acc"].isna().all():
        evidence.append(Evidence("test accuracy, sparse − re-dense, at the underfitting round", paired(
            col(under, "sparse_test_acc"), col(under, "redense_test_acc")), "+.1%"))
    finding = (f"At the sweet spot ({s:.2%}) the sparse solution tests {worse.format('+.1%')} against its re-dense one, "
               f"which fits {memo.format('+.1%')} more of the permuted (noisy) labels.")
    reasons = (detectable_line("test-accuracy gap", worse, ".1%"),)
    return Verdict("D-F4", CLAIM_REDENSE, _status([worse.test(+1), memo.test(+1)]), reasons, scale, finding=finding,
                   evidence=tuple(evidence), seeds=seeds)


def monotone(losses: Sequence[float], tol: float = 0.01) -> bool:
    """Decreasing from the first point to the last, allowing a rise of ``tol`` × the total drop between
    neighbours (float noise); a path whose last point is not below its first is not decreasing."""
    v = np.asarray(losses, dtype=float)
    drop = v[0] - v[-1]
    return bool(drop > 0 and np.all(np.diff(v) <= tol * drop))


def climb(losses: Sequence[float]) -> float:
    """The largest climb along a path: the most the loss rises above the lowest value reached before
    (0 for a path that never goes up), as a share of the loss at its start."""
    v = np.asarray(losses, dtype=float)
    return float(np.max(v - np.minimum.accumulate(v)) / v[0])


def path_measures(paths: pd.DataFrame, rnd: int) -> pd.DataFrame:
    """Per seed, on the train-loss path of round ``rnd``: ``drop`` (loss at the sparse end minus that at
    the re-dense end, as a share of the former) and ``climb`` (:func:`climb`)."""
    rows = []
    for seed, p in paths[(paths["round"] == rnd) & (paths.subset == "train")].groupby("seed"):
        v = p.sort_values("t").loss.to_numpy()
        rows.append({"seed": int(seed), "drop": (v[0] - v[-1]) / v[0], "climb": climb(v)})
    return pd.DataFrame(rows, columns=["seed", "drop", "climb"]).set_index("seed")


def path_verdict(paths: pd.DataFrame, keys: dict, *, scale: str = "", tol: float = CLIMB_TOL) -> Verdict:
    """D-F5, at the sweet-spot and underfitting rounds, over seeds: (1) the train loss at the re-dense end
    is below that at the sparse end (the relative drop's 95% interval lies above zero); (2) the path
    decreases monotonically: the largest climb along it (:func:`climb`) lies clearly below ``tol``
    (the interval of climb - tol lies below zero). Inconclusive without a high characteristic round."""
    parts, evidence, reasons = [], [], []
    seeds = tuple(sorted(int(s) for s in paths.seed.unique())) if len(paths) else ()
    for name, rnd in high_rounds(keys):
        m = path_measures(paths, rnd)
        if m.empty:
            continue
        s = float(paths.loc[paths["round"] == rnd, "sparsity"].iloc[0])
        climb_iv = stats.mean_interval(m["climb"] - tol)
        drop_iv = stats.mean_interval(m["drop"])
        evidence.append(Evidence(f"{name} ({s:.2%}): largest climb along the path minus {tol:.0%}, as a share of the "
                                 f"sparse end's train loss", climb_iv, "+.2%", outcome=climb_iv.test(-1)))
        evidence.append(Evidence(f"{name} ({s:.2%}): train-loss drop from the sparse to the re-dense end, share",
                                 drop_iv, ".1%", outcome=drop_iv.test(+1)))
        parts += [climb_iv.test(-1), drop_iv.test(+1)]
        reasons.append(f"{name}: monotone (old per-seed rule) in {sum(monotone(v) for v in _losses(paths, rnd))} of "
                       f"{len(m)} seeds.")
    if not parts:
        return Verdict("D-F5", CLAIM_PATH, "inconclusive", ("No high characteristic sparsity to test.",), scale,
                       finding="The chain has no sweet spot or underfitting round, so no path from a highly sparse "
                               "solution can be tested.", seeds=seeds)
    ev = evidence[0]
    finding = (f"Along the path from the sparse to the re-dense solution at the {ev.name.split(':')[0]}, the train loss "
               f"falls by {evidence[1].effect.format('.1%')} of its value and climbs at most "
               f"{(ev.effect.estimate + tol):.2%} on the way (seed mean).")
    return Verdict("D-F5", CLAIM_PATH, _status(parts), tuple(reasons), scale, finding=finding,
                   evidence=tuple(evidence), seeds=seeds)


def _losses(paths: pd.DataFrame, rnd: int) -> list[np.ndarray]:
    p = paths[(paths["round"] == rnd) & (paths.subset == "train")]
    return [g.sort_values("t").loss.to_numpy() for _, g in p.groupby("seed")]


def sharpness_verdict(sharp: pd.DataFrame, keys: dict, alpha: float, *, scale: str = "") -> Verdict:
    """D-F6, on the re-dense minima at the characteristic sparsities (the paper's Fig. 6), paired over seeds
    (every solution of a seed descends from its dense run): (1) each step to a higher characteristic
    sparsity (overfitting -> sweet spot -> underfitting) gives a sharper re-dense minimum; (2) the
    re-dense minimum at the sweet spot is sharper than the dense network's. Sharpness is the mean rise
    of the train loss at α = ±alpha along a filter-normalized direction."""
    rd = sharp[sharp.solution == "re-dense"]
    col = lambda sol, r: sharp[(sharp.solution == sol) & (sharp["round"] == r)].set_index("seed").sharpness.sort_index()  # noqa: E731
    present = [(k, keys[k]) for k in ("overfitting", "sweet spot", "underfitting")
               if keys.get(k) is not None and keys[k] in set(rd["round"])]
    seeds = tuple(sorted(int(s) for s in sharp.seed.unique())) if len(sharp) else ()
    parts, evidence = [], []
    for (a, ra), (b, rb) in zip(present, present[1:]):
        iv = paired(col("re-dense", rb), col("re-dense", ra))
        evidence.append(Evidence(f"re-dense sharpness, {b} − {a}", iv, "+.3g", outcome=iv.test(+1)))
        parts.append(iv.test(+1))
    sweet = keys.get("sweet spot")
    if sweet is not None and sweet in set(rd["round"]):
        iv = paired(col("re-dense", sweet), col("dense", 0))
        evidence.append(Evidence("sharpness, re-dense minimum at the sweet spot − dense minimum", iv, "+.3g",
                                 outcome=iv.test(+1)))
        parts.append(iv.test(+1))
    if not parts:
        return Verdict("D-F6", CLAIM_SHARP, "inconclusive",
                       ("Fewer than two characteristic sparsities with a re-dense minimum, and no sweet spot.",), scale,
                       finding="The chain has too few characteristic sparsities to compare re-dense minima.",
                       seeds=seeds)
    m = stats.seed_summary(sharp, ["solution", "round"], ["sharpness"])
    reasons = (f"Sharpness = mean rise of the train loss at α = ±{alpha:g} along a filter-normalized direction; seed "
               f"means: " + ", ".join(f"{r.solution} round {r['round']} {r.sharpness:.3g}" for _, r in m.iterrows()) + ".",)
    key = evidence[0]
    finding = f"{key.name[0].upper()}{key.name[1:]}: {key.effect.format('+.3g')} (paired over seeds)."
    return Verdict("D-F6", CLAIM_SHARP, _status(parts), reasons, scale, finding=finding, evidence=tuple(evidence),
                   seeds=seeds)


def _seed_correlations(table: pd.DataFrame, x: str, y: str) -> list[float]:
    """Per seed, Pearson's r between columns x and y over the rounds where both exist (3 or more)."""
    out = []
    for _, g in table.dropna(subset=[x, y]).groupby("seed"):
        if len(g) >= 3 and g[x].nunique() > 1 and g[y].nunique() > 1:
            out.append(float(np.corrcoef(g[x], g[y])[0, 1]))
    return out


def distance_verdict(table: pd.DataFrame, *, scale: str = "") -> Verdict:
    """D-F7, the paper's LeNet-300-100 statement (its Fig. 7, left): (1) the sparse solutions' distance
    from initialization is double-descent-like against sparsity: it rises from the dense network's to a
    peak inside the sweep (the pruned round of the largest mean distance, the last round excluded) and
    falls again by the last round, both paired over seeds; (2) distance and test accuracy are mirror
    images: per seed, Pearson's r between them over the rounds is clearly negative (t-interval of the
    per-seed r's), for sparse solutions (every round, the dense one included) and for re-dense ones
    (the rounds with a re-dense run)."""
    seeds = _seeds(table)
    rounds = sorted(table["round"].unique())
    pruned = [r for r in rounds if r > 0]
    parts, evidence = [], []
    if len(pruned) >= 2:
        mean = table.groupby("round").sparse_distance.mean()
        peak = int(mean[pruned[:-1]].idxmax())
        last = pruned[-1]
        d = lambda r: _by_seed(table, r, "sparse_distance")  # noqa: E731
        sp = lambda r: float(table.loc[table["round"] == r, "sparsity"].iloc[0])  # noqa: E731
        rise, fall = paired(d(peak), d(0)), paired(d(peak), d(last))
        evidence += [Evidence(f"sparse distance from initialization, peak ({sp(peak):.2%}) − dense", rise, "+.3g",
                              outcome=rise.test(+1)),
                     Evidence(f"sparse distance, peak ({sp(peak):.2%}) − last round ({sp(last):.2%})", fall, "+.3g",
                              outcome=fall.test(+1))]
        parts += [rise.test(+1), fall.test(+1)]
    for sol, name in (("sparse", "sparse"), ("redense", "re-dense")):
        rs = _seed_correlations(table, f"{sol}_distance", f"{sol}_test_acc")
        if rs:
            iv = stats.mean_interval(rs)
            evidence.append(Evidence(f"{name}: per-seed correlation of distance and test accuracy over sparsity", iv,
                                     "+.2f", outcome=iv.test(-1)))
            parts.append(iv.test(-1))
        else:
            parts.append("undecided")
    if not evidence:
        return Verdict("D-F7", CLAIM_DIST, "inconclusive", ("Too few rounds to read a trend.",), scale,
                       finding="The chain has too few rounds to read the distance against sparsity.", seeds=seeds)
    reasons = ("The paper's ResNet statement (distance declining steadily; sparse farther than re-dense at low "
               "sparsity, closer at high) is not the LeNet one and is not tested here.",)
    if len(pruned) >= 2:
        reasons += (detectable_line("distance rise", rise, ".3g"),)
    key = evidence[0]
    if len(pruned) >= 2:
        shape = ("rises to a peak inside the sweep and falls again" if parts[:2] == ["holds", "holds"]
                 else "is not clearly double-descent-like")
        finding = (f"The sparse distance from initialization {shape}: at its largest interior round ({sp(peak):.2%}) "
                   f"it is {rise.format('+.3g')} from the dense network's and {fall.format('+.3g')} from the last "
                   f"round's.")
    else:
        finding = f"{key.name}: {key.effect.format('+.2f')}."
    return Verdict("D-F7", CLAIM_DIST, _status(parts), reasons, scale, finding=finding, evidence=tuple(evidence),
                   seeds=seeds)


def planned_runs(p: dict) -> list:
    """The chain and its re-dense runs (for ``bookbuild --plan``). The re-dense rounds are the chain's
    characteristic ones, known once the chain is trained: read from the store when it holds the whole
    chain, else stand-ins at the last three rounds (the same number of runs as three characteristic rounds)."""
    chain, redense = configs(p, rounds=_planned_rounds(p))
    return [*chain.values(), *redense.values()]


def _planned_rounds(p: dict) -> list[int]:
    chain, _ = configs(p, rounds=())
    store = RunStore(p.get("runs_dir"))
    if all(store.is_done(c) for c in chain.values()):
        chains = Chains({k: store.load(c) for k, c in chain.items()})
        return redense_rounds(chains, p["noise"])
    return list(range(max(1, p["rounds"] - 2), p["rounds"] + 1))


def planned_measurements(p: dict) -> list:
    """What the chapter measures on the runs of :func:`planned_runs` (for ``bookbuild --plan``): each run's
    distance from its start, the line sparse -> re-dense and the 1-D loss curves around both solutions."""
    from ..runs.measure_plan import path_passes, planned
    chain, redense = configs(p, rounds=_planned_rounds(p))
    alphas = np.linspace(-p["span"], p["span"], p["curve_points"])
    interior = int(np.count_nonzero(alphas != 0.0))      # loss_along_direction re-estimates BatchNorm off α = 0
    curve = {"span": p["span"], "points": p["curve_points"], "seed": p["direction_seed"]}
    out = []
    for key, sp in chain.items():
        out.append(planned(sp, "distance_from_init", {"from": sp.run_id}))
        if key[2] == 0 or key in redense:
            out.append(planned(sp, "loss_1d", curve, *path_passes(sp, p["curve_points"], ("train",), interior)))
        if key in redense:
            rd = redense[key]
            out += [planned(rd, "distance_from_init", {"from": sp.run_id}),
                    planned(rd, "linear_path", {"from": sp.run_id, "points": p["path_points"]},
                            *path_passes(rd, p["path_points"])),
                    planned(rd, "loss_1d", curve, *path_passes(rd, p["curve_points"], ("train",), interior))]
    return out
