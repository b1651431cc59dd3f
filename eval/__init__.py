"""Evaluation stage: quality numbers for models and indexes."""

from eval.sts import StsResult, cosine_scores, evaluate_sts
from eval.sts_data import StsData, load_sts

__all__ = ["StsData", "StsResult", "cosine_scores", "evaluate_sts", "load_sts"]
