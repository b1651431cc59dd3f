"""Evaluation stage: quality numbers for models and indexes."""

from eval.sts import StsResult, StsRun, cosine_scores, evaluate_sts, mean_result, run_sts
from eval.sts_data import StsData, load_sts, parse_data_arg

__all__ = ["StsData", "StsResult", "StsRun", "cosine_scores", "evaluate_sts", "load_sts", "mean_result", "parse_data_arg", "run_sts"]
