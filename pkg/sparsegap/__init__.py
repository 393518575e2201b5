"""sparsegap: the library behind the book *why sparse networks trained from scratch fall behind*.

One concept per module, each small enough to read in one sitting (600 lines at most). The modules form
layers; a module imports only from the layers below its own, and nothing imports in a circle
(tests/test_architecture.py checks both with import-linter, by the contracts in pkg/pyproject.toml):

* **book machinery**: ``robustness`` (every verdict on a second seed set), ``bookbuild`` (papermill and
  Jupyter Book) and ``widgets``; below them ``ledger`` (the claim ledger page), ``booktoc``, ``teaser`` and
  ``kernels`` (the kernels' environment, and a chapter's prelude timed for the plan).
* **studies/**: one module per chapter (``studies.CHAPTERS`` maps each notebook to its module): its
  procedure, its ``planned_runs``, tables and verdict rules. Notebooks pass their parameters to it, and the
  planner reads the same ``planned_runs``, so no run config is built twice.
* **params**: the notebooks' parameter specs.
* **runs/**: the run store as a package (atomic writes, locks, the store, one recipe per run kind, the
  sweep, workers, executors, the thread policy and the cost plan).
* **training**: ``curves`` (Bezier curves), ``batched`` over ``stacked`` (many small networks as one),
  ``train`` (the one loop), then ``trackers``, ``schedule`` and ``bookkeeping`` (the history row,
  divergence and checkpoint that the three loops share).
* **measurements**: ``landscape`` (paths between networks), over ``metrics/`` (Fisher, Hutchinson,
  Jacobian, per-sample gradients, cosines, gradient flow, comparisons), which never import the run store.
* **foundations**: ``config`` (validated configs with stable hashes, and every vocabulary tuple), over
  ``dst``, ``sparse_init``, ``tracker_specs``, ``verdict``, ``plots``, ``tables``, ``pages``,
  ``memorization`` and ``augment``, over ``data``, ``models`` and ``pruning``, over ``checks`` (the input
  checks many modules share), ``seeds`` (``seed_stream``), ``stats`` and ``claims``.
"""

__version__ = "0.1.0"
