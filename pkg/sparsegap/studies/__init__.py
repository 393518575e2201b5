"""One module per chapter: its procedure, its runs, its tables, its verdict rules and its notebook's parameters.

==============================  ====================================  =====================================
module                          chapter (notebook)                    plan rows
==============================  ====================================  =====================================
``procedure``                   the Fig. 2 procedure of chapters      P-F2
                                1-6 and 12
``two_regimes``                 01_two_regimes                        P-F1
``fisher_trajectory``           02_fisher_trajectory                  P-F3 (and the P-T1 trend)
``curvature``                   03_curvature                          P-T2, P-T1
``memorization``                04_memorization                       P-F4 (a, b), P-F5
``paths``                       05_paths_and_cosines                  P-F6, P-F7/8, P-F9/10
``gradient_snr``                06_gradient_snr                       P-F11
``double_descent``              07_sparse_double_descent              D-F1, D-F2, D-F3
``redense``                     08_redense_and_landscape              D-F4 to D-F7
``difficulty``                  09_difficulty_of_sparse_training      E-F1, E-F5
``gradient_flow``               10_gradient_flow                      G-1, G-2, G-3
``energy``                      11_energy_landscape                   E-F3, E-F4, E-F6/7, E-F8
``remedies``                    12_remedies                           P-S4
``remedies_page``               12_remedies: its page's phrases and   (presentation only)
                                table rows
==============================  ====================================  =====================================

A chapter's notebook passes its checked parameters to its module: ``configs(p)`` (or the module's own
builder) is the one place its run configs are made, ``planned_runs(p)`` lists them for the plan
(``bookbuild --plan``, ``plan_only``) and the module's run function trains exactly those. Each verdict rule
returns a :class:`sparsegap.verdict.Verdict`; each module's ``PARAMETERS`` is the
:class:`sparsegap.params.ParameterSpec` its notebook checks right after its parameters cell.
"""

# Notebook (its stem in notebooks/) -> the study module that holds its parameters and planned_runs. Named here,
# not read from the notebook's source, so that the plan and the checks do not depend on how a cell is written.
CHAPTERS = {
    "01_two_regimes": "sparsegap.studies.two_regimes",
    "02_fisher_trajectory": "sparsegap.studies.fisher_trajectory",
    "03_curvature": "sparsegap.studies.curvature",
    "04_memorization": "sparsegap.studies.memorization",
    "05_paths_and_cosines": "sparsegap.studies.paths",
    "06_gradient_snr": "sparsegap.studies.gradient_snr",
    "07_sparse_double_descent": "sparsegap.studies.double_descent",
    "08_redense_and_landscape": "sparsegap.studies.redense",
    "09_difficulty_of_sparse_training": "sparsegap.studies.difficulty",
    "10_gradient_flow": "sparsegap.studies.gradient_flow",
    "11_energy_landscape": "sparsegap.studies.energy",
    "12_remedies": "sparsegap.studies.remedies",
}


def chapter_module(notebook: str):
    """The study module of ``notebook`` (a stem such as ``"01_two_regimes"``, or a file name), imported."""
    import importlib

    stem = notebook.removesuffix(".ipynb")
    if stem not in CHAPTERS:
        raise ValueError(f"notebook={notebook!r} has no study module; chapters: {sorted(CHAPTERS)} "
                         f"(sparsegap.studies.CHAPTERS)")
    return importlib.import_module(CHAPTERS[stem])
