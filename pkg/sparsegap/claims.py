"""The reproduction plan as data: every figure, table and claim of the five documents, by row id.

The ids are those of the plan (``shared/REPRODUCTION.md`` beside the repository): ``P-`` for *The
Price of Sparsity*, ``D-`` for sparse double descent, ``E-`` for Evci et al. (2019) and ``G-`` for
gradient flow (Evci et al., 2022). A :class:`~sparsegap.verdict.Verdict` must name one of them, and
the ledger page lists every row, covered or not yet, so that the book shows the whole plan.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPERS = {
    "P": "The Price of Sparsity (Ye et al., 2022)",
    "D": "Sparse double descent (He et al., 2022)",
    "E": "The difficulty of training sparse networks (Evci et al., 2019)",
    "G": "Gradient flow in sparse networks (Evci et al., 2022)",
}


PAPERS_SHORT = {"P": "Price of Sparsity", "D": "Sparse double descent", "E": "Evci et al. 2019",
                "G": "Gradient flow"}


@dataclass(frozen=True)
class Claim:
    claim_id: str
    what: str            # the row of the plan, in one line
    verdict: bool = True  # False for rows that show something but claim nothing (a diagram)
    shown_in: str = ""    # for such rows: the book page that shows it

    @property
    def paper(self) -> str:
        return PAPERS[self.claim_id.split("-")[0]]

    @property
    def paper_short(self) -> str:
        return PAPERS_SHORT[self.claim_id.split("-")[0]]


CLAIMS: dict[str, Claim] = {c.claim_id: c for c in [
    Claim("P-F1", "Two regimes: Sol-S falls behind Sol-F, first in generalization only, then in optimization too"),
    Claim("P-F2", "The training procedure: Init-D, Sol-D, mask, Init-F/Sol-F and Init-S/Sol-S", verdict=False,
          shown_in="intro"),
    Claim("P-F3", "Tr(F) of Sol-S over training rises then falls (generalization regime) or hardly falls "
                  "(optimization regime)"),
    Claim("P-T1", "Mechanism per regime: the Fisher trend measured on the trajectories recorded during training"),
    Claim("P-T2", "Sol-S has a larger Tr(F), Tr(H) and Jacobian norm than Sol-F"),
    Claim("P-F4", "Under label noise, Sol-S memorizes the noisy samples less than Sol-F; Sol-D sits in between"),
    Claim("P-F5", "Tr(F) over training differs on the noisy and the clean samples"),
    Claim("P-F6", "The loss falls almost monotonically from Init-S to Sol-F; which samples' gradients point that way"),
    Claim("P-F7/8", "Classes of the samples whose gradients align best with Sol-F - Init-S, early and late on the path"),
    Claim("P-F9/10", "Classes of the samples on which Sol-S and Sol-F disagree, train and test"),
    Claim("P-F11", "Layer-wise gradient signal-to-noise ratio over training: scratch, finetune and dense"),
    Claim("P-S4", "The paper's two proposed remedies (negative Fisher regularization early; a Fisher-ranked data "
                  "schedule) close part of the gap"),
    Claim("D-F1", "Under label noise, test accuracy against sparsity descends twice (sparse double descent)"),
    Claim("D-F2", "Training dynamics at the dense, overfitting, sweet-spot and underfitting sparsities",
          verdict=False, shown_in="notebooks/07_sparse_double_descent"),
    Claim("D-F3", "High sparsity memorizes fewer noisy labels (unpermuted, permuted, restored subsets)"),
    Claim("D-F4", "Re-dense training after sparse training"),
    Claim("D-F5", "Linear interpolation from the sparse to the re-dense solution"),
    Claim("D-F6", "1-D loss plots along filter-normalized random directions"),
    Claim("D-F7", "Distance from initialization and test accuracy against sparsity"),
    Claim("E-F1", "Test accuracy against sparsity: pruned, lottery, scratch and sparse-init dense solutions"),
    Claim("E-F3", "Loss along linear paths to the pruned solution from several initializations"),
    Claim("E-F4", "A barrier between the scratch and the pruned solution that a dense Bezier curve avoids"),
    Claim("E-F5", "Training with a random fraction of the weights zeroed at initialization only"),
    Claim("E-F6/7", "Cross-entropy and L2 terms along the linear paths; the solutions have a smaller L2 norm than "
                    "their initialization (Appendix C)"),
    Claim("E-F8", "A cubic Bezier curve in the sparse subspace"),
    Claim("G-1", "Gradient norm at initialization and during training; sparsity-aware initialization helps"),
    Claim("G-2", "Dynamic sparse training (SET, RigL) improves gradient flow"),
    Claim("G-3", "Lottery tickets re-learn the pruning solution"),
]}


def check_claim_id(claim_id: object) -> Claim:
    """The plan's row for ``claim_id``; a clear error for anything else."""
    if not isinstance(claim_id, str) or not claim_id.strip():
        raise ValueError(f"claim_id must be a row id of the reproduction plan such as 'P-F1', got {claim_id!r}; "
                         f"allowed: {', '.join(CLAIMS)}")
    if claim_id not in CLAIMS:
        raise ValueError(f"claim_id={claim_id!r} is not a row of the reproduction plan; allowed: {', '.join(CLAIMS)}")
    return CLAIMS[claim_id]
