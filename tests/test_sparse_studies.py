"""The verdict rules of chapters 7, 8 and 9 on made-up results whose answer is known."""

import numpy as np
import pytest
import pandas as pd

from sparsegap.runs import Run
from sparsegap.studies import difficulty as dif
from sparsegap.studies import gradient_flow as gf
from sparsegap.studies import gradient_snr as gs


def fake_results(acc: dict, seeds=(0, 1, 2), jitter=0.003):
    """Results whose runs end at the given test accuracy per (key, sparsity)."""
    runs = {}
    for (key, s), a in acc.items():
        for seed in seeds:
            h = {"train_acc": [a], "test_acc": [a + jitter * (seed - 1)]}
            runs[(key, s, seed)] = Run(None, None, h, {}, {}, None)
    return dif.Results(runs)


def test_gap_verdict_needs_pruning_clearly_ahead():
    gap = fake_results({("P-S", 0.9): 0.85, ("L-S", 0.9): 0.80, ("S-S", 0.9): 0.78})
    assert dif.gap_verdict(gap, [0.9], 0.9).status == "reproduced"
    none = fake_results({("P-S", 0.9): 0.80, ("L-S", 0.9): 0.80, ("S-S", 0.9): 0.801})
    assert dif.gap_verdict(none, [0.9], 0.9).status == "not reproduced"
    half = fake_results({("P-S", 0.9): 0.85, ("L-S", 0.9): 0.85, ("S-S", 0.9): 0.70})
    assert dif.gap_verdict(half, [0.9], 0.9).status == "partly"


def test_init_and_zero_verdicts():
    res = fake_results({("dense", 0.0): 0.85, ("sparse-init dense", 0.9): 0.848})
    assert dif.init_verdict(res, [0.9], 0.01).status == "reproduced"
    res = fake_results({("dense", 0.0): 0.85, ("sparse-init dense", 0.9): 0.70})
    assert dif.init_verdict(res, [0.9], 0.01).status == "not reproduced"
    zero = fake_results({(0.0, 0.0): 0.85, (0.9, 0.9): 0.85, (0.99, 0.99): 0.845, (0.999, 0.999): 0.6})
    assert dif.zero_verdict(zero, [0.9, 0.99, 0.999], 0.01).status == "reproduced"
    early = fake_results({(0.0, 0.0): 0.85, (0.9, 0.9): 0.70, (0.999, 0.999): 0.6})
    assert dif.zero_verdict(early, [0.9, 0.999], 0.01).status == "partly"


def _norms(init: dict, during: dict, seeds=(0, 1, 2)):
    rows = []
    for sol in set(init) | set(during):
        for seed in seeds:
            j = 1 + 0.01 * (seed - 1)
            rows.append({"solution": sol, "sparsity": 0.9, "seed": seed, "epochs": 0.0, "grad_norm": init.get(sol, 1.0) * j})
            for e in (1.0, 2.0):
                rows.append({"solution": sol, "sparsity": 0.9, "seed": seed, "epochs": e,
                             "grad_norm": during.get(sol, 1.0) * j})
    return pd.DataFrame(rows)


def test_gradient_flow_verdicts():
    norms = _norms({"S-S": 0.1, "S-S unit": 1.0}, {"S-S": 0.2, "SET": 0.5, "RigL": 0.6})
    assert gf.init_verdict(norms, [0.9]).status == "reproduced"
    assert gf.dst_verdict(norms, [0.9]).status == "reproduced"
    flat = _norms({"S-S": 1.0, "S-S unit": 1.0}, {"S-S": 0.5, "SET": 0.2, "RigL": 0.6})
    assert gf.init_verdict(flat, [0.9]).status == "not reproduced"
    assert gf.dst_verdict(flat, [0.9]).status == "partly"


def test_rigl_and_lottery_verdicts():
    res = fake_results({("P-S", 0.9): 0.85, ("S-S", 0.9): 0.75, ("RigL", 0.9): 0.80, ("SET", 0.9): 0.77})
    v = gf.rigl_verdict(res, [0.9])
    assert v.status == "reproduced" and "closes 50% of the gap" in v.reasons[0]
    behind = fake_results({("P-S", 0.9): 0.85, ("S-S", 0.9): 0.75, ("RigL", 0.9): 0.74, ("SET", 0.9): 0.77})
    assert gf.rigl_verdict(behind, [0.9]).status == "not reproduced"
    pairs = pd.DataFrame([{"pair": p, "sparsity": 0.9, "seed": s, "distance": d + 0.01 * s,
                           "disagreement": g + 0.001 * s, "ensemble_accuracy": 0.8}
                          for p, d, g in (("L-S ↔ P-S", 1.0, 0.05), ("S-S ↔ P-S", 8.0, 0.2)) for s in (0, 1, 2)])
    assert gf.lottery_verdict(pairs).status == "reproduced"
    swapped = pairs.assign(pair=pairs.pair.map({"L-S ↔ P-S": "S-S ↔ P-S", "S-S ↔ P-S": "L-S ↔ P-S"}))
    assert gf.lottery_verdict(swapped).status == "not reproduced"


