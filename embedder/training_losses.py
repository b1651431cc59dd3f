"""The loss of each training method, built from sentence-transformers' stock losses.

CoSENT and both SimCSE variants are one stock loss each. AnglE (Li & Li, 2024) is the sum
of three objectives on one batch of scored pairs, as the paper trains it and as
sentence-transformers' AnglELoss documentation recommends composing it: the cosine
objective (`CoSENTLoss`), the angle objective (`AnglELoss`) and an in-batch-negatives
objective (`MultipleNegativesRankingLoss`) over the batch's positive pairs. With
`--matryoshka` each loss is wrapped in `MatryoshkaLoss`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import AnglELoss, CoSENTLoss, MatryoshkaLoss, MultipleNegativesRankingLoss

LOSS_SCALE = 20.0  # CoSENT's and AnglE's scale; for in-batch softmax the inverse temperature (0.05)
# AnglE's in-batch objective treats a pair as positive from this normalized score on: STS-B 4 of 5,
# "mostly equivalent", the same cut-off as the STS-B retrieval set's relevance (--min-score 4.0).
IN_BATCH_POSITIVE = 0.8


class AnglEObjectives(torch.nn.Module):
    """AnglE's cosine + angle + in-batch objectives, summed with weight 1 each, from one forward pass.

    The in-batch part is MultipleNegativesRankingLoss over the pairs scored at least
    IN_BATCH_POSITIVE (each other positive's partner is a negative); a batch with fewer
    than two such pairs adds nothing for it. The model is called once per text column,
    so MatryoshkaLoss can wrap this module like any stock loss.
    """

    def __init__(self, model: SentenceTransformer, scale: float = LOSS_SCALE) -> None:
        super().__init__()
        self.model = model
        self.cosine = CoSENTLoss(model, scale=scale)
        self.angle = AnglELoss(model, scale=scale)
        self.in_batch = MultipleNegativesRankingLoss(model, scale=scale)

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        loss = self.cosine.compute_loss_from_embeddings(embeddings, labels) + self.angle.compute_loss_from_embeddings(embeddings, labels)
        positive = labels >= IN_BATCH_POSITIVE
        if int(positive.sum()) >= 2:
            loss = loss + self.in_batch.compute_loss_from_embeddings([e[positive] for e in embeddings], labels[positive])
        return loss


def make_loss(method: str, model: SentenceTransformer, matryoshka_dims: Sequence[int] = ()) -> torch.nn.Module:
    """The method's loss (CoSENT for scored pairs, AnglE's sum, in-batch softmax for SimCSE), Matryoshka-wrapped when dims are given."""
    if method == "cosent":
        loss: torch.nn.Module = CoSENTLoss(model, scale=LOSS_SCALE)
    elif method == "angle":
        loss = AnglEObjectives(model)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=LOSS_SCALE)
    return MatryoshkaLoss(model, loss, list(matryoshka_dims)) if matryoshka_dims else loss


def describe_loss(loss: torch.nn.Module) -> str:
    """The loss as recorded in training.json, e.g. 'MatryoshkaLoss(CoSENTLoss(scale=20), dims=[384, 128])'."""
    if isinstance(loss, MatryoshkaLoss):
        return f"MatryoshkaLoss({describe_loss(loss.loss)}, dims={list(loss.matryoshka_dims)})"
    if isinstance(loss, AnglEObjectives):
        parts = " + ".join(describe_loss(part) for part in (loss.cosine, loss.angle))
        return f"{parts} + {describe_loss(loss.in_batch)} on pairs scored >= {IN_BATCH_POSITIVE:g}"
    return f"{type(loss).__name__}(scale={loss.scale:g})"
