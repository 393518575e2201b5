"""One module per chapter: its procedure, its tables, its verdict rules and its notebook's parameters.

=========================  =========================================  ===========================
module                     chapter (notebook)                         plan rows
=========================  =========================================  ===========================
``procedure``              the Fig. 2 procedure every chapter shares   P-F2
``two_regimes``            01_two_regimes                              P-F1
``fisher_trajectory``      02_fisher_trajectory                        P-F3 (and the P-T1 trend)
``curvature``              03_curvature                                P-T2, P-T1
``memorization``           04_memorization                             P-F4 (a, b), P-F5
=========================  =========================================  ===========================

Each verdict rule returns a :class:`sparsegap.verdict.Verdict`; each module's ``PARAMETERS`` is the
:class:`sparsegap.params.ParameterSpec` its notebook checks right after its parameters cell.
"""
