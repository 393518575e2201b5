"""sparsegap: the library behind the book *why sparse networks trained from scratch fall behind*.

One module per concept: config, data, models, pruning, train, trackers, runs, metrics, plots, widgets,
params (notebook parameters), verdict and claims (the claim ledger), bookbuild; and studies/, one module
per chapter (its procedure, tables, verdict rules and notebook parameters).
"""

__version__ = "0.1.0"
