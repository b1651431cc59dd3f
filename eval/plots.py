"""PNG plots of evaluation results (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from eval.sts import StsRun  # noqa: E402


def plot_sts_scatter(runs: Sequence[StsRun], out: Path, title: str = "") -> None:
    """Gold score vs cosine similarity, one panel per data set, Spearman in each panel's title."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        ax.scatter(run.data.scores, run.predicted, s=4, alpha=0.35)
        ax.set_title(f"{run.data.name}\nSpearman {run.result.spearman * 100:.2f}", fontsize=9)
        ax.set_xlabel("gold score")
        ax.set_ylabel("cosine similarity")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
