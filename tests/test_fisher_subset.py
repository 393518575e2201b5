"""Tr(F) on a fixed random subset, with its standard error (issue 26): the "~N" of a fisher_trace tracker spec,
fisher_trace_se against an exact per-sample computation, the coverage of its interval over many subsets, the
cap that procedure.fisher_track puts on large sets, and the spelling it keeps for every set no larger."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsegap import bookbuild
from sparsegap.config import DataConfig, RunConfig, TrainConfig
from sparsegap.data import load_dataset
from sparsegap.metrics import FisherTraceCallback, fisher_trace
from sparsegap.metrics.fisher import FisherEstimate, fisher_trace_se, per_sample_fisher
from sparsegap.metrics.persample import per_sample_grad_norms_sq
from sparsegap.models import build_model
from sparsegap.runs import RunStore, run_all
from sparsegap.studies import memorization
from sparsegap.studies.procedure import FISHER_SAMPLES, fisher_spec, fisher_track, train_samples
from sparsegap.trackers import TrackerSpec, check_trackers, make_trackers, parse_tracker
from sparsegap.train import train

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny(seed: int = 0, inputs: int = 4, classes: int = 3):
    return build_model("mlp", num_classes=classes, input_shape=(inputs,), hidden=(8,), seed=seed)


@pytest.fixture(scope="module")
def population():
    """A tiny network and 2,000 inputs: the whole set whose exact Tr(F) the subsets estimate."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 4, generator=g)
    return tiny(), x, torch.randint(0, 3, (2000,), generator=g)


# ------------------------------------------------------------------------------- the estimate and its SE

def exact_terms(model, x) -> torch.Tensor:
    """Σ_c p(c|x_i) ||∇θ log p(c|x_i)||², one sample at a time (no chunk shares a sum with another)."""
    return torch.tensor([fisher_trace(model, x[i:i + 1], labels="exact") for i in range(len(x))], dtype=torch.float64)


@pytest.mark.parametrize("labels", ["sampled", "empirical", "exact"])
def test_fisher_trace_se_is_fisher_trace_with_the_se_of_its_per_sample_terms(population, labels):
    model, x, y = population
    x, y = x[:300], y[:300]
    g = lambda: torch.Generator().manual_seed(3)         # noqa: E731
    est = fisher_trace_se(model, x, y, labels=labels, chunk_size=64, generator=g())
    assert isinstance(est, FisherEstimate) and est.n == 300
    # the same value, bitwise, as fisher_trace always gave: stored runs and new ones agree
    assert est.value == fisher_trace(model, x, y, labels=labels, chunk_size=64, generator=g())
    terms = {"sampled": lambda: per_sample_fisher(model, x, generator=g()),
             "empirical": lambda: per_sample_grad_norms_sq(model, x, y),
             "exact": lambda: exact_terms(model, x)}[labels]()
    assert est.value == pytest.approx(float(terms.mean()), rel=1e-5)
    assert est.se == pytest.approx(float(terms.std(correction=1)) / math.sqrt(300), rel=1e-5)
    assert est.se > 0


def test_one_sample_has_no_standard_error(population):
    model, x, _ = population
    est = fisher_trace_se(model, x[:1])
    assert est.n == 1 and math.isfinite(est.value) and math.isnan(est.se)


