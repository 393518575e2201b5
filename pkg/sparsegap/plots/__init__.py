"""One function per figure: results in, matplotlib Figure out. No training here.

``from sparsegap import plots; plots.figure_x(...)`` reaches every figure; the modules group them:
  style            the book's look: sizes, fonts, stage colours, one legend below, zoomed axes marked, PNG
  data             the numbers each figure plots, as a tidy table and CSV, linked under the figure
  draw             pieces several chapters draw: the log-density sparsity axis, seed means with bands
  regimes          chapters 1-3: the two regimes, training curves, Tr(F) over training, curvature
  memorization     chapter 4: memorization of noisy labels, Tr(F) on noisy samples, noisy confusion
  gradients        chapters 5-6: the Init-S -> Sol-F path, per-sample cosines, class bars, gradient SNR
  double_descent   chapters 7-8: sparse double descent, its dynamics, re-dense training, landscape
  sparse_training  chapters 9-11: how sparse networks are found, gradient flow, objective paths
  remedies         chapter 12: the remedies
"""

from .double_descent import (HEURISTIC_COLORS, KEY_COLORS, figure_dd_dynamics, figure_dd_memorization,
                             figure_distance, figure_double_descent, figure_interpolation, figure_loss_curves,
                             figure_redense_dynamics)
from .data import figure_csv, figure_data, figure_html, mark_sparsity_axis
from .draw import sparsity_axis
from .gradients import figure_class_bars, figure_cosines, figure_grad_snr, figure_init_s_path
from .memorization import figure_fisher_noise, figure_memorization, figure_noisy_confusion
from .regimes import (REGIME_COLORS, figure_curvature, figure_fisher_trajectories, figure_training_curves,
                      figure_two_regimes, shade_regimes)
from .remedies import (REMEDY_COLORS, figure_gap_closed, figure_remedies, figure_remedy_curves,
                       figure_remedy_selection)
from .sparse_training import (SOLUTION_COLORS, figure_grad_norms, figure_objective_paths, figure_pairs,
                              figure_solution_dots, figure_solutions, figure_zeroed_init)
from .style import (COLORS, DPI, FONT_PT, FULL_WIDTH, MIN_FONT_PT, PAGE_WIDTH, figure_to_png, legend_below,
                    line_colors, mark_zoom, use_book_style)

__all__ = [
    "COLORS", "DPI", "FONT_PT", "FULL_WIDTH", "HEURISTIC_COLORS", "KEY_COLORS", "MIN_FONT_PT", "PAGE_WIDTH",
    "REGIME_COLORS", "REMEDY_COLORS", "SOLUTION_COLORS",
    "figure_class_bars", "figure_cosines", "figure_csv", "figure_curvature", "figure_data", "figure_dd_dynamics",
    "figure_dd_memorization", "figure_distance", "figure_double_descent", "figure_fisher_noise",
    "figure_fisher_trajectories", "figure_gap_closed", "figure_grad_norms", "figure_grad_snr", "figure_html",
    "figure_init_s_path", "figure_interpolation", "figure_loss_curves", "figure_memorization",
    "figure_noisy_confusion", "figure_objective_paths", "figure_pairs", "figure_redense_dynamics",
    "figure_remedies", "figure_remedy_curves", "figure_remedy_selection", "figure_solution_dots",
    "figure_solutions", "figure_to_png", "figure_training_curves", "figure_two_regimes", "figure_zeroed_init",
    "legend_below", "line_colors", "mark_sparsity_axis", "mark_zoom", "shade_regimes", "sparsity_axis",
    "use_book_style",
]
