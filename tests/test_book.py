"""The book machinery (sparsegap.bookbuild) and the built book itself.

The first tests are fast checks of bookbuild's input handling. The rest use the session fixture
``built_book`` (tests/conftest.py): every notebook executed at smoke scale, the HTML built, then each
page of the table of contents opened in headless Chromium, served from 127.0.0.1 only.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml

from sparsegap import bookbuild

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Sphinx 7.4 emits inline scripts added after builder init twice (None vs '' file names), so
# sphinx-thebe's `const THEBE_JS_URL` is declared twice. Thebe is off; nothing else is affected.
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)


def toc_pages(toc_file: Path = REPO_ROOT / "book" / "_toc.yml") -> list[str]:
    """Every document of a jb-book table of contents, in reading order, without suffix."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return pages


def write_notebook(path: Path, *code: str, parameters: str = "n = 1  # a knob") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in code]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# ---------------------------------------------------------------- bookbuild's input handling


def test_find_notebooks_sorted_and_only(tmp_path: Path) -> None:
    for name in ("02_b", "01_a", "03_c"):
        write_notebook(tmp_path / f"{name}.ipynb")
    assert [p.stem for p in bookbuild.find_notebooks(tmp_path)] == ["01_a", "02_b", "03_c"]
    assert [p.stem for p in bookbuild.find_notebooks(tmp_path, ["03_c.ipynb", "01_a"])] == ["03_c", "01_a"]
    with pytest.raises(ValueError, match="nope"):
        bookbuild.find_notebooks(tmp_path, ["nope"])


