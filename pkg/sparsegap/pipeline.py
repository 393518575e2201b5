"""Deprecated: the procedures moved to :mod:`sparsegap.studies`, one module per chapter.

These names stay importable from here for one release. The verdict rules now return
:class:`sparsegap.verdict.Verdict` values instead of ``(status, reasons)`` tuples.
"""

from .studies.curvature import (CURVATURE_METRICS, PAPER_TABLE_2, curvature, curvature_summary,  # noqa: F401
                                curvature_table, curvature_verdict, mechanism_table)
from .studies.fisher_trajectory import fisher_trajectory_verdict, fisher_trend, fisher_trends  # noqa: F401
from .studies.procedure import (KIND_OF_STAGE, METRICS, Experiment, check_seeds, check_sparsities,  # noqa: F401
                                run_two_regimes, two_regime_configs)
from .studies.two_regimes import classify_regimes, two_regimes_verdict  # noqa: F401
