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


def plot_sweep(rows: Sequence[dict], out: Path, title: str = "") -> Path:
    """Score vs kept dimensions: one panel per measure, whitening, JL (± std over seeds) and truncation, full dim dotted.

    Rows as `simsearch reduce sweep --json` prints them: {"method", "dim", MEASURE: {"mean", "std"}, ...};
    the row with method "full" is the unreduced model.
    """
    full = next(r for r in rows if r["method"] == "full")
    names = [k for k, v in full.items() if isinstance(v, dict)]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for method, style in (("whiten", "o-"), ("jl", "s--"), ("truncate", "^-.")):
            chosen = sorted((r for r in rows if r["method"] == method), key=lambda r: r["dim"])
            if chosen:
                ax.errorbar([r["dim"] for r in chosen], [r[name]["mean"] for r in chosen], yerr=[r[name]["std"] for r in chosen], fmt=style, capsize=3, label=method)
        ax.axhline(full[name]["mean"], color="grey", linestyle=":", label=f"full ({full['dim']})")
        ax.set_xscale("log", base=2)
        dims = sorted({r["dim"] for r in rows})
        ax.set_xticks(dims, [str(k) for k in dims])
        ax.set_xlabel("dimension k")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_recall_vs_qps(rows: Sequence[dict], out: Path) -> Path:
    """Recall@10 against queries per second (batched), one marker per index type, one panel per data set.

    Rows: {"dataset", "type", "recall@10", "qps_batch"} (kind "index-bench").
    """
    datasets = list(dict.fromkeys(str(r.get("dataset", "")) for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(9 * len(datasets), 4.2), squeeze=False)
    markers = "osD^vP*Xh<>"
    for ax, dataset in zip(axes[0], datasets):
        for n, row in enumerate(r for r in rows if str(r.get("dataset", "")) == dataset):
            ax.scatter(row["recall@10"], row["qps_batch"], s=40, marker=markers[n % len(markers)], label=str(row["type"]))
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 vs exact")
        ax.set_ylabel("queries / s (batch)")
        ax.set_title(dataset, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
