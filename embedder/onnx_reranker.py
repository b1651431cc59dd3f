"""The `onnx` and `onnx-int8` backends for cross-encoders: the pair tokenized together, its logits from ONNX Runtime, the folder's activation in numpy (no torch).

The sequence-classification model is exported whole (embedder.onnx_export, `classifier`) and
cached like an encoder's export (embedder.onnx_cache). Pairs are tokenized as the torch
CrossEncoder does (first and second text with [SEP] between, longest-first truncation to the
model's maximum length), sorted by token count and cut into batches, then put back in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedder.model_files import model_fingerprint, model_reference
from embedder.onnx_cache import FILES, onnx_cache
from embedder.onnx_encoder import import_onnxruntime, length_order, load_tokenizer, make_session, onnx_model_folder, padded
from embedder.onnx_modules import transformer_spec
from errors import UsageError

ST_CONFIG = "config_sentence_transformers.json"
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "torch.nn.modules.activation.Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "torch.nn.modules.linear.Identity": lambda x: x,
}
SIGMOID, IDENTITY = ACTIVATIONS


def activation_name(folder: Path) -> str:
    """The folder's activation of the logits, as CrossEncoder picks it: its config's `activation_fn`, else a sigmoid for one label, identity for more."""
    try:
        configured = json.loads((folder / ST_CONFIG).read_text(encoding="utf-8")).get("activation_fn")
    except (OSError, ValueError, AttributeError):
        configured = None
    if configured is None:
        labels = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("num_labels") or 1
        return SIGMOID if labels == 1 else IDENTITY
    if configured not in ACTIVATIONS:
        raise UsageError(f"{folder / ST_CONFIG}: activation {configured!r} is not supported by the onnx backends (supported: {', '.join(ACTIVATIONS)})")
    return configured


@dataclass
class OnnxReranker:
    """The re-ranker contract (common.reranker.Reranker) over an ONNX Runtime session of the cross-encoder."""

    name: str
    backend: str
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    activation: str
    do_lower_case: bool = False  # sentence_bert_config.json asks the texts lower-cased first (as for encoders)
    fingerprint: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "kind": "cross-encoder", "backend": self.backend, "fingerprint": self.fingerprint, "onnxruntime": import_onnxruntime().__version__}

    def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """The model's score of each pair, in input order (as CrossEncoder.predict: the activation of the logit; a two-label model's last column)."""
        scores = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        lower = self.do_lower_case
        encodings = self.tokenizer.encode_batch([(a.lower(), b.lower()) if lower else (a, b) for a, b in pairs])
        order = length_order(encodings)
        for start in range(0, len(pairs), batch_size):
            rows = order[start : start + batch_size]
            arrays = padded([encodings[i] for i in rows])
            (logits,) = self.session.run(["logits"], {i.name: arrays[i.name] for i in self.session.get_inputs()})
            scores[rows] = ACTIVATIONS[self.activation](logits.astype(np.float32))[:, -1]
        return scores


def load_onnx_reranker(name: str, backend: str = "onnx-int8") -> OnnxReranker:
    """A cross-encoder on ONNX Runtime for a local folder saved by CrossEncoder, exporting its model on first use (cached)."""
    folder = onnx_model_folder(name, backend)
    spec = transformer_spec(folder, output_name="logits")
    activation = activation_name(folder)
    cache = onnx_cache(folder, folder, all_layers=False, classifier=True)
    return OnnxReranker(model_reference(name), backend, make_session(cache / FILES[backend]), load_tokenizer(spec), activation, spec.do_lower_case, model_fingerprint(name))
