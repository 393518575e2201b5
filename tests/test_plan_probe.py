"""The plan's time (issue 26): each network timed by the trainers themselves (sparsegap.runs.probe), batched groups
as one model, trackers at their rates, and each run counted once in a book, in the first chapter that trains it.
The probe's timings are stand-ins here, so that the arithmetic is checked exactly; tests/bench/bench_plan.py
checks the times against a build."""

from __future__ import annotations

import pytest
import torch

import sparsegap.runs.plan as plan_module
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore
from sparsegap.runs.plan import plan_runs, summarize
from sparsegap.runs.probe import Probe, epoch_costs, probe_of, tracker_rate

DATA = DataConfig("tishby")
MLP = ModelConfig("mlp", hidden=(10, 7, 5, 4, 3))   # the 12-bit MLP of chapter 2: batch-eligible at batch 12


def t(**kw):
    return TrainConfig(**{"epochs": 10, "batch_size": 12, "lr": 0.05, "schedule": "constant"} | kw)


@pytest.fixture
def probes(monkeypatch):
    """epoch_costs as a stand-in: 1 s for a run alone, 2 s for a batched group of any size, and 0.5 s for each
    measurement of a tracker; every probe asked for is recorded."""
    asked = []

    def fake(p: Probe, device, track=()):
        asked.append((p, track))
        return (2.0 if p.members > 1 else 1.0), {spec: 0.5 for spec in track}
    monkeypatch.setattr(plan_module, "epoch_costs", fake)
    return asked


def test_runs_that_train_as_one_batched_model_share_its_time(tmp_path, probes):
    runs = [RunConfig("dense", DATA, MLP, t(), seed=s) for s in range(4)]
    table = plan_runs(runs, RunStore(tmp_path), device="cpu")
    assert (4, True) in {(p.members, p.batched) for p, _ in probes}
    assert list(table.seconds) == [10 * 2.0 / 4] * 4          # the group's 2 s an epoch, shared


def test_a_tracker_costs_what_it_adds_to_an_epoch_at_its_rate(tmp_path, probes):
    run = RunConfig("dense", DATA, MLP, t(), seed=0, track=("fisher_trace@5",))
    (seconds,) = plan_runs([run], RunStore(tmp_path), device="cpu").seconds
    assert seconds == pytest.approx(10 * (1.0 + 0.5 / 5))
    assert ("fisher_trace",) in [track for _, track in probes]    # timed measuring at every epoch


def test_tracker_rates():
    assert tracker_rate("fisher_trace@5", 290) == 1 / 5
    assert tracker_rate("accuracy:test", 290) == 1.0
    assert tracker_rate("grad_norm@50step", 300) == 6.0


def test_a_run_an_earlier_chapter_trains_is_not_counted_again(tmp_path, probes):
    dense = RunConfig("dense", DATA, MLP, t(), seed=0)
    child = RunConfig("scratch", DATA, MLP, t(), seed=0, sparsity=0.5, parent=dense)
    done: set = set()
    first = plan_runs([dense], RunStore(tmp_path), device="cpu", done=done)
    second = plan_runs([child], RunStore(tmp_path), device="cpu", done=done)
    assert summarize(first)["to train"] == 1
    assert list(second["planned earlier"]) == [True, False] and summarize(second)["to train"] == 1
    assert second.seconds.iloc[0] == 0.0


def test_the_probe_times_the_real_trainer_on_random_data_of_the_runs_shapes():
    """Real probes, on the 12-bit MLP: a run alone and a batched group of 3, each a positive time; nothing loaded."""
    cfg = RunConfig("dense", DATA, MLP, t(), seed=0)
    sizes = plan_module.data_sizes(DATA)
    alone, _ = epoch_costs(probe_of(cfg, 1, True, sizes), torch.device("cpu"))
    group, _ = epoch_costs(probe_of(cfg, 3, True, sizes), torch.device("cpu"))
    assert 0 < alone and 0 < group
    single, per = epoch_costs(probe_of(cfg, 1, False, sizes), torch.device("cpu"), ("fisher_trace",))
    assert single > 0 and per["fisher_trace"] > 0


