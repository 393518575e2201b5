"""The verdict rules of chapters 5 and 6 on made-up results whose answer is known (chapters 9, 10 and 11:
tests/test_verdicts_evci.py)."""

import numpy as np
import pytest
import pandas as pd

from sparsegap.studies import gradient_snr as gs


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
    t = _snr(std_s=0.25, mean_s_first=0.1, mean_s_peak=0.5)     # Sol-S's SNR late: 2, the others' 1
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
    near = [np.roll(skewed, 0), skewed + np.eye(10, dtype=int)[1], skewed + np.eye(10, dtype=int)[2]]  # 3 seeds
    flats = [flat, flat + np.eye(10, dtype=int)[3], flat + np.eye(10, dtype=int)[4]]
    v = pt.classes_verdict({0.3: near, 0.9: flats}, y, 50, 50)
    assert v.status == "reproduced"
    assert pt.classes_verdict({0.3: flats, 0.9: flats}, y, 50, 50).status == "not reproduced"
    assert pt.classes_verdict({0.3: [skewed], 0.9: [flat]}, y, 50, 50).status == "inconclusive"   # one seed
    labels = {"train": y, "test": y}
    # P-F9/10 against two Sol-F seeds: skewed beyond a flat baseline, and a baseline as skewed as Sol-S vs Sol-F
    sf = [{"train": h, "test": h} for h in near]
    ff = [{"train": h, "test": h} for h in flats]
    assert pt.disagreement_verdict(sf, ff, labels, 50).status == "reproduced"
    assert pt.disagreement_verdict(sf, sf[1:] + sf[:1], labels, 50).status in ("not reproduced", "inconclusive")
    # a split that misses the last classes (a test set smaller than the classes) is compared over every class
    few = {"train": y, "test": np.repeat(np.arange(5), 20)}
    lopsided = np.array([40, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    sf_few = [{"train": h, "test": lopsided + np.eye(10, dtype=int)[i]} for i, h in enumerate(near)]
    ff_few = [{"train": h, "test": np.array([4, 4, 4, 4, 4, 0, 0, 0, 0, 0]) + np.eye(10, dtype=int)[i]}
              for i, h in enumerate(flats)]
    assert pt.disagreement_verdict(sf_few, ff_few, few, 50).status == "reproduced"
    assert pt.classes_verdict({0.3: near, 0.9: flats}, np.repeat(np.arange(8), 100), 50, 50).status == "reproduced"
    with pytest.raises(ValueError, match="alphas must include 0.3 and 0.9"):
        pt.check_alphas([0.0, 0.5])
