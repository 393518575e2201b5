"""Measurements on trained (or training) networks.

``basic``: accuracy, loss, prediction entropy, disagreement, on any subset of the data.
The curvature estimators, each verified against an exact computation on tiny networks
(tests/test_estimators.py): per-sample gradient norms, the Fisher trace, Hutchinson's Hessian
trace and the input-output Jacobian norm, plus a training callback that records Tr(F).
"""

from .basic import Evaluation, disagreement, evaluate, predict_logits, prediction_entropy
from .callbacks import FisherTraceCallback
from .fisher import FisherEstimate, fisher_trace, fisher_trace_se
from .hessian import HutchinsonResult, hessian_trace
from .jacobian import jacobian_norm
from .persample import per_sample_grad_norms_sq

__all__ = ["Evaluation", "disagreement", "evaluate", "predict_logits", "prediction_entropy",
           "FisherTraceCallback", "FisherEstimate", "fisher_trace", "fisher_trace_se", "HutchinsonResult", "hessian_trace", "jacobian_norm",
           "per_sample_grad_norms_sq"]
