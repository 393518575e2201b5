import pandas as pd
import pytest

from sparsegap.config import DataConfig, ModelConfig, TrainConfig
from sparsegap.studies.curvature import curvature_summary, curvature_verdict, mechanism_table
from sparsegap.studies.fisher_trajectory import fisher_trajectory_verdict, fisher_trend
from sparsegap.studies.procedure import check_seeds, check_sparsities, run_two_regimes, two_regime_configs
from sparsegap.studies.two_regimes import classify_regimes, two_regimes_verdict
from sparsegap.runs import RunStore


def summary_from(rows):
    """rows: (stage, sparsity, train_acc, test_acc, train_entropy); test loss falls with test accuracy."""
    df = pd.DataFrame(rows, columns=["stage", "sparsity", "train_acc", "test_acc", "train_entropy"])
    df["test_loss"] = 2.0 - df.test_acc
    for c in ("train_acc", "test_acc", "train_entropy", "test_loss"):
        df[c + "_std"] = 0.0
    return df


TWO_REGIMES = summary_from([
    ("Sol-D", 0.0, 1.0, 0.90, 0.01),
    ("Sol-F", 0.5, 1.0, 0.90, 0.01), ("Sol-S", 0.5, 0.999, 0.88, 0.05),
    ("Sol-F", 0.9, 1.0, 0.89, 0.02), ("Sol-S", 0.9, 0.995, 0.86, 0.08),
    ("Sol-F", 0.99, 0.97, 0.85, 0.10), ("Sol-S", 0.99, 0.90, 0.80, 0.30),
])


def test_regime_rule():
    r = classify_regimes(TWO_REGIMES, train_gap_tol=0.01, near_optimal=0.98).set_index("sparsity")
    assert list(r.regime) == ["generalization", "generalization", "optimization"]
    assert r.loc[0.99, "train_gap"] == pytest.approx(0.07)
    assert r.loc[0.5, "test_gap"] == pytest.approx(0.02)
    # a stricter tolerance moves 0.9 into the optimization regime
    assert classify_regimes(TWO_REGIMES, train_gap_tol=0.001).set_index("sparsity").regime[0.9] == "optimization"
    # both underfit, and no gap
    odd = summary_from([("Sol-D", 0.0, 1, 1, 0), ("Sol-F", 0.5, 0.9, 0.8, 0), ("Sol-S", 0.5, 0.9, 0.8, 0),
                        ("Sol-F", 0.6, 1.0, 0.8, 0), ("Sol-S", 0.6, 1.0, 0.81, 0)])
    assert list(classify_regimes(odd).regime) == ["both underfit", "no gap"]


def per_seed(summary, seeds=(0, 1, 2)):
    """Three seeds around the means, each seed moving Sol-F and Sol-S alike (a little scatter)."""
    return pd.concat([summary.assign(seed=s, test_acc=summary.test_acc + 0.002 * s * (1 + (summary.stage == "Sol-S")),
                                     test_loss=summary.test_loss - 0.002 * s,
                                     train_entropy=summary.train_entropy * (1 + 0.05 * s)) for s in seeds],
                     ignore_index=True)


def test_two_regimes_verdict():
    regimes = classify_regimes(TWO_REGIMES)
    verdict = two_regimes_verdict(regimes, per_seed(TWO_REGIMES))
    assert verdict.status == "reproduced" and verdict.claim_id == "P-F1" and verdict.seeds == (0, 1, 2)
    # the seed means alone (no seed column) decide nothing
    assert two_regimes_verdict(regimes, TWO_REGIMES).status == "inconclusive"
    overconfident = TWO_REGIMES.copy()
    overconfident.loc[overconfident.stage == "Sol-F", "test_loss"] = 5.0  # Sol-F tests better but with a higher loss
    assert two_regimes_verdict(regimes, per_seed(overconfident)).status == "partly"
    flipped = TWO_REGIMES.copy()
    flipped.loc[flipped.stage == "Sol-S", "test_acc"] = 0.95   # Sol-S tests better everywhere
    v = two_regimes_verdict(classify_regimes(flipped), per_seed(flipped))
    assert v.evidence[0].outcome == "fails" and v.status in ("partly", "not reproduced")


