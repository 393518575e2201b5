"""The claim ledger's parts: claims, Verdict values, notebook parameters, the ledger page, the
chapter modules' layout. (The ledger of the built book is tested in test_book.py.)"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

matplotlib.use("Agg")

from sparsegap import bookbuild, ledger, params, plots, teaser  # noqa: E402
from sparsegap.claims import CLAIMS, check_claim_id  # noqa: E402
from sparsegap.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from sparsegap.verdict import VERDICT_MIME, Verdict, anchor, verdicts_in_notebook  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAN = REPO_ROOT.parent / "shared" / "REPRODUCTION.md"
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


# ---------------------------------------------------------------- claims and verdicts


def test_claims_cover_every_row_of_the_plan():
    if not PLAN.is_file():
        pytest.skip(f"{PLAN} is not beside this checkout")
    ids = set(re.findall(r"^\| ([PDEG]-[A-Z]*[0-9][0-9/]*) \|", PLAN.read_text(), flags=re.M))
    assert ids, "no row ids found in the plan"
    assert ids == set(CLAIMS), f"plan only: {ids - set(CLAIMS)}; ledger only: {set(CLAIMS) - ids}"


@pytest.mark.parametrize("bad", [None, "", "  ", "X-F1", "p-f1", 3])
def test_verdict_needs_a_claim_id_of_the_plan(bad):
    with pytest.raises(ValueError, match="claim_id") as err:
        Verdict(bad, "a claim", "partly")
    assert "P-F1" in str(err.value)  # the message lists what is allowed


def test_verdict_parts_tell_two_claims_of_one_row_apart():
    a = Verdict("P-F4", "claim a", "partly", part="a")
    assert a.label == "P-F4 (a)" and 'id="verdict-p-f4-a"' in a._repr_html_()
    assert Verdict.from_dict(a.to_dict()) == a
    with pytest.raises(ValueError, match="part"):
        Verdict("P-F4", "claim", "partly", part="(a)")


def test_verdict_checks_status_claim_and_reasons():
    with pytest.raises(ValueError, match="status.*reproduced"):
        Verdict("P-F1", "a claim", "maybe")
    with pytest.raises(ValueError, match="claim"):
        Verdict("P-F1", " ", "partly")
    with pytest.raises(TypeError, match="reasons"):
        Verdict("P-F1", "a claim", "partly", reasons=(1, 2))
    assert Verdict("P-F1", "a claim", "partly", reasons="one").reasons == ("one",)


def test_verdict_renders_and_round_trips():
    v = Verdict("P-F7/8", "a <claim>", "not reproduced", ("first & second",), "mlp on digits")
    bundle = v._repr_mimebundle_()
    assert bundle[VERDICT_MIME] == v.to_dict() and Verdict.from_dict(v.to_dict()) == v
    assert f'id="{anchor("P-F7/8")}"' in bundle["text/html"] == bundle["text/html"]
    assert anchor("P-F7/8") == "verdict-p-f7-8"
    assert "&lt;claim&gt;" in bundle["text/html"] and "first &amp; second" in bundle["text/html"]
    assert bundle["text/markdown"].startswith("**Verdict P-F7/8: not reproduced.**")


def test_verdicts_in_notebook_finds_displayed_verdicts():
    v = Verdict("P-T2", "claim", "reproduced", ("r",), "scale")
    nb = nbformat.v4.new_notebook()
    out = nbformat.v4.new_output("display_data", data={k: w for k, w in v._repr_mimebundle_().items()})
    cell = nbformat.v4.new_code_cell("x", outputs=[out, nbformat.v4.new_output("stream", text="hi")])
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), cell]
    assert verdicts_in_notebook(nb) == [v]


def _notebook_with(path: Path, *code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_a_notebook_with_a_verdict_without_claim_id_fails_clearly(tmp_path):
    notebooks = tmp_path / "notebooks"
    _notebook_with(notebooks / "01_bad.ipynb",
                   "from sparsegap.verdict import Verdict\nVerdict(None, 'some claim', 'partly').show()")
    with pytest.raises(bookbuild.NotebookFailed, match="claim_id must be a row id"):
        bookbuild.execute_notebooks("cpu", tmp_path / "book", notebooks, log=lambda _: None)


# ---------------------------------------------------------------- the ledger page


def test_ledger_lists_every_verdict_and_every_plan_row(tmp_path):
    executed = tmp_path / "book" / "notebooks"
    executed.mkdir(parents=True)
    verdicts = [Verdict("P-F1", "c1", "partly", ("r",), "s1"), Verdict("P-T2", "c2", "reproduced", (), "s2")]
    for i, v in enumerate(verdicts):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
            "display_data", data=v._repr_mimebundle_())])]
        nbformat.write(nb, executed / f"0{i}_chapter.ipynb")
    page = ledger.write_ledger(tmp_path / "book").read_text()
    rows = re.findall(r'data-claim="([^"]+)" data-status="([^"]+)" data-source="([^"]*)"', page)
    assert [r[0] for r in rows] == list(CLAIMS)  # every row of the plan, in plan order, once
    by_id = {r[0]: r for r in rows}
    assert by_id["P-F1"] == ("P-F1", "partly", "00_chapter")
    assert by_id["P-T2"] == ("P-T2", "reproduced", "01_chapter")
    assert by_id["P-F2"][1] == ledger.NO_CLAIM
    assert by_id["D-F1"][1] == ledger.NOT_YET
    assert 'href="notebooks/00_chapter.html#verdict-p-f1"' in page
    assert ledger.summary_text(ledger.book_rows(tmp_path / "book")) == (
        "28 rows: 1 reproduced, 1 partly, 2 shown (no claim), 24 not yet in the book")
    assert re.sub(r"<[^>]+>", "", page).count("28 rows: 1 reproduced, 1 partly, 2 shown (no claim), "
                                                "24 not yet in the book") == 1


def test_ledger_shows_the_new_statuses_in_colour_with_the_key_effect(tmp_path):
    from sparsegap import stats
    from sparsegap.verdict import STATUS_COLORS, Evidence
    executed = tmp_path / "book" / "notebooks"
    executed.mkdir(parents=True)
    effect = Evidence("Sol-F - Sol-S, test accuracy", stats.paired_difference([0.81, 0.80, 0.83], [0.80, 0.81, 0.80]),
                      ".1%")
    verdicts = [Verdict("P-F1", "c1", "inconclusive", (), "s1", evidence=(effect,), seeds=(0, 1, 2)),
                Verdict("P-S4", "c2", "tested: no effect", (), "s2", part="i")]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
        "display_data", data=v._repr_mimebundle_()) for v in verdicts])]
    nbformat.write(nb, executed / "01_chapter.ipynb")
    page = ledger.write_ledger(tmp_path / "book").read_text()
    row = next(r for r in page.splitlines() if 'data-claim="P-F1"' in r)
    assert f'color:{STATUS_COLORS["inconclusive"]};border-color:{STATUS_COLORS["inconclusive"]}">inconclusive' in row
    text = re.sub(r"<[^>]+>", "", row)
    assert "Sol-F - Sol-S, test accuracy: 1.0% [" in text and "n = 3" in text
    assert "1 inconclusive, 1 tested: no effect" in re.sub(r"<[^>]+>", "", page)


def _page_of(tmp_path, *verdicts, name="01_two_regimes", title="# Two regimes of sparse training", toc=True):
    book = tmp_path / "book"
    (book / "notebooks").mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(title), nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data=v._repr_mimebundle_()) for v in verdicts])]
    nbformat.write(nb, book / "notebooks" / f"{name}.ipynb")
    if toc:
        (book / "_toc.yml").write_text(
            "format: jb-book\nroot: intro\nparts:\n  - caption: The ledger\n    chapters:\n      - file: ledger\n"
            "  - caption: A\n    numbered: true\n    chapters:\n      - file: notebooks/01_two_regimes\n"
            "      - file: notebooks/07_sparse_double_descent\n")
    return ledger.write_ledger(book).read_text()


def _ledger_rows(page):
    return {m.group(1): m.group(0) for m in re.finditer(
        r'<tr class="ledger-row" data-claim="([^"]+)".*?</tr>', page, flags=re.S)}


def test_ledger_row_has_four_columns_link_titled_by_the_chapter_and_the_papers_number(tmp_path):
    from sparsegap import stats
    from sparsegap.verdict import Evidence
    effect = Evidence("Sol-F − Sol-S, test accuracy", stats.paired_difference([0.9, 0.8, 0.85], [0.8, 0.75, 0.8]),
                      ".1%", paper="about +9 points (Fig. 1)")
    v = Verdict("P-F1", "Sol-S falls behind", "reproduced", (), "lenet on fashion-mnist, 3 seeds, 2 epochs",
                finding="Sol-F leads.", evidence=(effect,), seeds=(0, 1, 2))
    page = _page_of(tmp_path, v)
    row = _ledger_rows(page)["P-F1"]
    assert row.count("<td") == 4
    assert '<a href="notebooks/01_two_regimes.html#verdict-p-f1">1. Two regimes of sparse training, verdict P-F1</a>' in row
    assert ">notebooks/" not in page  # no raw path as a link's title
    text = re.sub(r"<[^>]+>", " ", row)
    assert "paper: about +9 points (Fig. 1)" in text and "(95% CI, n = 3)" in text
    assert "3 seeds · lenet on fashion-mnist, 2 epochs" in text  # the seeds once, then the scale
    assert 'data-source="01_two_regimes"' in row
    # the plan row shown on the introduction links there, titled by the page, not by its path
    intro = _ledger_rows(page)["P-F2"]
    assert '<a href="intro.html">Introduction</a>' in intro
    # one group heading per paper, four column headers
    assert page.count('<tr class="ledger-group">') == 4 and page.count("<th>") == 4


def test_ledger_shows_the_finding_where_no_effect_was_measured(tmp_path):
    from sparsegap.stats import Interval
    from sparsegap.verdict import Evidence
    nan = Evidence("log10 SNR, Sol-S − Sol-F", Interval(float("nan"), -float("inf"), float("inf"), 0, 0.0, "t"))
    verdicts = [Verdict("P-F3", "Tr(F) rises then falls", "inconclusive", (), "mlp on tishby, 2 seeds",
                        finding="The sweep finds no generalization regime."),
                Verdict("P-F11", "SNR differs", "inconclusive", (), "s", part="a", finding="Sol-S has not trained.",
                        evidence=(nan,))]
    rows = _ledger_rows(_page_of(tmp_path, *verdicts))
    assert "The sweep finds no generalization regime." in rows["P-F3"]
    assert "2 seeds · mlp on tishby" in re.sub(r"<[^>]+>", " ", rows["P-F3"])  # seeds read off the scale
    assert "Sol-S has not trained." in rows["P-F11"] and "nan" not in rows["P-F11"]
    for claim_id, row in rows.items():  # every row with a status: an effect or a stated reason
        if 'data-status="inconclusive"' in row:
            assert "ledger-value" in row or "ledger-finding" in row, claim_id


def test_ledger_summary_counts_per_status_and_per_paper(tmp_path):
    verdicts = [Verdict("P-F1", "c", "reproduced", (), "s"), Verdict("P-T2", "c", "partly", (), "s"),
                Verdict("E-F3", "c", "not reproduced", (), "s")]
    page = _page_of(tmp_path, *verdicts)
    summary = re.sub(r"<[^>]+>", "", page[:page.index('<table class="ledger">')])
    assert "Price of Sparsity: 1 reproduced, 1 partly, 1 shown (no claim), 9 not yet in the book" in summary
    assert "Evci et al. 2019: 1 not reproduced, 5 not yet in the book" in summary
    from sparsegap.verdict import STATUS_COLORS
    assert f'style="color:{STATUS_COLORS["partly"]};border-color:{STATUS_COLORS["partly"]}">1 partly</span>' in page
    results = (tmp_path / "book" / ledger.GENERATED / ledger.RESULTS_PAGE).read_text()
    assert "](ledger.md)" in results and ledger.summary_html(ledger.book_rows(tmp_path / "book")) in results
    # the toc lists two chapters, one was executed (--only): the introduction says the results are partial
    assert "not built in full:** this copy of the book holds 1 of its 2 chapters" in results
    _page_of(tmp_path, *verdicts, name="07_sparse_double_descent", title="# Sparse double descent")
    results = (tmp_path / "book" / ledger.GENERATED / ledger.RESULTS_PAGE).read_text()
    assert "not built in full" not in results


def test_chapter_numbers_follow_the_numbered_parts(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nparts:\n  - caption: x\n    chapters:\n      - file: ledger\n"
                   "  - caption: y\n    numbered: true\n    chapters:\n      - file: notebooks/a\n"
                   "      - file: notebooks/b\n  - caption: z\n    numbered: true\n    chapters:\n"
                   "      - file: notebooks/c\n")
    assert ledger.chapter_numbers(toc) == {"notebooks/a": 1, "notebooks/b": 2, "notebooks/c": 3}
    assert ledger.chapter_numbers(tmp_path / "missing.yml") == {}


def _png_bytes():
    import io

    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def test_teaser_is_chapter_ones_glued_figure_with_its_verdict(tmp_path):
    import base64
    v = Verdict("P-F1", "two regimes", "partly", (), "s", finding="Sol-F tests 2 points above Sol-S.")
    _page_of(tmp_path, v)
    book = tmp_path / "book"
    path = book / "notebooks" / "01_two_regimes.ipynb"
    nb = nbformat.read(path, as_version=4)
    png = _png_bytes()
    nb.cells.append(nbformat.v4.new_code_cell("glue", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"},
        metadata={"scrapbook": {"name": teaser.TEASER_KEY, "mime_prefix": ""},
                  "image/png": {"width": 400, "height": 200}})]))
    nb.cells.append(nbformat.v4.new_markdown_cell(f"```{{glue:figure}} {teaser.TEASER_KEY}\n"
                                                  f":name: {teaser.TEASER_KEY}\n\nA caption.\n```"))
    nbformat.write(nb, path)
    text = teaser.write_teaser(book).read_text()
    assert (book / ledger.GENERATED / "teaser.png").read_bytes() == png
    assert text.startswith("```{figure} _generated/teaser.png") and ":width: 400px" in text
    assert f"{{numref}}`{teaser.TEASER_KEY}`" in text
    assert "Verdict P-F1, *partly*: Sol-F tests 2 points above Sol-S." in text


def test_without_chapter_one_the_introduction_says_the_results_are_not_built(tmp_path):
    book = tmp_path / "book"
    (book / ledger.GENERATED).mkdir(parents=True)
    (book / ledger.GENERATED / "teaser.png").write_bytes(b"old")  # from an earlier full build
    text = teaser.write_teaser(book).read_text()
    assert "results are not built" in text and "teaser.png" not in text
    assert not (book / ledger.GENERATED / "teaser.png").exists()
    _page_of(tmp_path, Verdict("P-F1", "c", "partly", (), "s"))  # chapter 1 ran, but glued no such figure
    assert "results are not built" in teaser.write_teaser(book).read_text()


# ---------------------------------------------------------------- notebook parameters


def _declared(path: Path) -> dict:
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body if isinstance(t, ast.Assign)}


def _spec_of(path: Path) -> params.ParameterSpec:
    from sparsegap.studies import chapter_module
    return chapter_module(path.stem).PARAMETERS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_checks_its_parameters_first(path):
    nb = json.loads(path.read_text())
    # The hidden install cell (book/_scripts/install_cell.py) comes first: it reads no parameter.
    code = [c for c in nb["cells"] if c["cell_type"] == "code"
            and "install-sparsegap" not in c["metadata"].get("tags", [])]
    assert "parameters" in code[0]["metadata"]["tags"]
    assert "PARAMETERS.check(globals())" in "".join(code[1]["source"]), "the check must follow the parameters"
    spec = _spec_of(path)
    declared = _declared(path)
    assert list(declared) == spec.names(), "the parameters cell and the chapter's ParameterSpec disagree"
    spec.check(dict(declared), show=False)  # the cpu defaults are valid
    for profile in ("smoke", "paper"):
        values = yaml.safe_load((REPO_ROOT / "notebooks" / "params" / profile / f"{path.stem}.yaml").read_text())
        spec.check({**declared, **values}, show=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_plumbing_cells_are_folded(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and ("%matplotlib" in src or "PARAMETERS.check" in src):
            assert {"hide-input", "remove-input", "remove-cell"} & set(cell["metadata"].get("tags", [])), src[:60]


def _namespace(path: Path, **override) -> dict:
    ns = {"In": [], "Out": {}, "_": None, "get_ipython": lambda: None, "json": json}
    return {**ns, **_declared(path), **override}


def test_unknown_parameter_is_named_with_a_suggestion():
    nb = REPO_ROOT / "notebooks" / "01_two_regimes.ipynb"
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) 'sparsity' \(did you mean 'sparsities'\?\)"):
        _spec_of(nb).check(_namespace(nb, sparsity="[0.5]"), show=False)


@pytest.mark.parametrize("name, value, fragment", [
    ("fisher_every", -1, "fisher_every=-1"),
    ("near_optimal", 2, "near_optimal=2"),
    ("seeds", "[0, 0]", "duplicates"),
    ("sparsities", "[0.5, 1.0]", "sparsities[1]=1.0"),
    ("epochs", 2.5, "epochs=2.5"),
    ("exclude_output", "yes", "exclude_output='yes'"),
    ("lr", float("nan"), "lr=nan"),
    ("train_size", 0, "train_size=0"),
    ("milestones", "oops: [", "milestones"),
])
def test_bad_parameter_values_name_the_parameter(name, value, fragment):
    nb = REPO_ROOT / "notebooks" / "01_two_regimes.ipynb"
    with pytest.raises(ValueError) as err:
        _spec_of(nb).check(_namespace(nb, **{name: value}), show=False)
    assert fragment in str(err.value) and "must be" in str(err.value)


def test_parameters_are_normalised_in_place():
    nb = REPO_ROOT / "notebooks" / "01_two_regimes.ipynb"
    ns = _namespace(nb, sparsities="[0.9, 0.99]", seeds="3", epochs=4.0, train_size=None)
    values = _spec_of(nb).check(ns, show=False)
    assert ns["sparsities"] == values["sparsities"] == [0.9, 0.99]
    assert ns["seeds"] == [3] and ns["epochs"] == 4 and isinstance(ns["epochs"], int)
    assert "<details" in _spec_of(nb).table_html(values)


# ---------------------------------------------------------------- the chapter modules


def test_the_chapter_procedures_live_in_their_study_modules():
    """What the deleted sparsegap.pipeline re-exported, from the modules that define it."""
    from sparsegap.studies.curvature import (CURVATURE_METRICS, PAPER_TABLE_2, curvature, curvature_summary,
                                             curvature_table, curvature_verdict, mechanism_table)
    from sparsegap.studies.fisher_trajectory import fisher_trajectory_verdict, fisher_trend, fisher_trends
    from sparsegap.studies.procedure import (KIND_OF_STAGE, METRICS, Experiment, check_seeds, check_sparsities,
                                             run_two_regimes, two_regime_configs)
    from sparsegap.studies.two_regimes import classify_regimes, two_regimes_verdict
    assert all(callable(f) for f in (curvature, curvature_summary, curvature_table, curvature_verdict,
                                     mechanism_table, fisher_trajectory_verdict, fisher_trend, fisher_trends,
                                     check_seeds, check_sparsities, run_two_regimes, two_regime_configs,
                                     classify_regimes, two_regimes_verdict, Experiment))
    assert set(KIND_OF_STAGE) == {"Sol-D", "Sol-F", "Sol-S"} and "test_acc" in METRICS
    assert CURVATURE_METRICS == ("fisher_trace", "hessian_trace", "jacobian_norm") and len(PAPER_TABLE_2) == 7
    import importlib.util
    assert importlib.util.find_spec("sparsegap.pipeline") is None


def test_run_hashes_are_pinned():
    """The split into studies/ must not change any stored run's identity (values from before it)."""
    from sparsegap.studies.procedure import two_regime_configs
    c = two_regime_configs(DataConfig("fashion-mnist", train_size=4000), ModelConfig("lenet300-100"),
                           TrainConfig(epochs=60, batch_size=128, lr=0.05, momentum=0.9, weight_decay=2e-4,
                                       milestones=(0.5, 0.75), gamma=0.1),
                           [0.5, 0.995], [0, 1], track=["fisher_trace@5"])
    assert c[("Sol-D", 0.0, 0)].run_id == "dense-ba7d73089fa86b96"
    assert c[("Sol-F", 0.5, 0)].run_id == "finetune-faaa14cb7f252bf6"
    assert c[("Sol-S", 0.995, 1)].run_id == "scratch-a24c8428655a4551"
    c = two_regime_configs(DataConfig("tishby"), ModelConfig("mlp", hidden=(64, 32, 32, 18, 18, 6, 6), init="kaiming"),
                           TrainConfig(epochs=150, batch_size=12, lr=0.005, momentum=0.0, weight_decay=0.0,
                                       milestones=(0.5,), gamma=0.1),
                           [0.9], [1], min_density=0.05, track=["fisher_trace@3"])
    assert c[("Sol-D", 0.0, 1)].run_id == "dense-76b2fb4ed7609c70"
    assert c[("Sol-S", 0.9, 1)].run_id == "scratch-931160f8d7cf69d8"


