"""PNG plots of evaluation results (matplotlib, no display needed), each written atomically.

On a machine where matplotlib never ran, importing it builds its font list: it logs
warnings when its config or cache folder cannot be written (read-only or missing home,
full disk) and runs fontconfig's `fc-list`, which prints its own cache errors. Neither
changes a plot (matplotlib falls back to a temporary cache), so both are kept off the
user's stderr during that import; a PNG that cannot be written is one error naming it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from common.atomic import atomic_file
from eval.sts import StsRun


@contextmanager
def cache_chatter_muted() -> Iterator[None]:
    """Mute matplotlib's logged warnings and anything its child processes (fc-list) write to stderr, for one block."""
    logger = logging.getLogger("matplotlib")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        logger.setLevel(level)


with cache_chatter_muted():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


def save_figure(fig, out: Path, dpi: int) -> None:
    """Write `fig` as a PNG to `out` atomically (a full disk leaves no half-written file) and close it."""
    try:
        with atomic_file(Path(out)) as handle:
            fig.savefig(handle, dpi=dpi, format="png")
    finally:
        plt.close(fig)


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
    save_figure(fig, out, dpi=110)


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
    save_figure(fig, out, dpi=120)
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
    save_figure(fig, out, dpi=110)
    return out