def history_with(values):
    n = len(values)
    return {"trace": {"fisher_trace": {"epoch": list(range(n)), "step": [10 * i for i in range(n)],
                                       "epochs": [float(i) for i in range(n)], "value": values}}}


def test_fisher_trend():
    t = fisher_trend(history_with([1.0, 5.0, 10.0, 4.0]))
    assert t["peak"] == 10.0 and t["peak_epoch"] == 2.0 and t["final"] == 4.0 and t["drop"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="fisher_trace"):
        fisher_trend({"trace": {}})


def test_fisher_trajectory_verdict():
    one = pd.DataFrame([
        ("Sol-D", 0.0, 0, 0.1, 2.0, 1.0, 0.5), ("Sol-S", 0.5, 0, 0.1, 5.0, 2.0, 0.6),
        ("Sol-F", 0.5, 0, 0.1, 2.0, 1.0, 0.5), ("Sol-S", 0.99, 0, 0.1, 9.5, 9.0, 0.05),
        ("Sol-F", 0.99, 0, 0.1, 4.0, 3.0, 0.25)],
        columns=["stage", "sparsity", "seed", "initial", "peak", "final", "drop"])
    # three seeds with a little scatter, every network trained (train accuracy far above chance)
    trends = pd.concat([one.assign(seed=s, peak=one.peak * (1 + 0.01 * s), final=one.final * (1 + 0.01 * s),
                                   drop=one["drop"] + 0.01 * s) for s in (0, 1, 2)], ignore_index=True)
    trends["train_acc"] = 0.9
    regimes = pd.DataFrame({"sparsity": [0.5, 0.99], "regime": ["generalization", "optimization"]})
    assert fisher_trajectory_verdict(trends, regimes).status == "reproduced"
    flat = trends.copy()
    flat.loc[(flat.stage == "Sol-S") & (flat.sparsity == 0.99), ["initial", "peak", "final"]] = [1.0, 1.0, 1.0]
    assert fisher_trajectory_verdict(flat, regimes).status == "partly"  # flat is not "rises, hardly drops"
    at_chance = flat.copy()
    at_chance.loc[(at_chance.stage == "Sol-S") & (at_chance.sparsity == 0.99), "train_acc"] = 0.5
    assert fisher_trajectory_verdict(at_chance, regimes).status == "inconclusive"  # flat at chance: untestable
    trends.loc[trends.sparsity == 0.99, "drop"] = 0.9
    assert fisher_trajectory_verdict(trends, regimes).status == "partly"
    trends.loc[(trends.stage == "Sol-S") & (trends.sparsity == 0.5), "drop"] = 0.1
    assert fisher_trajectory_verdict(trends, regimes).status == "not reproduced"


def curvature_rows(s_factor, seeds=(0,)):
    rows = []
    for seed in seeds:
        k = 1 + 0.1 * seed           # seeds differ; Sol-S / Sol-F of one seed stays near s_factor
        rows.append(("Sol-D", 0.0, seed, 1.0 * k, 1.0 * k, 1.0 * k))
        for sp in (0.9, 0.97):
            f = s_factor * (1 + 0.01 * seed)
            rows += [("Sol-F", sp, seed, 2.0 * k, 3.0 * k, 4.0 * k), ("Sol-S", sp, seed, 2.0 * k * f, 3.0 * k * f, 4.0 * k * f)]
    return pd.DataFrame(rows, columns=["stage", "sparsity", "seed", "fisher_trace", "hessian_trace", "jacobian_norm"])


def test_curvature_verdict_and_mechanism_table():
    assert curvature_verdict(curvature_rows(2.0, seeds=(0, 1, 2))).status == "reproduced"
    assert curvature_verdict(curvature_rows(0.5, seeds=(0, 1, 2))).status == "not reproduced"
    assert curvature_verdict(curvature_rows(2.0)).status == "inconclusive"      # one seed decides nothing
    regimes = pd.DataFrame({"sparsity": [0.9, 0.97], "regime": ["generalization", "optimization"],
                            "train_acc_F": [1.0, 0.99], "train_acc_S": [0.995, 0.9]})
    t = mechanism_table(regimes, curvature_rows(2.0))
    assert list(t.index) == [0.9, 0.97]
    assert t.loc[0.97, "train error Sol-S (%)"] == 10.0 and t.loc[0.9, "Tr(H) S/F"] == 2.0


