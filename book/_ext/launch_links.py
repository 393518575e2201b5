"""Colab and Binder buttons that open the committed notebook, not the executed copy a page is built from.

sphinx-book-theme links a page's launch buttons to its own source file, ``<path_to_book>/<page>.ipynb``.
This book's chapters are built from papermill's executed copies in ``book/notebooks/``, which git
ignores, so those links would 404. With ``launch_notebook_sources`` (page-name prefix -> folder of the
repository), a page ``<prefix><name>`` launches ``<folder>/<name>.ipynb`` instead: the output-free
notebook that starts by installing the library where it is missing.

The theme builds the buttons in an ``html-page-context`` handler (priority 501); this one runs after it
and replaces the path at the end of each launch URL. A URL that does not end with the path the theme
is known to write is reported as a warning, so a change of the theme fails a ``-W`` build instead of
leaving dead links.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from sphinx.application import Sphinx
from sphinx.errors import ConfigError
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
CONFIG = "launch_notebook_sources"


def check_sources(sources: Any) -> dict[str, str]:
    """``launch_notebook_sources`` as a dict, or a ConfigError that says what is allowed."""
    if not isinstance(sources, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k.endswith("/") and not k.startswith("/")
            for k, v in sources.items()):
        raise ConfigError(f"{CONFIG} must map page-name prefixes ending in '/' (such as 'notebooks/') to "
                          f"repository folders (such as 'notebooks'), got {sources!r}")
    return dict(sources)


def source_notebook(pagename: str, sources: Mapping[str, str]) -> str | None:
    """The repository path a page launches, or None where no prefix matches (the theme's path stands).

    The longest matching prefix wins, so a sub-folder can be mapped apart from its parent.
    """
    for prefix in sorted(sources, key=len, reverse=True):
        if pagename.startswith(prefix) and len(pagename) > len(prefix):
            folder = sources[prefix].strip("/")
            name = pagename[len(prefix):]
            return f"{folder}/{name}.ipynb" if folder else f"{name}.ipynb"
    return None


def theme_path(pagename: str, path_to_docs: str, source_suffix: str) -> str:
    """The repository path sphinx-book-theme 1.x puts at the end of a page's launch URLs."""
    prefix = path_to_docs.strip("/")
    return f"{prefix}/{pagename}{source_suffix}" if prefix else f"{pagename}{source_suffix}"


def retarget(url: str, old: str, new: str) -> str:
    """``url`` with its trailing repository path ``old`` replaced by ``new``."""
    if not url.endswith(old):
        raise ValueError(f"launch URL {url!r} does not end with the page's path {old!r}")
    return url[: len(url) - len(old)] + new


def _retarget_launch_buttons(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
                             doctree: Any) -> None:
    new = source_notebook(pagename, check_sources(app.config[CONFIG]))
    if new is None:
        return
    groups = [b for b in context.get("header_buttons", []) if b.get("label") == "launch-buttons"]
    if not groups:
        return
    suffix = Path(app.env.doc2path(pagename)).suffix
    # The theme prefers an .ipynb beside a text source; the executed pages are .ipynb already.
    if suffix != ".ipynb" and Path(app.env.doc2path(pagename)).with_suffix(".ipynb").exists():
        suffix = ".ipynb"
    old = theme_path(pagename, app.config["html_theme_options"].get("path_to_docs", ""), suffix)
    for group in groups:
        for button in group.get("buttons", []):
            if button.get("type") != "link":
                continue
            try:
                button["url"] = retarget(button["url"], old, new)
            except ValueError as err:
                LOGGER.warning(f"{pagename}: {err}; its {button.get('text')} button is left as the theme made it",
                               location=pagename)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value(CONFIG, {}, "html", types=[dict])
    app.connect("config-inited", lambda _app, config: check_sources(config[CONFIG]))
    app.connect("html-page-context", _retarget_launch_buttons, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
