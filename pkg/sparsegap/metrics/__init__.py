"""Measurements on trained (or training) networks.

``basic``: accuracy, loss, prediction entropy, disagreement. The curvature estimators
(Fisher trace, Hutchinson Hessian trace, Jacobian norm, per-sample gradient norms) live in
their own modules and are re-exported here.
"""

from .basic import Evaluation, disagreement, evaluate, predict_logits, prediction_entropy

__all__ = ["Evaluation", "disagreement", "evaluate", "predict_logits", "prediction_entropy"]