def test_configs_share_one_dense_parent_per_seed():
    d, m, t = DataConfig("digits"), ModelConfig("mlp", hidden=(16,)), TrainConfig(epochs=2)
    cfgs = two_regime_configs(d, m, t, [0.9, 0.5], [0, 1], track=["fisher_trace@1"], min_density=0.01)
    assert len(cfgs) == 2 * (1 + 2 * 2)
    assert {c.parent for k, c in cfgs.items() if k[0] != "Sol-D"} == {cfgs[("Sol-D", 0.0, 0)], cfgs[("Sol-D", 0.0, 1)]}
    assert all(c.track == ("fisher_trace@1",) for c in cfgs.values())
    only_s = two_regime_configs(d, m, t, [0.9], [0], stages=["Sol-S"])
    assert sorted(k[0] for k in only_s) == ["Sol-D", "Sol-S"]
    with pytest.raises(ValueError, match="stages"):
        two_regime_configs(d, m, t, [0.9], [0], stages=["Sol-X"])


@pytest.mark.parametrize("bad, exc", [([1.0], ValueError), ([0.9, 0.9], ValueError), ("0.9", TypeError),
                                      ([], ValueError), ([-0.5], ValueError)])
def test_bad_sparsities(bad, exc):
    with pytest.raises(exc, match="sparsit"):
        check_sparsities(bad)


def test_small_experiment_end_to_end(tmp_path):
    exp = run_two_regimes(DataConfig("digits", train_size=200), ModelConfig("mlp", hidden=(32,)),
                          TrainConfig(epochs=2, batch_size=32), [0.5, 0.9], [0, 1],
                          store=RunStore(tmp_path), progress=False, track=["fisher_trace@1"])
    summary = exp.summary()
    assert set(summary.stage) == {"Sol-D", "Sol-F", "Sol-S"} and len(summary) == 5
    assert (summary.train_acc_std >= 0).all()
    trace = exp.history("Sol-S", 0.9, 1)["trace"]["fisher_trace"]
    assert trace["epochs"] == [0.0, 1.0, 2.0]  # at the initialisation, then after each epoch
    assert all(v > 0 for v in trace["value"])


def test_curvature_summary_marks_sol_s_above_sol_f():
    rows = curvature_rows(2.0)
    rows["hessian_trace_se"] = 0.1
    out = curvature_summary(rows)
    assert out.loc[("Sol-S", 0.9), "Tr(H)"] == "6 ↑" and out.loc[("Sol-F", 0.9), "Tr(H)"] == "3"
    rows2 = pd.concat([rows, rows.assign(seed=1, fisher_trace=rows.fisher_trace * 3)])
    assert out.columns.tolist() == ["Tr(F)", "Tr(H)", "Tr(H) s.e.", "Jacobian norm"]
    assert curvature_summary(rows2).loc[("Sol-D", 0.0), "Tr(F)"] == "2 ± 1.4"


def test_diverged_runs_are_shown_as_diverged_never_as_trained(tmp_path):
    """Sol-S trained with an absurd learning rate diverges: the tables leave it out of the means,
    the verdict says so, and the figures draw what was trained."""
    import matplotlib
    matplotlib.use("Agg")
    from sparsegap import plots
    exp = run_two_regimes(DataConfig("digits", train_size=200), ModelConfig("mlp", hidden=(32,)),
                          TrainConfig(epochs=2, batch_size=32), [0.5], [0, 1], store=RunStore(tmp_path),
                          progress=False, scratch_train=TrainConfig(epochs=2, batch_size=32, lr=1e10))
    table = exp.table
    s_rows = table[table.stage == "Sol-S"]
    assert s_rows.diverged.all() and s_rows.train_acc.isna().all()
    assert not table[table.stage != "Sol-S"].diverged.any()
    lines = exp.diverged()
    assert len(lines) == 2 and all(line.startswith("Sol-S s=0.5 seed") and "epoch 1" in line for line in lines)
    assert exp.trained_histories("Sol-S", 0.5) == [] and len(exp.trained_histories("Sol-F", 0.5)) == 2
    summary = exp.summary()
    verdict = two_regimes_verdict(classify_regimes(summary), table, diverged=lines)
    assert sum("Left out: Sol-S" in r for r in verdict.reasons) == 2 and verdict.status == "inconclusive"
    fig = plots.figure_training_curves({st: exp.trained_histories(st, 0.5) for st in ("Sol-S", "Sol-F")})
    assert any(t.get_text() == "every seed diverged" for t in fig.findobj(matplotlib.text.Text))