def test_a_probe_separates_the_fixed_part_of_an_epoch(monkeypatch):
    """An epoch costing 0.3 s whatever the data plus 2 s for all of it, and a tracker 0.1 s plus 1 s: probes at
    shares f and 2f give back 2.3 s and 1.1 s, where scaling one probe up (the plan before) would give
    0.3 / f + 2 and 0.1 / f + 1."""
    import sparsegap.runs.probe as probe_module
    monkeypatch.setattr(probe_module, "_probe_epoch", lambda p, device, track, f, timed=2: (
        0.3 + 2.0 * f, {spec: 0.1 + 1.0 * f for spec in track}))
    cfg = RunConfig("dense", DATA, MLP, t(), seed=0)
    p = probe_of(cfg, 1, True, plan_module.data_sizes(DATA))
    base, per = epoch_costs(p, torch.device("cpu"), ("fisher_trace",))
    assert base == pytest.approx(2.3) and per == {"fisher_trace": pytest.approx(1.1)}


def test_each_tracker_is_timed_inside_one_probe():
    """The real probe of a run with two trackers: one probe, each tracker's measurement timed apart (Tr(F) over the
    training set costs more than the accuracy on the test set), the epoch without them."""
    cfg = RunConfig("dense", DATA, MLP, t(), seed=0)
    p = probe_of(cfg, 1, False, plan_module.data_sizes(DATA))
    base, per = epoch_costs(p, torch.device("cpu"), ("fisher_trace", "accuracy:test"))
    assert base > 0 and set(per) == {"fisher_trace", "accuracy:test"}
    assert per["fisher_trace"] > per["accuracy:test"] >= 0


def test_a_tracker_capped_at_n_samples_is_planned_at_n_of_them(tmp_path, probes):
    """The probe times a capped tracker on fewer rows than its cap, all of them: scaled to the whole set that is
    the uncapped cost, which the plan cuts to the cap's share (CIFAR's 50,000 samples, Tr(F) on 10,000: a fifth)."""
    data, model = DataConfig("cifar100"), ModelConfig("resnet20")
    plain = RunConfig("dense", data, model, t(epochs=10, batch_size=128), seed=0, track=("fisher_trace@5",))
    capped = RunConfig("dense", data, model, t(epochs=10, batch_size=128), seed=0, track=("fisher_trace~10000@5",))
    table = plan_runs([plain, capped], RunStore(tmp_path), device="cpu").set_index("run")
    # 10 epochs of 1 s, and 2 measurements of 0.5 s over the whole set, or of a fifth of it
    assert table.loc[plain.run_id, "seconds"] == pytest.approx(10 * (1.0 + 0.5 / 5))
    assert table.loc[capped.run_id, "seconds"] == pytest.approx(10 * (1.0 + 0.5 / 5 * 10_000 / 50_000))
    noisy = DataConfig("cifar10", noise=0.3)    # the noisy subset: 15,000 samples, capped at 10,000
    run = RunConfig("dense", noisy, model, t(epochs=10, batch_size=128), seed=0,
                    track=("fisher_trace:permuted~10000@5", "fisher_trace:unpermuted~40000@5"))
    seconds = plan_runs([run], RunStore(tmp_path), device="cpu")["seconds"].iloc[0]
    assert seconds == pytest.approx(10 * (1.0 + 0.5 / 5 * 10_000 / 15_000 + 0.5 / 5))


@pytest.mark.parametrize("members", [1, 3])
def test_a_probed_epoch_holds_every_members_checkpoint_as_the_store_writes_it(monkeypatch, members):
    """Each member's on_epoch_end writes its checkpoint through the store's own writer (job.write_checkpoint), once
    an epoch, inside the time the probe counts: slowed by 0.2 s a write, a probe epoch of a group of 3 costs at
    least 3 x 0.2 s more, and what was written is a whole checkpoint of the member's network."""
    import time

    import sparsegap.runs.job as job_module
    import sparsegap.runs.probe as probe_module
    real, written = job_module.write_checkpoint, []

    def slow(ckpt, path, run_hash, files):
        time.sleep(0.2)
        written.append((path.name, ckpt["epoch"], sorted(ckpt)))
        real(ckpt, path, run_hash, files)
    cfg = RunConfig("dense", DATA, MLP, t(), seed=0)
    p = probe_of(cfg, members, True, plan_module.data_sizes(DATA))
    fast, _ = probe_module._probe_epoch(p, torch.device("cpu"), (), 0.05)
    monkeypatch.setattr(job_module, "write_checkpoint", slow)
    slowed, _ = probe_module._probe_epoch(p, torch.device("cpu"), (), 0.05)
    assert slowed - fast >= members * 0.2 * 0.95
    assert {name for name, _, _ in written} == {str(k) for k in range(members)}
    assert all({"model", "optimizer", "masks", "history", "epoch"} <= set(keys) for _, _, keys in written)
