"""The `onnx` and `onnx-int8` backends: tokenizers + onnxruntime + numpy, no torch or sentence-transformers.

The transformer runs as an ONNX graph (exported once and cached, see embedder.onnx_cache);
the model folder's later modules run in numpy (embedder.onnx_modules). Sentences are
sorted by token count and batched so that each batch pads to a similar length, then
put back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.progress import progress_bar
from embedder.model_files import model_reference, reduction_of, resolve_model
from embedder.onnx_cache import FILES, INSTALL_HINT, onnx_cache
from embedder.onnx_modules import ModelPipeline, TransformerSpec, read_pipeline
from errors import UsageError

ONNX_BACKENDS = tuple(FILES)


def import_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line UsageError with the install command."""
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(f"the onnx backends need onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def make_session(path: Path) -> Any:
    """A CPU InferenceSession with one intra-op thread per available core and all graph optimizations."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_tokenizer(spec: TransformerSpec) -> Any:
    """The fast tokenizer from tokenizer.json, truncating at the model's max length and not padding (batches pad themselves)."""
    from tokenizers import Tokenizer

    path = spec.folder / "tokenizer.json"
    if not path.is_file():
        raise UsageError(f"{spec.folder}: the onnx backends need a fast tokenizer (tokenizer.json), which is missing")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(spec.max_length)
    tokenizer.no_padding()
    return tokenizer


def length_batches(lengths: np.ndarray, batch_size: int, token_budget: int | None) -> Iterator[slice]:
    """Slices over `lengths` (sorted longest first): `batch_size` rows each, or, with a token budget, as many rows as fit padded."""
    start = 0
    while start < len(lengths):
        rows = batch_size if token_budget is None else max(1, token_budget // max(int(lengths[start]), 1))
        yield slice(start, min(start + rows, len(lengths)))
        start += rows


@dataclass
class OnnxEncoder:
    """The encoder contract (common.encoder.Encoder) over an ONNX Runtime session and the model's numpy modules."""

    name: str
    reduction: dict[str, Any] | None
    backend: str
    pipeline: ModelPipeline
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    token_budget: int | None = None  # None: fixed batches of `batch_size` sentences

    @property
    def dim(self) -> int:
        return self.pipeline.dim

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "reduction": self.reduction, "onnxruntime": import_onnxruntime().__version__}

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> np.ndarray:
        """Embed `texts` as L2-normalized float32 rows in input order, batching by token count."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        lower = self.pipeline.transformer.do_lower_case
        encodings = self.tokenizer.encode_batch([t.lower() if lower else t for t in texts])
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        with progress_bar(len(texts), "encoding", "sent", show_progress) as bar:
            for part in length_batches(lengths[order], batch_size, self.token_budget):
                rows = order[part]
                out[rows] = self.run([encodings[i] for i in rows])
                bar.update(len(rows))
        return out

    def run(self, encodings: list[Any]) -> np.ndarray:
        """One padded batch through the graph and the numpy modules, then L2-normalized (as the torch backend returns)."""
        width = max(len(e.ids) for e in encodings)
        pad = (self.tokenizer.padding or {}).get("pad_id", 0)
        arrays = {name: np.full((len(encodings), width), pad if name == "input_ids" else 0, dtype=np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
        for i, e in enumerate(encodings):
            arrays["input_ids"][i, : len(e.ids)] = e.ids
            arrays["attention_mask"][i, : len(e.ids)] = e.attention_mask
            arrays["token_type_ids"][i, : len(e.ids)] = e.type_ids
        feeds = {i.name: arrays[i.name] for i in self.session.get_inputs()}
        names = [o.name for o in self.session.get_outputs()]
        features = dict(zip(names, self.session.run(names, feeds)))
        vectors = self.pipeline({**features, "attention_mask": arrays["attention_mask"]})
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def load_onnx_encoder(name: str | None, backend: str = "onnx-int8", token_budget: int | None = None) -> OnnxEncoder:
    """An ONNX encoder for a local model folder or the bundled default, exporting on first use (cached)."""
    if backend not in ONNX_BACKENDS:
        raise UsageError(f"unknown onnx backend {backend!r} (expected one of {', '.join(ONNX_BACKENDS)})")
    folder = Path(resolve_model(name))
    if not folder.is_dir():
        raise UsageError(f"{name}: the onnx backends need a local model folder or the bundled default, not a hub name")
    import_onnxruntime()
    pipeline = read_pipeline(folder)
    spec = pipeline.transformer
    cache = onnx_cache(folder, spec.folder, spec.all_layers)
    return OnnxEncoder(model_reference(name), reduction_of(name), backend, pipeline, make_session(cache / FILES[backend]), load_tokenizer(spec), token_budget)