# ---------------------------------------------------------------- chapter 4: memorization under label noise


def _noise_history(memorized, test_acc, fisher_noisy, fisher_clean):
    """A hand-written history with the chapter's traces: one value per epoch 0..E (trackers) or 1..E."""
    epochs = [float(e) for e in range(len(memorized))]
    trace = lambda v: {"epoch": list(range(len(v))), "step": list(range(len(v))), "epochs": epochs[:len(v)],  # noqa: E731
                       "value": list(v)}
    return {"epoch": list(range(1, len(test_acc) + 1)), "test_acc": list(test_acc),
            "trace": {"accuracy:permuted": trace(memorized), "fisher_trace:permuted": trace(fisher_noisy),
                      "fisher_trace:unpermuted": trace(fisher_clean)}}


def test_clearly_above_needs_a_gap_beyond_the_seed_scatter():
    from sparsegap.verdict import clearly_above
    assert clearly_above([0.80, 0.81, 0.82], [0.70, 0.71, 0.69], paired=False)
    assert not clearly_above([0.715, 0.72, 0.71], [0.712, 0.714, 0.71], paired=False)   # 0.3 points, in the scatter
    assert not clearly_above([0.70, 0.71, 0.69], [0.80, 0.81, 0.82], paired=False)


def test_memorization_verdicts_follow_their_rules():
    from sparsegap.studies import memorization as m
    jitter = lambda x, i: [v + 0.002 * i for v in x]  # noqa: E731
    hs = {"Sol-D": [_noise_history(jitter([0.1, 0.4, 0.7, 0.8], i), jitter([0.6, 0.62, 0.6], i),
                                   [10, 40, 20, 15], [5, 10, 8, 7]) for i in range(3)],
          "Sol-F": [_noise_history(jitter([0.6, 0.8, 0.9, 0.95], i), jitter([0.55, 0.57, 0.56], i),
                                   [10, 30, 15, 12], [5, 8, 6, 6]) for i in range(3)],
          "Sol-S": [_noise_history(jitter([0.05, 0.1, 0.2, 0.3], i), jitter([0.66, 0.70, 0.72], i),
                                   [1, 20, 30, 31], [1, 10, 12, 12]) for i in range(3)]}
    a = m.memorization_verdict(hs, threshold=0.5)
    assert (a.claim_id, a.part, a.status) == ("P-F4", "a", "reproduced")
    assert "Sol-S 3 of 3" in a.reasons[1]   # never reach it
    b = m.robustness_verdict(hs)
    assert (b.part, b.status) == ("b", "reproduced")
    c = m.fisher_noise_verdict(hs, memorized=0.5, drop_threshold=0.3)
    assert c.claim_id == "P-F5" and c.status == "reproduced", c.reasons
    # Sol-S memorizing as much as Sol-F, at the same time, and testing no better: not reproduced
    hs["Sol-S"] = [_noise_history(jitter([0.6, 0.8, 0.9, 0.95], i), jitter([0.55, 0.57, 0.56], i),
                                  [10, 30, 15, 12], [5, 8, 6, 6]) for i in range(3)]
    assert m.memorization_verdict(hs).status == "not reproduced"
    assert m.robustness_verdict(hs).status == "not reproduced"   # 0.56: below Sol-D (0.60), level with Sol-F