def test_load_parameters_per_profile(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "01_a.ipynb")
    assert bookbuild.load_parameters(nb, "cpu") == {}
    with pytest.raises(FileNotFoundError, match=r"params/smoke/01_a\.yaml"):
        bookbuild.load_parameters(nb, "smoke")
    (tmp_path / "params" / "smoke").mkdir(parents=True)
    (tmp_path / "params" / "smoke" / "01_a.yaml").write_text("n: 3\n")
    assert bookbuild.load_parameters(nb, "smoke") == {"n": 3}
    (tmp_path / "params" / "smoke" / "01_a.yaml").write_text("m: 3\n")
    with pytest.raises(ValueError, match=r"unknown parameters \['m'\]"):
        bookbuild.load_parameters(nb, "smoke")
    (tmp_path / "params" / "smoke" / "01_a.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        bookbuild.load_parameters(nb, "smoke")
    with pytest.raises(ValueError, match="profile='gpu'"):
        bookbuild.load_parameters(nb, "gpu")


def test_failed_notebook_leaves_nothing_in_the_book(tmp_path: Path) -> None:
    notebooks, book = tmp_path / "notebooks", tmp_path / "book"
    write_notebook(notebooks / "01_ok.ipynb", "print('fine', n)")
    write_notebook(notebooks / "02_bad.ipynb", "raise RuntimeError('boom in cell')")
    with pytest.raises(bookbuild.NotebookFailed, match="02_bad") as err:
        bookbuild.execute_notebooks("cpu", book, notebooks, log=lambda _: None)
    assert "boom in cell" in str(err.value)
    assert sorted(p.name for p in (book / "notebooks").iterdir()) == ["01_ok.ipynb"]
    assert (book / "_build" / "failed" / "02_bad.ipynb").is_file()  # kept for debugging


def test_parallel_execution_runs_every_notebook_and_reports_failures(tmp_path: Path) -> None:
    notebooks, book = tmp_path / "notebooks", tmp_path / "book"
    write_notebook(notebooks / "01_a.ipynb", "import os; print(os.environ['SPARSEGAP_WORKERS'], os.environ['OMP_NUM_THREADS'])")
    write_notebook(notebooks / "02_b.ipynb", "print('b')")
    lines: list[str] = []
    runs = bookbuild.execute_notebooks("cpu", book, notebooks, log=lines.append, jobs=2)
    assert [r.name for r in runs] == ["01_a", "02_b"]
    assert sum(": " in line and " s " in line for line in lines) == 2, lines  # one line per notebook
    out = nbformat.read(book / "notebooks" / "01_a.ipynb", as_version=4).cells[-1].outputs[0]["text"]
    assert out.split() == ["2", "1"]  # two workers, one torch thread each
    write_notebook(notebooks / "03_bad.ipynb", "raise RuntimeError('boom in cell')")
    with pytest.raises(bookbuild.NotebookFailed, match="boom in cell"):
        bookbuild.execute_notebooks("cpu", book, notebooks, log=lambda _: None, jobs=2)
    assert not (book / "notebooks" / "03_bad.ipynb").exists()


@pytest.mark.parametrize("jobs, message", [(0, "positive int"), (-1, "positive int"), ("2", "positive int"),
                                           (10_000, "more than the")])
def test_jobs_are_checked_before_anything_runs(tmp_path: Path, jobs, message) -> None:
    write_notebook(tmp_path / "01_a.ipynb")
    with pytest.raises(ValueError, match=message):
        bookbuild.execute_notebooks("cpu", tmp_path / "book", tmp_path, log=lambda _: None, jobs=jobs)
    assert not (tmp_path / "book").exists()


def test_build_html_needs_the_widget_scripts(tmp_path: Path) -> None:
    (tmp_path / "_config.yml").write_text("title: x\n")
    with pytest.raises(FileNotFoundError, match="fetch_widget_js.sh"):
        bookbuild.build_html(tmp_path)


def test_cli_reports_a_bad_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_notebook(tmp_path / "01_a.ipynb")
    code = bookbuild.main(["--profile", "paper", "--notebooks-dir", str(tmp_path),
                           "--book-dir", str(tmp_path / "book"), "--no-html"])
    assert code == 1
    assert "params/paper/01_a.yaml" in capsys.readouterr().err


# ---------------------------------------------------------------- the executed notebooks


def test_every_notebook_executed_with_outputs(built_book) -> None:
    sources = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert sources, "notebooks/ holds no notebook"
    assert sorted(built_book.notebooks) == sources
    for name, path in built_book.notebooks.items():
        nb = nbformat.read(path, as_version=4)
        assert not nb.metadata.get("papermill", {}).get("exception"), name
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        errors = [o for o in outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
        assert any(o.output_type in ("display_data", "execute_result") for o in outputs), \
            f"{name} displayed nothing"


def test_widget_state_is_stored(built_book) -> None:
    with_widgets = 0
    for name, path in built_book.notebooks.items():
        nb = nbformat.read(path, as_version=4)
        views = [o.data[WIDGET_VIEW]["model_id"] for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
        if not views:
            continue
        with_widgets += 1
        state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
        missing = set(views) - set(state)
        assert not missing, f"{name}: displayed widgets without stored state: {missing}"
    assert with_widgets, "no notebook displays a widget; the book promises an interactive explorer"


# ---------------------------------------------------------------- the built HTML in a browser


class _Handler(http.server.SimpleHTTPRequestHandler):
    failures: list[str]

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def log_request(self, code="-", size="-") -> None:
        if str(code).isdigit() and int(code) >= 400 and self.path != "/favicon.ico":
            self.failures.append(f"{code} {self.path}")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # the browser dropping a kept-alive connection is not a failure of the page


@pytest.fixture(scope="module")
def site(built_book):
    """The built HTML on 127.0.0.1 (free port); yields (base URL, list of failed requests)."""
    failures: list[str] = []
    handler = type("Handler", (_Handler,), {"failures": failures})
    server = _Server(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(built_book.html_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", failures
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"headless browser tests need {CHROMIUM} and {CHROMEDRIVER} "
                    "(`make system-test` installs the Debian packages chromium and chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1280,1600"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition: str, timeout: float = 30.0, what: str = "") -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: d.execute_script(f"return Boolean({condition});"), message=what or condition)


def _settle(driver, quiet: float = 1.0, timeout: float = 20.0) -> list[str]:
    """Resource URLs the page loaded, once no new request has started for ``quiet`` seconds."""
    script = "return performance.getEntriesByType('resource').map(e => e.name);"
    names, last_change, start = driver.execute_script(script), time.monotonic(), time.monotonic()
    while time.monotonic() - last_change < quiet and time.monotonic() - start < timeout:
        time.sleep(0.2)
        now = driver.execute_script(script)
        if len(now) != len(names):
            names, last_change = now, time.monotonic()
    return names


VISIBLE_WIDGET = ("[...document.querySelectorAll('.jupyter-widgets, .widget-subarea > *')]"
                  ".some(e => e.offsetParent !== null && e.getBoundingClientRect().height > 0)")
VISIBLE_WIDGET_IMAGES = """
    const slider = document.querySelector('.widget-slider');
    const area = slider && (slider.closest('.cell_output') || document.body);
    return area ? [...area.querySelectorAll('img')]
        .filter(i => i.offsetParent !== null).map(i => i.src) : [];
"""


def _pages_with_widgets(built_book) -> set[str]:
    pages = set()
    for name, path in built_book.notebooks.items():
        state = nbformat.read(path, as_version=4).metadata.get("widgets", {}).get(WIDGET_STATE, {})
        if state.get("state"):
            pages.add(f"notebooks/{name}")
    return pages


@pytest.mark.parametrize("page", toc_pages())
def test_page_renders_offline(page: str, built_book, site, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, failed_requests = site
    url = f"{base}/{page}.html"
    failed_requests.clear()
    browser.get_log("browser")  # drop messages from earlier pages
    with urllib.request.urlopen(url) as response:
        assert response.status == 200

    browser.get(url)
    _wait(browser, "document.readyState === 'complete'", what=f"{page} did not finish loading")
    title = browser.title
    assert title and "404" not in title and "Error response" not in title, title
    assert browser.find_elements(By.CSS_SELECTOR, "article h1"), f"{page} has no heading"

    _wait(browser, "[...document.images].every(i => i.complete)", what=f"images on {page}")
    broken = browser.execute_script(
        "return [...document.images].filter(i => i.naturalWidth === 0).map(i => i.src);")
    assert not broken, f"images that did not load on {page}: {broken}"

    if page in _pages_with_widgets(built_book):
        _wait(browser, VISIBLE_WIDGET, what=f"no widget became visible on {page}")
        if browser.find_elements(By.CSS_SELECTOR, ".widget-slider .noUi-handle"):
            before = browser.execute_script(VISIBLE_WIDGET_IMAGES)
            assert before, f"the slider on {page} shows no image"
            browser.execute_script("window.__shownBefore = JSON.stringify(arguments[0]);", before)
            # A keyboard step is what a reader does; noUiSlider turns it into a 'slide' event,
            # and the jslink carries the new index to the Stack/Tab without any kernel.
            browser.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle").send_keys(Keys.ARROW_RIGHT)
            _wait(browser, f"JSON.stringify((() => {{ {VISIBLE_WIDGET_IMAGES} }})()) !== "
                           "window.__shownBefore",
                  timeout=10, what=f"moving the slider on {page} did not change the image")

    resources = _settle(browser)
    outside = [r for r in resources if not r.startswith((base + "/", "data:", "blob:"))]
    assert not outside, f"{page} requested resources from outside the book: {outside}"
    assert not failed_requests, f"{page} requested missing files: {failed_requests}"
    errors = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and e.get("source") == "javascript"
              and not any(known in e["message"] for known in KNOWN_JS_ERRORS)]
    assert not errors, f"JavaScript errors on {page}: {errors}"


def test_book_has_no_cdn_script_tags(built_book) -> None:
    """Belt and braces for pages the browser test does not open (search, genindex)."""
    offenders = {}
    for html in built_book.html_dir.rglob("*.html"):
        text = html.read_text(errors="replace")
        bad = [u for u in ("cdn.jsdelivr.net", "cdnjs.cloudflare.com")
               if f'src="https://{u}' in text]
        if bad:
            offenders[str(html.relative_to(built_book.html_dir))] = bad
    assert not offenders, offenders


# ---------------------------------------------------------------- the ledger, the site, reading comfort


def test_ledger_holds_exactly_the_verdicts_of_the_notebooks(built_book) -> None:
    import re

    from sparsegap.claims import CLAIMS
    from sparsegap.verdict import ALL_STATUSES, anchor, verdicts_in_notebook

    produced, anchors = set(), set()
    for name, path in built_book.notebooks.items():
        for v in verdicts_in_notebook(nbformat.read(path, as_version=4)):
            produced.add((v.claim_id, v.status, name))
            anchors.add((name, anchor(v.claim_id, v.part)))
    assert produced, "no notebook produced a verdict"
    page = (built_book.html_dir / "ledger.html").read_text()
    rows = set(re.findall(r'data-claim="([^"]+)" data-status="([^"]+)" data-source="([^"]*)"', page))
    judged = {r for r in rows if r[1] in ALL_STATUSES}
    assert judged == produced, f"on the ledger only: {judged - produced}; in notebooks only: {produced - judged}"
    assert {r[0] for r in rows} == set(CLAIMS), "every row of the plan is listed, covered or not"
    for name, anchor_id in anchors:
        assert f'id="{anchor_id}"' in (built_book.html_dir / "notebooks" / f"{name}.html").read_text()
        assert f'href="notebooks/{name}.html#{anchor_id}"' in page


def test_every_judged_ledger_row_shows_an_effect_or_a_reason(built_book) -> None:
    """A row with a status shows what we measured (the key effect with its 95% CI) or, where nothing could
    be measured, the finding that says why."""
    import re

    from sparsegap.verdict import ALL_STATUSES

    page = (built_book.html_dir / "ledger.html").read_text()
    rows = re.findall(r'<tr class="ledger-row"[^>]*data-status="([^"]+)"[^>]*>(.*?)</tr>', page, flags=re.S)
    judged = [(status, body) for status, body in rows if status in ALL_STATUSES]
    assert judged
    for status, body in judged:
        ours = re.search(r'<td class="ledger-ours">(.*?)</td>', body, flags=re.S)
        assert ours and re.sub(r"<[^>]+>", "", ours.group(1)).strip(), f"a {status} row shows no effect or reason: {body[:200]}"


def _links(html_text: str) -> list[str]:
    import re
    return re.findall(r'(?:href|src)="([^"]*)"', html_text)


def test_site_is_self_contained(built_book) -> None:
    """Every href and src of every page stays inside book/_build/html (or is a web link), so the
    folder can be published as it is; no page shows a path of the machine that built it."""
    from urllib.parse import unquote, urlsplit

    html_dir = built_book.html_dir.resolve()
    machine_paths = [str(REPO_ROOT), str(built_book.book_dir), str(built_book.runs_dir), "file://"]
    problems = []
    pages = [p for p in html_dir.rglob("*.html") if "_static" not in p.relative_to(html_dir).parts]  # not templates
    assert len(pages) > 5
    for page in pages:
        text = page.read_text(errors="replace")
        problems += [f"{page.name}: shows {p}" for p in machine_paths if p in text]
        for link in _links(text):
            parts = urlsplit(link)
            if parts.scheme in ("http", "https", "mailto", "data", "javascript") or not parts.path:
                continue
            if parts.scheme or link.startswith("/"):
                problems.append(f"{page.relative_to(html_dir)}: absolute link {link}")
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if html_dir not in target.parents and target != html_dir:
                problems.append(f"{page.relative_to(html_dir)}: {link} leaves the site")
            elif not target.exists():
                problems.append(f"{page.relative_to(html_dir)}: {link} does not exist")
    assert not problems, "\n".join(problems[:20])


def test_injected_parameters_are_hidden(built_book) -> None:
    for name, path in built_book.notebooks.items():
        nb = nbformat.read(path, as_version=4)
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected, f"{name}: smoke parameters were not injected"
        assert all("remove-input" in c.metadata["tags"] for c in injected)


CHAPTERS = [p for p in toc_pages() if p.startswith("notebooks/")]
WIDTHS = (800, 1400)


@pytest.fixture(scope="module")
def page_geometry(built_book, site, browser) -> dict[tuple[int, str], dict]:
    """Each page of the book, opened at 800 and at 1400 px: whether it scrolls sideways, its height, and
    each output image's natural and shown width (the browser's measurement, after images loaded)."""
    base, _ = site
    out = {}
    try:
        for width in WIDTHS:
            browser.set_window_size(width, 1000)
            for page in toc_pages():
                browser.get(f"{base}/{page}.html")
                _wait(browser, "document.readyState === 'complete'")
                _wait(browser, "[...document.images].every(i => i.complete)")
                out[(width, page)] = browser.execute_script("""
                    const d = document.documentElement;
                    const imgs = [...document.querySelectorAll('article img')].filter(i => i.offsetParent !== null
                        && !i.closest('.widget-subarea, .jupyter-widgets') && !i.closest('.navbar-brand'));
                    return {scroll: d.scrollWidth, client: d.clientWidth,
                            height: document.querySelector('article').getBoundingClientRect().height,
                            images: imgs.map(i => [i.naturalWidth, i.getBoundingClientRect().width, i.src.slice(-40)])};
                """)
    finally:
        browser.set_window_size(1280, 1600)
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_no_page_scrolls_sideways(page_geometry, width: int) -> None:
    wide = {page: (g["scroll"], g["client"]) for (w, page), g in page_geometry.items()
            if w == width and g["scroll"] > g["client"] + 1}
    assert not wide, f"at {width} px these pages scroll sideways (scroll width, window width): {wide}"


@pytest.mark.parametrize("width", WIDTHS)
def test_figures_are_crisp_and_their_text_legible(page_geometry, width: int) -> None:
    """Figures are drawn at 2x pixel density (plots.use_book_style) and shown at (nearly) their natural CSS
    size: text drawn at plots.MIN_FONT_PT at plots.DPI is then at least 9 pt (12 px) on screen."""
    from sparsegap import plots

    for (w, page), g in page_geometry.items():
        if w != width or not page.startswith("notebooks/"):
            continue
        assert g["images"], f"{page} shows no figure"
        for natural, shown, src in g["images"]:
            assert natural >= 1.9 * shown, f"{page}: {src} is {natural}px shown at {shown:.0f}px: not 2x density"
            text_px = (plots.MIN_FONT_PT * plots.DPI / 72) * shown / (natural / 2)
            assert text_px >= 12 * 0.99, (f"{page} at {width} px: a {natural}px (2x) image shown at {shown:.0f}px, "
                                          f"its smallest text {text_px:.1f}px (< 12 px = 9 pt)")


def test_ledger_page_is_compact(page_geometry) -> None:
    """The ledger reads without a wall of narrow columns: at 1400 px it is under 7,000 px tall (about
    10,000 before its columns were merged)."""
    height = page_geometry[(1400, "ledger")]["height"]
    assert height < 7000, f"the ledger is {height:.0f} px tall at 1400 px"


def _article(html_text: str) -> str:
    start = html_text.find("<article")
    return html_text[start:html_text.find("</article>", start)]


@pytest.mark.parametrize("page", CHAPTERS)
def test_every_figure_has_a_numbered_caption(built_book, page: str) -> None:
    """Every image of a chapter sits in a <figure> with a numbered caption ("Fig. 7.1"), numbered by chapter,
    so no two chapters show a "Figure 1"; interactive widgets (rendered by script) are the exception."""
    import re

    article = _article((built_book.html_dir / f"{page}.html").read_text())
    outside = re.sub(r"<figure.*?</figure>", "", article, flags=re.S)
    assert "<img" not in outside, f"{page} shows an image without a caption"
    figures = re.findall(r"<figure.*?</figure>", article, flags=re.S)
    assert figures, f"{page} has no captioned figure"
    chapter = int(Path(page).name[:2])
    for f in figures:
        number = re.search(r'class="caption-number">Fig\. (\d+)\.(\d+)', f)
        assert number, f"{page}: a figure without a numbered caption"
        assert int(number.group(1)) == chapter, f"{page}: figure numbered {number.group(0)} in chapter {chapter}"
    assert not re.search(r"<h\d[^>]*>(?:<span[^>]*>[^<]*</span>)?\s*Figure \d", article), \
        f"{page} has a heading that starts with 'Figure N' (use the numbered captions)"


@pytest.mark.parametrize("page", CHAPTERS)
def test_figures_link_their_data(built_book, page: str) -> None:
    """Under its figures a chapter links the numbers they plot (sparsegap.plots.data): "Data: <key>.csv", a CSV
    the page carries, one row per plotted point; the page links at least one."""
    import base64
    import io
    import re

    import pandas as pd

    article = _article((built_book.html_dir / f"{page}.html").read_text())
    linked = 0
    for fid, body in re.findall(r'<figure[^>]*id="([^"]+)"[^>]*>(.*?)</figure>', article, flags=re.S):
        link = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)" download="([^"]+)"', body)
        if link is None:
            continue   # a figure that says in words why there is nothing to draw at this scale
        assert link.group(2) == f"{fid}.csv", f"{page}: figure {fid} links {link.group(2)}"
        table = pd.read_csv(io.StringIO(base64.b64decode(link.group(1)).decode()))
        assert {"panel", "series", "x", "y"} <= set(table.columns) and len(table), f"{page}: {fid}'s data is empty"
        linked += 1
    assert linked, f"{page} links the data of none of its figures"


@pytest.mark.parametrize("page", CHAPTERS)
def test_pages_show_no_logs_or_raw_tables(built_book, page: str) -> None:
    """No printed logs and no raw pandas tables on a chapter's page: numbers are in formatted tables
    (sparsegap.tables) and the prose."""
    article = _article((built_book.html_dir / f"{page}.html").read_text())
    assert 'class="output stream' not in article, f"{page} shows printed output (a log)"
    assert 'class="dataframe' not in article and "<style type=\"text/css\">" not in article, \
        f"{page} shows a raw pandas table"
    assert 'class="pasted-text"' in article, f"{page} quotes no glued number in its prose"


def test_every_verdict_box_starts_with_the_finding(built_book) -> None:
    """A reader who skims a verdict box takes away what we measured: its first sentence is the finding,
    never the paper's claim."""
    import re

    from sparsegap.verdict import verdicts_in_notebook

    for name, path in built_book.notebooks.items():
        verdicts = verdicts_in_notebook(nbformat.read(path, as_version=4))
        page = (built_book.html_dir / "notebooks" / f"{name}.html").read_text()
        for v in verdicts:
            assert v.finding.strip(), f"{name}: verdict {v.label} has no finding"
            first = re.split(r"(?<=[.!?])\s", v.finding.strip())[0]
            assert first.rstrip(".") not in v.claim and v.claim.rstrip(".") not in first, \
                f"{name}: verdict {v.label} opens with the claim's text: {first!r}"
            box = re.search(r'<div id="verdict-[^"]*" class="sparsegap-verdict".*?</p>', page, flags=re.S)
            assert box and "sparsegap-finding" in box.group(0), f"{name}: a verdict box does not open with its finding"


def test_pages_workflow_builds_with_the_readme_command() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job.get("steps", [])]
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make book" in readme
    assert any(s.get("run", "").strip() == "make book" for s in steps)
    uses = {s.get("uses", "").split("@")[0] for s in steps}
    assert {"actions/upload-pages-artifact", "actions/deploy-pages"} <= uses
    assert "ghp-import" in readme


def test_repository_url_override(tmp_path: Path) -> None:
    (tmp_path / "_config.yml").write_text("title: x\nrepository:\n  url: https://example.org/a/b\n")
    path = bookbuild._config_with_repository(tmp_path, "https://github.com/me/fork/")
    assert yaml.safe_load(path.read_text())["repository"]["url"] == "https://github.com/me/fork"
    with pytest.raises(ValueError, match="repository_url"):
        bookbuild._config_with_repository(tmp_path, "github.com/me/fork")


def test_overrides_are_set_over_the_profile_and_checked(tmp_path: Path) -> None:
    notebooks, book = tmp_path / "notebooks", tmp_path / "book"
    write_notebook(notebooks / "01_a.ipynb", "print(n)")
    write_notebook(notebooks / "02_b.ipynb", "print(n)")
    runs = bookbuild.execute_notebooks("cpu", book, notebooks, log=lambda _: None, overrides={"02_b": {"n": 7}})
    printed = [nbformat.read(r.output, as_version=4).cells[-1].outputs[0]["text"].strip() for r in runs]
    assert printed == ["1", "7"]
    with pytest.raises(ValueError, match=r"overrides=\['03_c'\]: no such notebook"):
        bookbuild.execute_notebooks("cpu", book, notebooks, log=lambda _: None, overrides={"03_c": {"n": 7}})
    with pytest.raises(ValueError, match=r"overrides\['01_a'\]: unknown parameters \['m'\]"):
        bookbuild.execute_notebooks("cpu", book, notebooks, log=lambda _: None, overrides={"01_a": {"m": 7}})


def test_a_failure_cancels_the_notebooks_not_started_and_is_raised(tmp_path: Path) -> None:
    # A cancelled notebook came back from wait() as done, and asking it for its exception raised
    # CancelledError instead of the notebook's failure.
    notebooks = tmp_path / "notebooks"
    write_notebook(notebooks / "01_bad.ipynb", "raise RuntimeError('boom in cell')")
    write_notebook(notebooks / "02_slow.ipynb", "import time; time.sleep(3)")
    for name in ("03_c", "04_d", "05_e"):
        write_notebook(notebooks / f"{name}.ipynb", "print('never')")
    with pytest.raises(bookbuild.NotebookFailed, match="boom in cell"):
        bookbuild.execute_notebooks("cpu", tmp_path / "book", notebooks, log=lambda _: None, jobs=2)
