"""The tests, and the notebook kernels they start, run the code of this checkout."""

from pathlib import Path

import sparsegap

ROOT = Path(__file__).resolve().parents[1]


def test_sparsegap_is_imported_from_this_checkout():
    assert Path(sparsegap.__file__).resolve().is_relative_to(ROOT / "pkg")