def test_curvature_is_measured_on_a_seeded_subset_or_everything():
    import torch

    from sparsegap.studies.procedure import measurement_data
    x, y = torch.arange(50.0).view(50, 1), torch.arange(50) % 5
    assert measurement_data(x, y, None)[0] is x
    a, b = measurement_data(x, y, 10), measurement_data(x, y, 10)
    assert torch.equal(a[0], b[0]) and len(a[0]) == 10 and len(set(a[0].flatten().tolist())) == 10
    assert torch.equal(a[1], (a[0].flatten().long()) % 5)          # samples keep their labels
    assert not torch.equal(measurement_data(x, y, 10, seed=1)[0], a[0])
    for bad in (0, 51, 2.5, True):
        with pytest.raises(ValueError, match=f"measure_size={bad!r} must be None .* from 1 to 50"):
            measurement_data(x, y, bad)


# ---------------------------------------------------------------- one place builds a chapter's runs

# chapter -> (the functions its notebook calls to train, in order)
RUN_FUNCTIONS = {"01_two_regimes": ("run",), "02_fisher_trajectory": ("run", "run_unit_init"),
                 "03_curvature": ("run",), "04_memorization": ("run",), "05_paths_and_cosines": ("run_paths",),
                 "06_gradient_snr": ("run_snr",), "09_difficulty_of_sparse_training": ("run",),
                 "10_gradient_flow": ("run_flow",), "11_energy_landscape": ("run_energy",)}


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("notebook", sorted(RUN_FUNCTIONS))
def test_a_chapter_trains_exactly_the_runs_the_plan_counts(notebook, profile, monkeypatch):
    """What the study's run functions hand to run_all (what the notebook trains) is planned_runs, in order:
    the plan and the notebook build the run configs in one place; they train on the notebook's executor
    parameter. Nothing trains here."""
    from pathlib import Path

    from sparsegap import bookbuild
    from sparsegap.studies import difficulty, energy, fisher_trajectory, gradient_flow, procedure
    trained, executors = [], []

    def run_all(configs, store=None, *, executor=None, **kwargs):
        trained.extend(configs)
        executors.append(executor)
        return [None] * len(configs)
    for module in (procedure, fisher_trajectory, difficulty, gradient_flow, energy):
        monkeypatch.setattr(module, "run_all", run_all)
    nb = Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.ipynb"
    study, p = bookbuild.notebook_parameters(nb, profile)
    for name in RUN_FUNCTIONS[notebook]:
        getattr(study, name)(p, store=None, device="cpu")
    assert [c.run_id for c in trained] == [c.run_id for c in study.planned_runs(p)]
    assert trained, "the chapter trains nothing"
    assert executors and all(e == p["executor"] for e in executors)


def test_fisher_track_is_the_one_spelling_of_the_tracker():
    from sparsegap.studies.procedure import fisher_track
    assert fisher_track(5, 4000) == ("fisher_trace@5",) and fisher_track(0, 4000) == ()
    assert fisher_track(5, 50_000) == ("fisher_trace~10000@5",)     # tests/test_fisher_subset.py: the cap


def test_unit_init_sparsities_come_from_the_chapters_sparsities():
    from sparsegap.studies import fisher_trajectory
    cfgs = two_regime_configs(DataConfig("digits"), ModelConfig("mlp", hidden=(16,)), TrainConfig(epochs=2),
                              [0.5, 0.9], [0, 1])
    unit = fisher_trajectory.unit_init_configs(cfgs, [0.9])
    assert sorted(unit) == [(0.9, 0), (0.9, 1)]
    assert all(c.sparse_init == "unit" and c.kind == "scratch" and c.parent == cfgs[("Sol-S", 0.9, seed)].parent
               for (s, seed), c in unit.items())
    with pytest.raises(ValueError, match=r"unit_init_sparsities must be drawn from sparsities=\[0.5, 0.9\], got \[0.7\]"):
        fisher_trajectory.unit_init_configs(cfgs, [0.7])


def test_the_memorization_chapter_needs_noisy_labels():
    from pathlib import Path

    from sparsegap import bookbuild
    from sparsegap.studies import memorization
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "04_memorization.ipynb"
    _, p = bookbuild.notebook_parameters(nb, "smoke")
    assert all(c.data.noise == p["noise"] > 0 for c in memorization.configs(p).values())
    with pytest.raises(ValueError, match="noise must be > 0, got 0.0"):
        memorization.configs({**p, "noise": 0.0})
