"""Chapter 6, re-dense training and the landscape around sparse solutions (seed 001: D-F4 to D-F7).

One chain of the double-descent chapter (magnitude pruning at one ε, the very same runs, shared
through the store), and for every round a re-dense run (``RunConfig(kind="redense")``): the pruned
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
from ..config import redense_config
from ..runs import Run, RunStore, load_data, run_all
from ..verdict import Verdict, clearly_above, mean_std
from ..verdict import status_of as _status
from .double_descent import (CHAIN_PARAMETERS, Chains, chain_configs, chain_settings, characteristic_rounds,
                             data_config)

PARAMETERS = P.ParameterSpec(
    "06_redense_and_landscape",
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


def configs(p: dict) -> tuple[dict, dict]:
    """(the chain's runs, the re-dense runs), both keyed by (heuristic, ε, round, seed); re-dense from round 1 on."""
    model, train, imp = chain_settings(p)
    chain = chain_configs(data_config(p, p["noise"]), model, train, heuristic=HEURISTIC, rounds=p["rounds"],
                          seeds=p["seeds"], **imp)
    redense = {k: redense_config(cfg, epochs=p["redense_epochs"], lr=p["redense_lr"])
               for k, cfg in chain.items() if k[2] > 0}
    return chain, redense


@dataclass
class Redense:
    """The sparse chain and its re-dense runs."""

    chains: Chains
    redense: dict[tuple, Run]
    noise: float

    @property
    def rounds(self) -> list[int]:
        return sorted({k[2] for k in self.redense})

    @property
    def seeds(self) -> list[int]:
        return sorted({k[3] for k in self.redense})

    def sparse(self, rnd: int, seed: int) -> Run:
        return self.chains.runs[(HEURISTIC, self.noise, rnd, seed)]

    def dense(self, rnd: int, seed: int) -> Run:
        return self.redense[(HEURISTIC, self.noise, rnd, seed)]

    def characteristic(self) -> dict[str, int | None]:
        return characteristic_rounds(self.chains.chain(HEURISTIC, self.noise), self.noise)

    def table(self) -> pd.DataFrame:
        """Per round and seed: sparse and re-dense last-epoch accuracies (train, test, permuted samples)
        and the L2 distance each travelled from the sparse run's initialization (its rewound weights)."""
        rows = []
        for rnd in [0, *self.rounds]:
            for seed in self.seeds:
                sp = self.sparse(rnd, seed)
                row = {"round": rnd, "seed": seed, "sparsity": sp.config.sparsity,
                       **_final(sp, "sparse"), "sparse_distance": distance(sp, sp)}
                if rnd > 0:
                    rd = self.dense(rnd, seed)
                    row |= {**_final(rd, "redense"), "redense_distance": distance(rd, sp)}
                rows.append(row)
        return pd.DataFrame(rows)


def _final(run: Run, prefix: str) -> dict:
    h = run.history
    if h.get("diverged"):
        return {f"{prefix}_{k}": np.nan for k in ("train_acc", "test_acc", "permuted")}
    return {f"{prefix}_train_acc": h["train_acc"][-1], f"{prefix}_test_acc": h["test_acc"][-1],
            f"{prefix}_permuted": h["trace"]["accuracy:permuted"]["value"][-1]}


def distance(run: Run, start: Run) -> float:
    """L2 distance of ``run``'s solution from ``start``'s initialization (weights and biases of the
    Conv and Linear layers): for a sparse run its own start, for a re-dense run its sparse parent's."""
    return run.measure("distance_from_init", {"from": start.config.run_id},
                       lambda: {"total": L.distance_from_init(run.model(), start.init_model())["total"]})["total"]


def run_redense(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True) -> Redense:
    chain, redense = configs(p)
    runs = run_all([*chain.values(), *redense.values()], store, device=device, progress=progress)
    chain_runs = dict(zip(chain.keys(), runs[:len(chain)]))
    return Redense(Chains(chain_runs), dict(zip(redense.keys(), runs[len(chain):])), p["noise"])


def interpolation(exp: Redense, rnd: int, seed: int, points: int) -> pd.DataFrame:
    """Loss and accuracy on train and test along (1-α)·sparse + α·re-dense (D-F5)."""
    sp, rd = exp.sparse(rnd, seed), exp.dense(rnd, seed)
    data = load_data(sp.config.data)
    ts = np.linspace(0.0, 1.0, points)
    rows = rd.measure("linear_path", {"from": sp.config.run_id, "points": points},
                      lambda: L.linear_path(sp.model(), rd.model(), data, ts=ts).to_dict("records"))
    return pd.DataFrame(rows).assign(round=rnd, seed=seed, sparsity=sp.config.sparsity)


def curve(run: Run, *, span: float, points: int, seed: int) -> pd.DataFrame:
    """Train loss along a filter-normalized random direction around ``run``'s solution (D-F6). For a
    sparse run the direction is masked first (it stays in the sparse subspace)."""
    alphas = np.linspace(-span, span, points)

    def measure():
        model = run.model()
        d = L.filter_normalized_direction(model, masks=run.masks, seed=seed)
        return L.loss_along_direction(model, d, load_data(run.config.data), alphas=alphas).to_dict("records")
    return pd.DataFrame(run.measure("loss_1d", {"span": span, "points": points, "seed": seed}, measure))


def curves(exp: Redense, *, span: float, points: int, seed: int) -> pd.DataFrame:
    """1-D train-loss curves around every sparse solution (round 0: the dense one) and every re-dense one."""
    out = []
    for rnd in [0, *exp.rounds]:
        for s in exp.seeds:
            sp = exp.sparse(rnd, s)
            out.append(curve(sp, span=span, points=points, seed=seed).assign(
                solution="sparse" if rnd else "dense", round=rnd, seed=s, sparsity=sp.config.sparsity))
            if rnd:
                out.append(curve(exp.dense(rnd, s), span=span, points=points, seed=seed).assign(
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
CLAIM_SHARP = "The higher the sparsity before re-dense training, the sharper the re-dense minimum."
CLAIM_DIST = ("The distance from initialization shrinks as sparsity rises, for sparse and re-dense solutions, and "
              "mirrors the test accuracy.")


def _rank_corr(x, y) -> float:
    x, y = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(x, y)[0, 1])


def high_rounds(exp: Redense) -> list[tuple[str, int]]:
    """The characteristic high sparsities (sweet spot, underfitting) that exist, without repeats."""
    ks = exp.characteristic()
    out, seen = [], set()
    for name in ("sweet spot", "underfitting"):
        if ks[name] is not None and ks[name] not in seen:
            out.append((name, ks[name]))
            seen.add(ks[name])
    return out


def redense_verdict(exp: Redense, *, scale: str = "") -> Verdict:
    """D-F4, at the sweet-spot round: (1) the re-dense solution's last-epoch test accuracy is clearly
    below the sparse one's; (2) its accuracy on the permuted samples (memorization) is clearly above.
    'Clearly': more than two standard errors over seeds."""
    sweet = exp.characteristic()["sweet spot"]
    if sweet is None:
        return Verdict("D-F4", CLAIM_REDENSE, "not reproduced",
                       ("The chain has no sweet spot (no round after the overfitting one) to re-dense from.",), scale)
    t = exp.table().set_index("round").loc[[sweet]]
    worse = clearly_above(t.sparse_test_acc, t.redense_test_acc)
    memorizes = clearly_above(t.redense_permuted, t.sparse_permuted)
    reasons = (
        f"At the sweet spot (sparsity {t.sparsity.iloc[0]:.2%}), seed mean ± std: test accuracy sparse "
        f"{mean_std(t.sparse_test_acc)}, re-dense {mean_std(t.redense_test_acc)} (clearly worse: {'yes' if worse else 'no'}).",
        f"Train accuracy on the permuted samples (noisy labels fitted): sparse {mean_std(t.sparse_permuted)}, re-dense "
        f"{mean_std(t.redense_permuted)} (clearly more memorization: {'yes' if memorizes else 'no'}).",
    )
    return Verdict("D-F4", CLAIM_REDENSE, _status([worse, memorizes]), reasons, scale)


def monotone(losses: Sequence[float], tol: float = 0.01) -> bool:
    """Decreasing from the first point to the last, allowing a rise of ``tol`` × the total drop between
    neighbours (float noise); a path whose last point is not below its first is not decreasing."""
    v = np.asarray(losses, dtype=float)
    drop = v[0] - v[-1]
    return bool(drop > 0 and np.all(np.diff(v) <= tol * drop))


def path_verdict(paths: pd.DataFrame, exp: Redense, *, scale: str = "") -> Verdict:
    """D-F5: at the sweet-spot and underfitting rounds, for every seed, the train loss along the path
    from the sparse (α=0) to the re-dense (α=1) solution decreases monotonically (:func:`monotone`)."""
    results, reasons = [], []
    for name, rnd in high_rounds(exp):
        for seed in exp.seeds:
            p = paths[(paths["round"] == rnd) & (paths.seed == seed) & (paths.subset == "train")].sort_values("t")
            ok = monotone(p.loss)
            results.append(ok)
            reasons.append(f"{name} (sparsity {p.sparsity.iloc[0]:.2%}), seed {seed}: train loss {p.loss.iloc[0]:.3f} "
                           f"at the sparse end, {p.loss.iloc[-1]:.3f} at the re-dense end, highest rise between "
                           f"neighbours {np.diff(p.loss).max():+.3f}: {'monotone' if ok else 'not monotone'}.")
    if not results:
        return Verdict("D-F5", CLAIM_PATH, "not reproduced", ("No high characteristic sparsity to test.",), scale)
    return Verdict("D-F5", CLAIM_PATH, _status(results), tuple(reasons), scale)


def sharpness_verdict(sharp: pd.DataFrame, exp: Redense, alpha: float, *, scale: str = "") -> Verdict:
    """D-F6: (1) the rank correlation between the sparsity before re-dense training and the sharpness
    of the re-dense minimum (seed means over the rounds) is at least 0.5; (2) the re-dense minimum at
    the sweet spot is sharper than the dense network's minimum."""
    m = sharp.groupby(["solution", "round"]).agg(sparsity=("sparsity", "first"), sharpness=("sharpness", "mean"))
    rd = m.loc["re-dense"]
    rho = _rank_corr(rd.sparsity, rd.sharpness)
    sweet = exp.characteristic()["sweet spot"]
    dense = float(m.loc[("dense", 0), "sharpness"])
    sharper = sweet is not None and float(rd.loc[sweet, "sharpness"]) > dense
    reasons = (
        f"Sharpness = mean rise of the train loss at α = ±{alpha:g} along a filter-normalized direction. Re-dense "
        f"minima, by sparsity before re-dense training: "
        + ", ".join(f"{s:.2%} {v:.3g}" for s, v in zip(rd.sparsity, rd.sharpness)) + ".",
        f"Rank correlation with sparsity {rho:+.2f} (claim: ≥ +0.5: {'yes' if rho >= 0.5 else 'no'}).",
        f"Dense minimum {dense:.3g}; re-dense at the sweet spot "
        + (f"{float(rd.loc[sweet, 'sharpness']):.3g}" if sweet is not None else "n/a")
        + f" (sharper: {'yes' if sharper else 'no'}).",
    )
    return Verdict("D-F6", CLAIM_SHARP, _status([rho >= 0.5, sharper]), reasons, scale)


def distance_verdict(table: pd.DataFrame, *, scale: str = "") -> Verdict:
    """D-F7, on the seed means over the pruned rounds: (1) the distance from initialization falls with
    sparsity, rank correlation ≤ -0.8, for sparse and for re-dense solutions; (2) it mirrors the test
    accuracy, Pearson correlation between distance and test accuracy ≤ -0.5, for both."""
    m = table[table["round"] > 0].groupby("round").mean(numeric_only=True)
    parts, reasons = [], []
    for sol in ("sparse", "redense"):
        rho = _rank_corr(m.sparsity, m[f"{sol}_distance"])
        r = float(np.corrcoef(m[f"{sol}_distance"], m[f"{sol}_test_acc"])[0, 1])
        parts.append((rho <= -0.8, r <= -0.5))
        name = "re-dense" if sol == "redense" else "sparse"
        reasons.append(f"{name}: distance {m[f'{sol}_distance'].iloc[0]:.3g} at {m.sparsity.iloc[0]:.2%} to "
                       f"{m[f'{sol}_distance'].iloc[-1]:.3g} at {m.sparsity.iloc[-1]:.2%}; rank correlation with "
                       f"sparsity {rho:+.2f} (≤ -0.8: {'yes' if rho <= -0.8 else 'no'}); correlation with test "
                       f"accuracy {r:+.2f} (≤ -0.5: {'yes' if r <= -0.5 else 'no'}).")
    shrinks = all(p[0] for p in parts)
    mirrors = all(p[1] for p in parts)
    return Verdict("D-F7", CLAIM_DIST, _status([shrinks, mirrors]), tuple(reasons), scale)


def planned_runs(p: dict) -> list:
    """The chain and its re-dense runs (for ``bookbuild --plan``)."""
    chain, redense = configs(p)
    return [*chain.values(), *redense.values()]