def test_subset_estimates_cover_the_exact_full_set_trace(population):
    """200 subsets of 150 of the 2,000 samples, each with its own seed (its samples and its Monte-Carlo labels):
    the z-scores against the exact Tr(F) of the whole set fall within ±1.96 about 95% of the time, and the SE
    matches the spread of the estimates."""
    model, x, _ = population
    exact = fisher_trace(model, x, labels="exact")
    values, ses = [], []
    for seed in range(200):
        cb = FisherTraceCallback(x, max_samples=150, seed=seed, masks_from_state=False)
        state = Recorder(model)
        values.append(cb.measure(state))
        ses.append(state.se)
    values, ses = np.array(values), np.array(ses)
    z = (values - exact) / ses
    coverage = float(np.mean(np.abs(z) < 1.96))
    assert 0.88 <= coverage <= 0.99, (coverage, z.mean())
    assert abs(z.mean()) < 0.3          # unbiased: 200 z-scores of sd 1 average within ±0.3 (4 standard errors)
    assert np.std(values, ddof=1) == pytest.approx(ses.mean(), rel=0.2)
    # the whole set's SE is that of a subset scaled by sqrt(150 / 2000)
    full = fisher_trace_se(model, x)
    assert full.se == pytest.approx(ses.mean() * math.sqrt(150 / 2000), rel=0.2)


class Recorder:
    """The part of TrainState a tracker uses: the model, no masks, and log(name, value, se=...)."""

    def __init__(self, model):
        self.model, self.masks, self.se = model, None, None

    def log(self, name, value, se=None):
        self.name, self.value, self.se = name, value, se


def test_the_subset_is_drawn_once_and_is_the_same_for_every_run(population):
    _, x, _ = population
    a, b = FisherTraceCallback(x, max_samples=100), FisherTraceCallback(x, max_samples=100)
    assert len(a.x) == 100 and torch.equal(a.x, b.x)
    assert len(FisherTraceCallback(x, max_samples=5000).x) == 2000     # a cap above the set keeps it all


# ------------------------------------------------------------------------------- the spec language

def test_a_sample_count_parses_and_logs_under_the_key_without_it():
    assert parse_tracker("fisher_trace~10000@5") == TrackerSpec("fisher_trace", "train", 5, "epoch", "fisher_trace",
                                                                10000)
    p = parse_tracker("fisher_trace:permuted~10000@5")
    assert (p.key, p.samples, p.subset, p.every) == ("fisher_trace:permuted", 10000, "permuted", 5)
    assert parse_tracker("fisher_trace~50") == ("fisher_trace", "train", 1, "epoch", "fisher_trace", 50)
    assert parse_tracker("fisher_trace:test~64@3step")[1:] == ("test", 3, "step", "fisher_trace:test", 64)
    assert parse_tracker("fisher_trace@5").samples is None and parse_tracker("accuracy@1").samples is None
    d = DataConfig("digits", train_size=200)
    assert RunConfig("dense", d, track=("fisher_trace~100@5",)).hash() != RunConfig("dense", d,
                                                                                    track=("fisher_trace@5",)).hash()


