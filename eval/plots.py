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


def plot_sweep(rows: Sequence[dict], out: Path) -> Path:
    """Spearman vs kept dimensions, one line per (model, method); error bars where `spearman_std` is given.

    Rows: {"model", "method", "dim", "spearman", optional "spearman_std"} (kind "reduction-sweep").
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(f"{Path(str(row.get('model', ''))).name} {row['method']}".strip(), []).append(row)
    for label, points in series.items():
        points = sorted(points, key=lambda r: r["dim"])
        dims = [p["dim"] for p in points]
        values = [p["spearman"] * 100 for p in points]
        errors = [p.get("spearman_std", 0) * 100 for p in points]
        ax.errorbar(dims, values, yerr=errors, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dimensions kept")
    ax.set_ylabel("Spearman × 100")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_recall_vs_qps(rows: Sequence[dict], out: Path) -> Path:
    """Recall@10 against queries per second (batched), one marker per index type, one panel per data set.

    Rows: {"dataset", "type", "recall@10", "qps_batch"} (kind "index-bench").
    """
    datasets = list(dict.fromkeys(str(r.get("dataset", "")) for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for row in (r for r in rows if str(r.get("dataset", "")) == dataset):
            ax.scatter(row["recall@10"], row["qps_batch"], s=30)
            ax.annotate(str(row["type"]), (row["recall@10"], row["qps_batch"]), fontsize=8, xytext=(4, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 vs exact")
        ax.set_ylabel("queries / s (batch)")
        ax.set_title(dataset, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