def _snr(std_s, mean_s_first, mean_s_peak):
    rows = []
    for stage in ("Sol-D", "Sol-F", "Sol-S"):
        for s in ((0.0,) if stage == "Sol-D" else (0.6, 0.95)):
            for seed in (0, 1, 2):
                for e in (1.0, 2.0, 3.0, 4.0):
                    j = 1 + 0.01 * (seed - 1)
                    std = (std_s if stage == "Sol-S" else 1.0) * j
                    mean = ((mean_s_first if e == 1.0 else mean_s_peak) if stage == "Sol-S" else 1.0) * j
                    rows.append({"stage": stage, "sparsity": s, "seed": seed, "layer": "fc1", "epochs": e,
                                 "snr": mean / std, "mean": mean, "std": std})
    return pd.DataFrame(rows)


def test_gradient_snr_verdicts():
    t = _snr(std_s=0.5, mean_s_first=0.1, mean_s_peak=0.5)
    assert gs.diffusion_verdict(t, 0.6).status == "reproduced"
    assert gs.hike_verdict(t, 0.95).status == "reproduced"
    t = _snr(std_s=2.0, mean_s_first=1.0, mean_s_peak=1.0)
    assert gs.diffusion_verdict(t, 0.6).status == "not reproduced"
    assert gs.hike_verdict(t, 0.95).status == "not reproduced"
    assert np.isfinite(t.snr).all()


def test_path_and_class_rules_of_chapter_10():
    from sparsegap.studies import paths as pt
    down = pd.DataFrame([{"alpha": a, "subset": "train", "loss": 2.3 - 2 * a, "seed": s}
                         for a in (0.0, 0.5, 1.0) for s in (0, 1)])
    assert pt.path_verdict(down).status == "reproduced"
    bump = down.assign(loss=[2.3, 2.3, 3.0, 3.0, 0.3, 0.3])
    assert pt.path_verdict(bump).status == "not reproduced"
    assert pt.tv(np.array([1, 0]), np.array([0, 1])) == 1.0 and pt.tv(np.array([2, 2]), np.array([5, 5])) == 0.0
    y = np.repeat(np.arange(10), 100)
    skewed = np.zeros(10, int)
    skewed[0] = 50
    flat = np.full(10, 5)
    v = pt.classes_verdict({0.3: [skewed], 0.9: [flat]}, y, 50, 50)
    assert v.status == "reproduced"
    assert pt.classes_verdict({0.3: [flat], 0.9: [flat]}, y, 50, 50).status == "not reproduced"
    labels = {"train": y, "test": y}
    assert pt.disagreement_verdict([{"train": skewed, "test": skewed}], labels, 50).status == "reproduced"
    assert pt.disagreement_verdict([{"train": flat, "test": flat}], labels, 50).status == "not reproduced"
    # a split that misses the last classes (a test set smaller than the classes) is compared over every class
    few = {"train": y, "test": np.repeat(np.arange(5), 20)}
    lopsided = np.array([40, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert pt.disagreement_verdict([{"train": skewed, "test": lopsided}], few, 50).status == "reproduced"
    assert pt.classes_verdict({0.3: [skewed], 0.9: [flat]}, np.repeat(np.arange(8), 100), 50, 50).status == "reproduced"
    with pytest.raises(ValueError, match="alphas must include 0.3 and 0.9"):
        pt.check_alphas([0.0, 0.5])


def test_barrier_rule_of_chapter_11():
    from sparsegap.studies import energy as en

    def paths(height, spread=0.0):
        return pd.DataFrame([{"t": t, "subset": "train", "seed": s,
                              "loss": 0.2 + s * spread + height * 4 * t * (1 - t)} for t in (0.0, 0.25, 0.5, 0.75, 1.0)
                             for s in (0, 1, 2)])
    assert en.barrier(paths(0.5)[lambda d: d.seed == 0]) == pytest.approx(0.5)
    assert en.has_barrier(paths(0.5), 0.01)[0]
    assert not en.has_barrier(paths(0.005), 0.01)[0]                 # below the floor
    assert not en.has_barrier(paths(0.05, spread=0.1), 0.01)[0]      # within the endpoints' spread
    line = paths(0.5).assign(path="line")
    both = pd.concat([paths(0.3).assign(path="quadratic, sparse"), paths(0.0).assign(path="quadratic, dense")])
    assert en.line_verdict(line, 0.01).status == "reproduced"
    assert en.curves_verdict(both, 0.01).status == "reproduced"
    flat = pd.concat([paths(0.0).assign(path="quadratic, sparse"), paths(0.3).assign(path="quadratic, dense")])
    assert en.curves_verdict(flat, 0.01).status == "not reproduced"
    ramp = pd.DataFrame([{"t": t, "subset": "train", "seed": 0, "start": "dense init", "loss": 2 - t}
                         for t in (-0.2, 0.0, 0.5, 1.0, 1.2)])
    assert en.init_verdict(ramp).status == "reproduced"