@pytest.mark.parametrize("spec, match", [
    ("accuracy~100@1", r"'accuracy~100@1'.*allowed for fisher_trace only, not accuracy"),
    ("loss:test~100", r"'loss:test~100'.*allowed for fisher_trace only"),
    ("grad_snr~10@1", r"allowed for fisher_trace only"),
    ("fisher_trace~1@5", r"'fisher_trace~1@5'.*int >= 2.*got '~1'"),
    ("fisher_trace~0@5", r"int >= 2"), ("fisher_trace~0100@5", r"without leading zeros"),
    ("fisher_trace~@5", "must look like"), ("fisher_trace~-5@5", "must look like"),
    ("fisher_trace@5~100", "must look like"), ("fisher_trace~100:permuted@5", "must look like"),
])
def test_bad_sample_counts_are_refused_when_the_run_config_is_built(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_tracker(spec)
    with pytest.raises(ValueError, match=match):
        RunConfig("dense", DataConfig("digits", noise=0.3), track=(spec,))


def test_two_specs_of_one_key_are_refused_with_or_without_a_sample_count():
    with pytest.raises(ValueError, match="one key 'fisher_trace'"):
        check_trackers(["fisher_trace~100@5", "fisher_trace@5"], DataConfig("digits"))
    with pytest.raises(ValueError, match="one key 'fisher_trace:permuted'"):
        RunConfig("dense", DataConfig("digits", noise=0.3),
                  track=("fisher_trace:permuted~100@5", "fisher_trace:permuted~200@1"))


def test_the_tracker_measures_on_its_capped_subset():
    noisy = load_dataset("digits", train_size=200, noise=0.3, noise_seed=1)
    full, capped, noisy_cb = make_trackers(["fisher_trace@1", "fisher_trace:test~50@2", "fisher_trace:permuted~20"],
                                           noisy)
    assert len(full.x) == 200 and len(capped.x) == 50 and len(noisy_cb.x) == 20
    assert capped.name == "fisher_trace:test" and capped.every == 2 and noisy_cb.name == "fisher_trace:permuted"
    x_perm, _ = noisy.split("permuted")
    assert all(any(torch.equal(r, row) for row in x_perm) for r in noisy_cb.x)     # rows of the noisy samples


# ------------------------------------------------------------------------------- a trained run's history

def test_a_trained_run_logs_the_se_of_every_measurement():
    data = load_dataset("digits", train_size=200)
    model = build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(16,), seed=0)
    (cb,) = make_trackers(["fisher_trace~50@1"], data)
    h = train(model, data, TrainConfig(epochs=2, batch_size=32, lr=0.05), callbacks=[cb], device="cpu",
              progress=False)
    t = h["trace"]["fisher_trace"]
    assert len(t["value"]) == len(t["se"]) == 3
    assert all(math.isfinite(s) and s > 0 for s in t["se"])
    last = fisher_trace_se(model, cb.x, generator=torch.Generator().manual_seed(0))
    assert t["value"][-1] == last.value and t["se"][-1] == pytest.approx(last.se, rel=1e-12)


def test_the_run_store_keeps_the_se(tmp_path):
    d = DataConfig("digits", train_size=200)
    cfg = RunConfig("dense", d, train=TrainConfig(epochs=1, batch_size=64, lr=0.05), track=("fisher_trace~40@1",))
    (run,) = run_all([cfg], RunStore(tmp_path), device="cpu", progress=False)
    t = run.history["trace"]["fisher_trace"]
    assert len(t["se"]) == len(t["value"]) == 2 and all(s > 0 for s in t["se"])


# ------------------------------------------------------------------------------- the cap of the chapters

def test_the_cap_spells_sets_no_larger_than_it_as_before():
    assert FISHER_SAMPLES == 10_000
    assert fisher_track(5, 10_000) == ("fisher_trace@5",) and fisher_track(5, 4000) == ("fisher_trace@5",)
    assert fisher_track(5, 10_001) == ("fisher_trace~10000@5",) and fisher_track(0, 50_000) == ()
    assert fisher_spec(4, 1500, "permuted") == "fisher_trace:permuted@4"
    assert fisher_spec(5, 35_000, "unpermuted") == "fisher_trace:unpermuted~10000@5"
    assert fisher_spec(5, 0, "permuted") == "fisher_trace:permuted@5"   # the data's own error says it is empty
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match="n_samples must be an int >= 0"):
            fisher_spec(5, bad)


def test_the_training_set_size_is_known_without_loading():
    assert train_samples(DataConfig("cifar100")) == 50_000
    assert train_samples(DataConfig("cifar10", validation=5000)) == 45_000
    assert train_samples(DataConfig("fashion-mnist", train_size=4000)) == 4000
    assert memorization.noisy_samples(DataConfig("cifar10", noise=0.3)) == 15_000
    assert memorization.trackers(5, 5, DataConfig("cifar10", noise=0.3))[3:5] == (
        "fisher_trace:permuted~10000@5", "fisher_trace:unpermuted~10000@5")
    assert memorization.trackers(4, 2, DataConfig("fashion-mnist", train_size=4000, noise=0.3)) == (
        "accuracy:permuted@1", "accuracy:unpermuted@1", "accuracy:restored@1", "fisher_trace:permuted@4",
        "fisher_trace:unpermuted@4", "predictions:permuted@2")


