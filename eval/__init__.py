"""Evaluation stage: quality numbers for models and indexes.

Names are imported on first use (PEP 562), so light modules such as `eval.tables`
load without torch or sentence-transformers and the CLI starts fast.
"""

from importlib import import_module

_EXPORTS = {
    "StsReport": "eval.sts",
    "StsResult": "common.measures",
    "StsRun": "eval.sts",
    "cosine_scores": "eval.sts",
    "evaluate_sts": "eval.sts",
    "mean_result": "eval.sts",
    "run_sts": "eval.sts",
    "sts_report": "eval.sts",
    "StsData": "common.sts_data",
    "load_sts": "common.sts_data",
    "parse_data_arg": "common.sts_data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