def test_the_chapters_build_the_pinned_runs_from_their_parameters():
    """The runs of test_run_hashes_are_pinned, built as the notebooks and the plan build them: from the cpu
    defaults through the study modules (the Tr(F) tracker from procedure.fisher_track)."""
    from sparsegap.studies import fisher_trajectory, two_regimes
    _, p = bookbuild.notebook_parameters(REPO_ROOT / "notebooks" / "01_two_regimes.ipynb", "cpu")
    c = two_regimes.configs(p)
    assert c[("Sol-D", 0.0, 0)].run_id == "dense-ba7d73089fa86b96"
    assert c[("Sol-S", 0.995, 1)].run_id == "scratch-a24c8428655a4551"
    _, p = bookbuild.notebook_parameters(REPO_ROOT / "notebooks" / "02_fisher_trajectory.ipynb", "cpu")
    c = fisher_trajectory.configs(p)
    assert c[("Sol-D", 0.0, 1)].run_id == "dense-76b2fb4ed7609c70"
    assert c[("Sol-S", 0.9, 1)].run_id == "scratch-931160f8d7cf69d8"


# ---------------------------------------------------------------- figures legible at the book's width


def _regime_frames():
    rows = [{"stage": "Sol-D", "sparsity": 0.0}]
    for s in (0.5, 0.9, 0.99):
        rows += [{"stage": st, "sparsity": s} for st in ("Sol-F", "Sol-S")]
    summary = pd.DataFrame(rows)
    for m in ("train_acc", "test_acc", "train_loss", "test_loss", "train_entropy", "test_entropy"):
        summary[m] = 0.5
        summary[f"{m}_std"] = 0.01
    regimes = pd.DataFrame({"sparsity": [0.5, 0.9, 0.99], "regime": ["no gap", "generalization", "optimization"]})
    return summary, regimes


