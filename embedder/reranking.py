"""Load a cross-encoder re-ranker (sentence-transformers' CrossEncoder) from a model folder, and tell one from a sentence encoder.

A cross-encoder reads two texts together and gives the pair one score: better than the
cosine of two separately encoded vectors, at one transformer pass per pair, so it scores
STS pairs (`eval sts`) and re-orders a search's top candidates, never a whole corpus.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.reranker import Reranker
from embedder.backends import BACKENDS, DEFAULT_BACKEND, check_cpu
from embedder.model_files import model_fingerprint, model_reference, resolve_model
from errors import UsageError


def is_cross_encoder(name: str | None) -> bool:
    """True for a local folder saved by CrossEncoder (its sentence-transformers config says so, or its transformer is a *ForSequenceClassification)."""
    folder = Path(resolve_model(name)).expanduser()
    for file, test in (("config_sentence_transformers.json", lambda c: c.get("model_type") == "CrossEncoder"),
                       ("config.json", lambda c: any(str(a).endswith("ForSequenceClassification") for a in c.get("architectures") or []))):
        try:
            if test(json.loads((folder / file).read_text(encoding="utf-8"))):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


@dataclass
class CrossEncoderReranker:
    """The re-ranker contract (common.reranker.Reranker) over a loaded CrossEncoder."""

    model: Any  # sentence_transformers.CrossEncoder
    name: str
    fingerprint: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "kind": "cross-encoder", "backend": "torch", "fingerprint": self.fingerprint}

    def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """The model's score of each pair (its activation of the logit: a sigmoid for a one-label model, 0 to 1)."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict(list(pairs), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)[:, -1]  # a two-label model: the "related" column


def load_reranker(name: str, backend: str = DEFAULT_BACKEND, device: str | None = None) -> Reranker:
    """A cross-encoder from a model folder saved by CrossEncoder (`train rerank` makes one) on `backend`; a sentence encoder's folder is refused."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    if not is_cross_encoder(name):
        raise UsageError(f"{name}: not a cross-encoder (a re-ranker) but a sentence encoder or no model; make one with `simsearch train rerank`")
    if backend != "torch":
        check_cpu(backend, device)
        from embedder.onnx_reranker import load_onnx_reranker

        return load_onnx_reranker(name, backend)
    from sentence_transformers.cross_encoder import CrossEncoder

    from embedder.loading import pick_device, quiet_load

    target = resolve_model(name)
    with quiet_load(name, "cross-encoder"):
        model = CrossEncoder(target, device=pick_device(device), local_files_only=Path(target).exists())
    return CrossEncoderReranker(model.eval(), model_reference(name), model_fingerprint(name))
