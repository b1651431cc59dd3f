"""The training methods, pooling names, and the epochs, batch size and learning rate each method uses when the user names none.

Kept free of heavy imports so that the CLI can show these defaults in `--help` instantly.
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("cosent", "angle", "simcse-unsup", "simcse-sup")
RERANK = "rerank"  # `simsearch train rerank`: a cross-encoder from scored pairs (embedder.rerank_training), not a bi-encoder METHOD
RERANK_LOSSES = ("bce", "mse")  # its --loss: BinaryCrossEntropyLoss (labels or scores in [0, 1]) or MSELoss on the sigmoid
# Methods that read scored pairs (and so take --max-score).
SCORED_METHODS = ("cosent", "angle")
# Methods with an in-batch-negatives objective: a batch must not hold the same text twice.
IN_BATCH_METHODS = ("angle", "simcse-unsup", "simcse-sup")
# How batches are drawn from several --train sets (sentence-transformers' multi-dataset samplers).
SAMPLERS = ("proportional", "round-robin")
# Sentence pooling heads `--pooling` accepts (built in embedder.pooling).
POOLINGS = ("cls", "mean", "first-last-avg")


@dataclass(frozen=True)
class MethodDefaults:
    """Epochs, batch size and peak learning rate a method uses when the user names none."""

    epochs: int
    batch_size: int
    lr: float


# The best settings measured for all-MiniLM-L6-v2, chosen on STS-B dev (docs/benchmarks.md, Training):
# CoSENT's 4 epochs beat 2 by 0.6 dev with both seeds tried. SimCSE wants a far smaller step than
# CoSENT: the base is already contrastively trained, and 3e-5 or more undoes it. AnglE reads the
# same scored pairs as CoSENT and starts from CoSENT's settings until it has its own measurements.
METHOD_DEFAULTS: dict[str, MethodDefaults] = {
    "cosent": MethodDefaults(epochs=4, batch_size=32, lr=5e-5),
    "angle": MethodDefaults(epochs=4, batch_size=32, lr=5e-5),
    "simcse-unsup": MethodDefaults(epochs=1, batch_size=64, lr=1e-5),
    "simcse-sup": MethodDefaults(epochs=1, batch_size=32, lr=1e-5),
    # `train rerank` (a cross-encoder): the better of #32's two probes (lr 1e-4 x 4 epochs: dev 86.73 vs 85.99 at 4e-5 x 3).
    "rerank": MethodDefaults(epochs=4, batch_size=16, lr=1e-4),
}


def defaults_help(name: str) -> str:
    """'[default: cosent 4, angle 4, simcse-unsup 1, simcse-sup 1]' for one MethodDefaults field, for option help texts."""
    return "[default: " + ", ".join(f"{method} {getattr(d, name):g}" for method, d in METHOD_DEFAULTS.items()) + "]"
