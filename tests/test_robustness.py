"""The robustness check (sparsegap.robustness): which seeds it shifts, the side-by-side table, its errors, and one
run end to end at smoke scale."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from sparsegap import robustness as R
from sparsegap.stats import Interval
from sparsegap.verdict import ALL_STATUSES, VERDICT_MIME, Evidence, Verdict

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ seed shifting

def test_only_training_seeds_shift_and_lists_keep_their_length():
    values = {"seeds": [0, 1], "remedy_seeds": [0, 1, 2], "select_seed": 0, "noise_seed": 0, "prune_seed": 3,
              "direction_seed": 0, "epochs": 5}
    names = R.training_seed_parameters(values, "12_remedies")
    assert names == ["seeds", "remedy_seeds", "select_seed"]
    shifted = R.shift_seeds(values, names, 100)
    assert shifted == {"seeds": [100, 101], "remedy_seeds": [100, 101, 102], "select_seed": 100}
    assert values["seeds"] == [0, 1]                      # the input is not changed
    assert R.shift_seeds({"seeds": [4, 2, 9]}, ["seeds"], 7) == {"seeds": [11, 9, 16]}  # order and count kept
    assert R.shift_seeds({"select_seed": None}, ["select_seed"], 100) == {}


def test_every_verdict_bearing_chapter_gets_disjoint_seeds_and_keeps_its_data_seeds():
    chapters = {c.name: c for c in R.plan_chapters(ROOT / "notebooks", profile="cpu", offset=100)}
    # every notebook states verdicts today
    assert set(chapters) == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    for c in chapters.values():
        assert "seeds" in c.overrides, c.name
        assert set(c.seeds_a).isdisjoint(c.seeds_b), c.name
        assert [s + 100 for s in c.seeds_a] == c.seeds_b
        for name, value in c.overrides.items():
            old = c.values[name]
            assert (len(value) == len(old)) if isinstance(old, list) else isinstance(value, int)
        assert not set(c.overrides) & set(R.DATA_SEED_PARAMETERS)
    assert set(chapters["12_remedies"].overrides) == {"seeds", "remedy_seeds", "select_seed"}
    assert set(chapters["08_redense_and_landscape"].overrides) == {"seeds"}   # noise, prune, direction seeds stay
    assert set(chapters["04_memorization"].overrides) == {"seeds"}


def test_a_seed_parameter_nobody_classified_is_an_error():
    with pytest.raises(ValueError, match=r"init_seed.*TRAINING_SEED_PARAMETERS.*DATA_SEED_PARAMETERS"):
        R.training_seed_parameters(["seeds", "init_seed"], "13_new")


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("offset, match", [(-3, r"offset=-3: must be a positive int"),
                                           (0, r"offset=0: must be a positive int"),
                                           (2.5, r"offset=2.5: must be a positive int")])
def test_bad_offsets(offset, match):
    with pytest.raises(ValueError, match=match):
        R.check_offset(offset)


def test_an_offset_that_does_not_make_the_sets_disjoint():
    with pytest.raises(ValueError, match=r"offset=1 does not make the seed sets disjoint: seeds \[1, 2\].*"
                                         r"at least 3"):
        R.check_offset(1, [0, 1, 2])
    assert R.check_offset(5, [0, 1, 2]) == 5
    with pytest.raises(ValueError, match=r"offset=1 does not make"):
        R.plan_chapters(ROOT / "notebooks", ["01_two_regimes"], "cpu", offset=1)


def test_unknown_notebook(capsys):
    with pytest.raises(ValueError, match=r"only=\['99_nope'\].*allowed: \[.*01_two_regimes"):
        R.plan_chapters(ROOT / "notebooks", ["99_nope"])
    assert R.main(["--only", "99_nope", "--runs-dir", "/tmp/x", "--out", "/tmp/y"]) == 2
    assert "99_nope" in capsys.readouterr().err


def test_command_line_errors_name_the_parameter(tmp_path, capsys):
    assert R.main(["--offset", "-5"]) == 2
    assert "offset=-5" in capsys.readouterr().err
    assert R.main(["--compare-only", "--reference", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--reference=" in err and "nope" in err and "make book" in err
    with pytest.raises(ValueError, match=r"--runs-dir=.*is the book's"):
        R.run(runs_dir=R.BOOK_RUNS_DIR, out=tmp_path)


# ------------------------------------------------------------------------------------------ the table

def _verdict(claim_id, status, part="", effect=None, seeds=(0, 1, 2)):
    evidence = (Evidence("Sol-F − Sol-S, test accuracy", effect, ".1%"),) if effect is not None else ()
    return Verdict(claim_id, "a claim", status, ("a reason",), part=part, evidence=evidence, seeds=seeds)


def _write(folder: Path, name: str, verdicts) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# a chapter"))
    for v in verdicts:
        cell = nbformat.v4.new_code_cell("study.verdict(table).show()")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": repr(v), VERDICT_MIME: v.to_dict()})]
        nb.cells.append(cell)
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / f"{name}.ipynb"))


@pytest.fixture
def two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b" / "notebooks"
    gap = Interval(0.04, 0.02, 0.06, 3, 2, "paired t")
    _write(a, "01_two_regimes", [_verdict("P-F4", "reproduced", "a", gap), _verdict("P-F4", "partly", "b")])
    _write(b, "01_two_regimes", [_verdict("P-F4", "reproduced", "a", Interval(0.03, -0.01, 0.07, 3, 2, "paired t"),
                                          seeds=(100, 101, 102)),
                                 _verdict("P-F4", "inconclusive", "b", seeds=(100, 101, 102))])
    _write(a, "06_gradient_snr", [_verdict("P-F11", "not reproduced", "a", Interval.exact(0.5))])
    _write(b, "06_gradient_snr", [_verdict("P-F11", "not reproduced", "a", Interval.exact(0.25))])
    _write(a, "03_curvature", [_verdict("P-F5", "partly")])      # not run on the second seed set
    return a, b


def test_the_table_puts_each_verdict_side_by_side(two_folders):
    a, b = two_folders
    rows = R.compare(a, b)
    assert [(r.notebook, r.label, r.status_a, r.status_b, r.same) for r in rows] == [
        ("01_two_regimes", "P-F4 (a)", "reproduced", "reproduced", True),
        ("01_two_regimes", "P-F4 (b)", "partly", "inconclusive", False),
        ("03_curvature", "P-F5", "partly", R.MISSING, False),
        ("06_gradient_snr", "P-F11 (a)", "not reproduced", "not reproduced", True)]
    first = rows[0]
    assert (first.effect_a, first.effect_b) == ("4.0% [2.0%, 6.0%]", "3.0% [-1.0%, 7.0%]")
    assert first.effect_name == "Sol-F − Sol-S, test accuracy"
    assert (first.seeds_a, first.seeds_b) == ((0, 1, 2), (100, 101, 102))
    assert rows[1].effect_a == "—" and rows[3].effect_b == "25.0%"
    assert R.agreement(rows) == (2, 4)
    text = R.format_table(rows)
    cells = [[c.strip() for c in line.split(" | ")] for line in text.splitlines()]
    assert cells[0] == ["verdict", "status, seeds A", "status, seeds B", "same?", "key effect, seeds A",
                        "key effect, seeds B"]
    assert cells[3] == ["01 P-F4 (b)", "partly", "inconclusive", "NO", "—", "—"]
    assert text.endswith("2 of 4 statuses agree")
    assert [r.label for r in R.compare(a, b, ["06_gradient_snr"])] == ["P-F11 (a)"]


def test_compare_only_writes_markdown_and_json(two_folders, capsys):
    a, b = two_folders
    out = b.parent
    assert R.main(["--compare-only", "--reference", str(a), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "P-F4 (b)" in printed and "2 of 4 statuses agree" in printed
    data = json.loads((out / "robustness.json").read_text())
    assert (data["agree"], data["verdicts"]) == (2, 4)
    assert data["rows"][1]["status_b"] == "inconclusive" and data["rows"][1]["same"] is False
    md = (out / "robustness.md").read_text()
    assert "| 01_two_regimes | P-F4 (b) | partly | inconclusive | **no** |" in md
    assert "**2 of 4 statuses agree.**" in md
    assert "- 01_two_regimes: seeds A 0, 1, 2; seeds B 100, 101, 102" in md


def test_a_label_that_recurs_in_one_notebook_is_kept_apart(tmp_path):
    _write(tmp_path / "a", "07_x", [_verdict("P-T1", "partly"), _verdict("P-T1", "reproduced")])
    _write(tmp_path / "b", "07_x", [_verdict("P-T1", "partly"), _verdict("P-T1", "partly")])
    rows = R.compare(tmp_path / "a", tmp_path / "b")
    assert [(r.label, r.same) for r in rows] == [("P-T1", True), ("P-T1 #2", False)]


# ------------------------------------------------------------------------------------------ end to end

def test_one_chapter_end_to_end_at_smoke_scale(tmp_path):
    """02 at smoke scale (about 10 s a run): its reference is missing, so both seed sets run, each into its own
    store; the table has the chapter's verdicts with a status on both."""
    name = "02_fisher_trajectory"
    lines: list[str] = []
    rows = R.run("smoke", 100, [name], jobs=1, runs_dir=tmp_path / "runs-b", out=tmp_path / "out",
                 reference=tmp_path / "book-notebooks", reference_runs_dir=tmp_path / "runs-a", log=lines.append)
    assert rows and {r.notebook for r in rows} == {name}
    assert all(r.status_a in ALL_STATUSES and r.status_b in ALL_STATUSES for r in rows)
    assert {r.seeds_a for r in rows} == {(0, 1)} and {r.seeds_b for r in rows} == {(100, 101)}
    shifted = nbformat.read(str(tmp_path / "out" / "notebooks" / f"{name}.ipynb"), as_version=4)
    assert shifted.metadata.papermill.parameters["seeds"] == [100, 101]
    reference = nbformat.read(str(tmp_path / "out" / "reference" / "notebooks" / f"{name}.ipynb"), as_version=4)
    assert reference.metadata.papermill.parameters["seeds"] == [0, 1]
    assert (tmp_path / "runs-a").is_dir() and (tmp_path / "runs-b").is_dir()
    assert any("[seeds B 1/1] 02_fisher_trajectory" in line for line in lines)
    assert f"of {len(rows)} statuses agree" in lines[-2]
    data = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert [r["label"] for r in data["rows"]] == [r.label for r in rows]