def _figures():
    summary, regimes = _regime_frames()
    yield "two_regimes", plots.figure_two_regimes(summary, regimes)
    history = {"train_acc": [0.1, 0.5], "test_acc": [0.1, 0.4], "train_loss": [2, 1], "test_loss": [2, 1.5]}
    yield "training_curves", plots.figure_training_curves({"Sol-S": [history], "Sol-F": [history]}, sparsity=0.9)
    table = pd.DataFrame([{"stage": st, "sparsity": s, "seed": 0, "fisher_trace": 1.0 + s, "hessian_trace": 2.0,
                           "jacobian_norm": 3.0} for st, s in (("Sol-D", 0.0), ("Sol-F", 0.9), ("Sol-S", 0.9))])
    yield "curvature", plots.figure_curvature(table)
    rows = [{"heuristic": h, "noise": e, "round": r, "sparsity": 1 - 0.5 ** r, "train_acc": 1.0 - 0.05 * r,
             "test_acc": 0.6, "test_best": 0.7, "train_acc_std": 0.01, "test_acc_std": 0.01}
            for h, e in (("magnitude", 0.2), ("magnitude", 0.4), ("random", 0.4)) for r in range(8)]
    yield "double_descent", plots.figure_double_descent(pd.DataFrame(rows))
    trace = {k: {"epochs": [1.0, 2.0], "value": [0.2, 0.4]} for k in
             ("accuracy:permuted", "accuracy:unpermuted", "accuracy:restored")}
    h = history | {"epoch": [1, 2], "trace": trace}
    keys = {"dense": [h], "overfitting": [h], "sweet spot": [h], "underfitting": [h]}
    at = {"dense": 0.0, "overfitting": 0.98, "sweet spot": 0.999, "underfitting": 0.998}
    yield "dd_dynamics", plots.figure_dd_dynamics(keys, at)
    yield "dd_memorization", plots.figure_dd_memorization(keys, at)
    yield "redense_dynamics", plots.figure_redense_dynamics({k: (v, v) for k, v in keys.items() if k != "dense"}, at)
    paths = pd.DataFrame([{"t": t, "subset": sub, "loss": 1 - t, "accuracy": t, "round": r, "seed": 0,
                           "sparsity": 1 - 0.5 ** r} for r in (3, 5) for sub in ("train", "test") for t in (0, 0.5, 1)])
    yield "interpolation", plots.figure_interpolation(paths, {3: "overfitting", 5: "sweet spot"})
    curves = pd.DataFrame([{"alpha": a, "loss": 0.1 + a * a, "solution": sol, "round": r, "seed": 0,
                            "sparsity": 1 - 0.5 ** r} for a in (-1, 0, 1)
                           for sol, r in (("dense", 0), ("sparse", 3), ("re-dense", 3))])
    yield "loss_curves", plots.figure_loss_curves(curves, {0: "dense", 3: "overfitting"})
    dist = pd.DataFrame([{"round": r, "seed": s, "sparsity": 1 - 0.5 ** r, "sparse_distance": 5.0 + s,
                          "redense_distance": 8.0, "sparse_test_acc": 0.6, "redense_test_acc": 0.5}
                         for r in range(1, 6) for s in (0, 1)])
    yield "distance", plots.figure_distance(dist)
    sols = pd.DataFrame([{"key": k, "sparsity": s, "train_acc": 0.9, "test_acc": 0.8, "train_acc_std": 0.01,
                          "test_acc_std": 0.01} for k in ("P-S", "L-S", "S-S", "RigL") for s in (0.8, 0.9, 0.98)]
                        + [{"key": "dense", "sparsity": 0.0, "train_acc": 0.9, "test_acc": 0.85, "train_acc_std": 0.0,
                            "test_acc_std": 0.01}])
    yield "solutions", plots.figure_solutions(sols, title="LeNet-300-100 on fashion-mnist (2 seeds)")
    zero = pd.DataFrame([{"key": f, "sparsity": f, "train_acc": 0.9, "test_acc": 0.8, "train_acc_std": 0.01,
                          "test_acc_std": 0.01} for f in (0.0, 0.5, 0.99, 0.999)])
    yield "zeroed_init", plots.figure_zeroed_init(zero)
    norms = pd.DataFrame([{"solution": sol, "sparsity": s, "seed": seed, "epochs": e, "grad_norm": 1.0 + e}
                          for sol in ("P-S", "S-S", "S-S unit", "SET", "RigL", "L-S") for s in (0.9, 0.98)
                          for seed in (0, 1) for e in (0.0, 1.0, 2.0)])
    yield "grad_norms", plots.figure_grad_norms(norms, [0.9, 0.98])
    pairs = pd.DataFrame([{"pair": pr, "sparsity": s, "seed": seed, "distance": 1.0, "disagreement": 0.1,
                           "ensemble_accuracy": 0.8} for pr in ("L-S ↔ P-S", "S-S ↔ P-S") for s in (0.9, 0.98)
                          for seed in (0, 1)])
    yield "pairs", plots.figure_pairs(pairs)
    snr = pd.DataFrame([{"stage": st, "sparsity": 0.0 if st == "Sol-D" else s, "seed": seed, "layer": layer,
                         "epochs": e, "snr": 1.0 + e, "mean": 0.1, "std": 0.2}
                        for st in ("Sol-D", "Sol-F", "Sol-S") for s in (0.6, 0.95) for seed in (0, 1)
                        for layer in ("fc1", "fc2", "fc3") for e in (1.0, 2.0)])
    yield "grad_snr", plots.figure_grad_snr(snr)
    path = pd.DataFrame([{"alpha": a, "subset": sub, "loss": 2.3 - 2 * a + 0.01, "accuracy": a, "seed": seed}
                         for a in (0.0, 0.5, 1.0) for sub in ("train", "test") for seed in (0, 1)])
    yield "init_s_path", plots.figure_init_s_path(path)
    yield "cosines", plots.figure_cosines({a: np.linspace(-0.5, 0.5, 100) for a in (0.0, 0.3, 0.9)})
    obj = pd.DataFrame([{"t": t, "subset": "train", "loss": 0.2 + t * (1 - t), "l2": 0.03, "start": st, "seed": seed}
                        for t in (-0.2, 0.0, 0.5, 1.0, 1.2) for st in ("dense init", "random sparse init")
                        for seed in (0, 1)])
    yield "objective_paths", plots.figure_objective_paths(obj, "start", xlabel="t (0: the start, 1: P-S)")
    yield "class_bars", plots.figure_class_bars({"α = 0.3": np.arange(10) + 1, "α = 0.9": np.ones(10)},
                                                reference=np.ones(10) * 400)