def test_the_noisy_count_is_what_loading_the_data_flips():
    d = DataConfig("digits", train_size=333, noise=0.3)
    data = load_dataset("digits", train_size=333, noise=0.3)
    assert memorization.noisy_samples(d) == int(data.noisy.sum())


FISHER_CHAPTERS = ("01_two_regimes", "02_fisher_trajectory", "03_curvature", "04_memorization",
                   "05_paths_and_cosines", "12_remedies")


def planned_fisher_specs(chapter: str, profile: str) -> tuple[dict, set[str]]:
    module, p = bookbuild.notebook_parameters(REPO_ROOT / "notebooks" / f"{chapter}.ipynb", profile)
    return p, {t for c in module.planned_runs(p) for t in c.track if t.startswith("fisher_trace")}


@pytest.mark.parametrize("profile", ["cpu", "smoke"])
@pytest.mark.parametrize("chapter", FISHER_CHAPTERS)
def test_the_cpu_and_smoke_profiles_spell_the_tracker_as_before(chapter, profile):
    """Their sets are at most 10,000 samples: the spelling, hence the hashes of their stored runs, is unchanged."""
    p, specs = planned_fisher_specs(chapter, profile)
    subsets = (":permuted", ":unpermuted") if chapter == "04_memorization" else ("",)
    assert specs == ({f"fisher_trace{s}@{p['fisher_every']}" for s in subsets} if p["fisher_every"] else set())


def test_the_paper_profile_caps_the_cifar_sets():
    for chapter in FISHER_CHAPTERS:
        p, specs = planned_fisher_specs(chapter, "paper")
        assert specs, chapter
        if chapter == "02_fisher_trajectory":       # the 12-bit task: 3,482 samples
            assert specs == {f"fisher_trace@{p['fisher_every']}"}
        else:                                        # CIFAR: 50,000 images (15,000 noisy, 35,000 clean)
            assert p["dataset"].startswith("cifar") and all(re.fullmatch(r"fisher_trace(:\w+)?~10000@\d+", s)
                                                            for s in specs), (chapter, specs)


# ------------------------------------------------------------------------------- the figure's band

@pytest.mark.parametrize("with_se", [True, False])
def test_the_trajectory_figure_draws_the_se_band_when_the_runs_logged_one(with_se):
    """Runs stored before the SE existed have no "se": their figure is drawn as before, without a band."""
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from sparsegap.plots import figure_fisher_trajectories

    def history(scale):
        t = {"epoch": [0, 1, 2], "step": [0, 5, 10], "epochs": [0.0, 1.0, 2.0], "value": [scale, 2 * scale, scale]}
        if with_se:
            t["se"] = [0.1 * scale] * 3
        return {"epoch": [1, 2], "train_acc": [0.5, 0.9], "trace": {"fisher_trace": t}}

    keys = [("Sol-D", 0.0, 0), ("Sol-F", 0.9, 0), ("Sol-S", 0.9, 0)]
    exp = SimpleNamespace(runs=dict.fromkeys(keys), sparsities=[0.9],
                          trained_histories=lambda stage, s: [history(1.0 + s), history(2.0 + s)])
    fig = figure_fisher_trajectories(exp)
    bands = [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == (4 if with_se else 0)        # Sol-D and s=0.9 in the panels of Sol-S and Sol-F
    if with_se:     # ± the SE of the mean of two seeds: sqrt(0.1² (1.9² + 2.9²)) / 2 around 2.4 at epoch 0
        y = bands[-1].get_paths()[0].vertices[:, 1]
        se = math.sqrt(0.01 * (1.9 ** 2 + 2.9 ** 2)) / 2
        assert y.max() == pytest.approx(2 * 2.4 + se) and y.min() == pytest.approx(2.4 - se)
    plt.close(fig)
