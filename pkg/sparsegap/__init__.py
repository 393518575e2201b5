"""sparsegap: the library behind the book *why sparse networks trained from scratch fall behind*.

One module per concept: data, models, pruning, train, runs, pipeline, metrics, plots, widgets.
"""

__version__ = "0.1.0"