@pytest.mark.parametrize("name, fig", list(_figures()), ids=lambda x: x if isinstance(x, str) else "")
def test_figures_fit_the_page_with_legible_text(name, fig):
    import matplotlib.pyplot as plt
    fig.canvas.draw()
    width_px = fig.get_size_inches()[0] * fig.dpi
    assert width_px <= plots.PAGE_WIDTH * plots.DPI + 1, f"{name} is {width_px:.0f} px wide"
    sizes = {t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()}
    assert min(sizes) >= plots.MIN_FONT_PT, f"{name} has text of {min(sizes)} pt"
    plt.close(fig)


def test_the_gradient_snr_figure_says_so_when_the_gradients_did_not_vary():
    # One minibatch per epoch: the tracker logs NaN (no spread), and a log axis of NaN used to raise.
    import matplotlib.pyplot as plt
    snr = pd.DataFrame([{"stage": st, "sparsity": 0.0 if st == "Sol-D" else 0.9, "seed": 0, "layer": "fc1",
                         "epochs": e, "snr": float("nan"), "mean": 0.1, "std": 0.0}
                        for st in ("Sol-D", "Sol-F", "Sol-S") for e in (1.0, 2.0)])
    fig = plots.figure_grad_snr(snr)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and "did not vary" in " ".join(t.get_text() for t in ax.texts)
    plt.close(fig)


def test_the_remedy_curves_keep_low_accuracies_in_view():
    # The lower limit was fixed at 60%: a short run (the paper profile's test: 1 epoch) drew nothing visible.
    import matplotlib.pyplot as plt
    hist = {"epoch": [1, 2, 3, 4], "train_acc": [0.02, 0.05, 0.10, 0.15]}
    fig = plots.figure_remedy_curves({("optimization", "Sol-S"): [hist, hist]}, ["Sol-S"])
    low, high = fig.axes[0].get_ylim()
    assert low <= 5.0 and high == 101
    plt.close(fig)
