"""The `onnx` and `onnx-int8` backends: tokenizers + onnxruntime + numpy, no torch or sentence-transformers.

The transformer runs as an ONNX graph (exported once and cached, see embedder.onnx_cache);
the model folder's later modules run in numpy (embedder.onnx_modules). Sentences are
sorted by token count and cut into batches of `batch_size`, so each batch pads to a
similar length, then put back in input order. Measured on 1,000 STS-B sentences
(onnx-int8, the shared 2-core VM): sorting gives +58% sentences/s over input-order batches;
filling batches to a token budget instead (1k-8k tokens) gave no gain (-3% to -15%).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.progress import progress_bar
from embedder.model_files import model_fingerprint, model_reference, reduction_of, resolve_model
from embedder.onnx_cache import FILES, INSTALL_HINT, onnx_cache
from embedder.onnx_modules import ModelPipeline, TransformerSpec, read_pipeline
from errors import DataError, UsageError

ONNX_BACKENDS = tuple(FILES)


def import_onnxruntime() -> Any:
    """The onnxruntime module, or a one-line UsageError with the install command.

    ONNX Runtime (seen in 1.32) keeps a telemetry device id under the user's home and warns on
    stderr at import when it cannot (read-only or missing home); ORT_DISABLE_TELEMETRY, unless the
    user set it, turns that off, so the import writes nothing to the home and says nothing.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(f"the onnx backends need onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def make_session(path: Path) -> Any:
    """A CPU InferenceSession: one intra-op thread per available core, all graph optimizations, no spin-waiting.

    Spin-waiting threads cost 1.6x throughput on a 2-core VM whose cores are shared
    (423 vs 672 sentences/s) and gain ~5% (within noise) when it is idle.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own types (InvalidProtobuf, Fail, ...) derive from Exception only
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {reason}); remove the folder {path.parent} and run again to export it afresh") from None


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


def length_order(encodings: Sequence[Any]) -> np.ndarray:
    """Positions of the encodings, longest first (stable): batches cut from this order pad little."""
    return np.argsort(-np.array([len(e.ids) for e in encodings]), kind="stable")


def padded(encodings: Sequence[Any]) -> dict[str, np.ndarray]:
    """The graph's int64 inputs for a batch of encodings, zero-padded to the longest."""
    width = max(len(e.ids) for e in encodings)
    arrays = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
    for i, e in enumerate(encodings):
        arrays["input_ids"][i, : len(e.ids)] = e.ids
        arrays["attention_mask"][i, : len(e.ids)] = e.attention_mask
        arrays["token_type_ids"][i, : len(e.ids)] = e.type_ids
    return arrays


@dataclass
class OnnxEncoder:
    """The encoder contract (common.encoder.Encoder) over an ONNX Runtime session and the model's numpy modules."""

    name: str
    reduction: dict[str, Any] | None
    backend: str
    pipeline: ModelPipeline
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    fingerprint: str | None = None  # of the source model folder (embedder.model_files.model_fingerprint), as the torch backend reports it

    @property
    def dim(self) -> int:
        return self.pipeline.dim

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "reduction": self.reduction, "fingerprint": self.fingerprint, "onnxruntime": import_onnxruntime().__version__}

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | None = None) -> np.ndarray:
        """Embed `texts` as L2-normalized float32 rows in input order (batches of similar token counts)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(texts) == 0:
            return out
        encodings = self.tokenize(texts)
        order = length_order(encodings)
        with progress_bar(len(texts), "encoding", "sent", show_progress) as bar:
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = self.run([encodings[i] for i in rows])
                bar.update(len(rows))
        return out

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self.tokenize(texts))

    def tokenize(self, texts: Sequence[str]) -> list[Any]:
        """The fast tokenizer's encodings, lower-cased first when the model's tokenizer does that."""
        lower = self.pipeline.transformer.do_lower_case
        return self.tokenizer.encode_batch([t.lower() if lower else t for t in texts])

    def run(self, encodings: list[Any]) -> np.ndarray:
        """One padded batch through the graph and the numpy modules, then L2-normalized (as the torch backend returns)."""
        arrays = padded(encodings)
        feeds = {i.name: arrays[i.name] for i in self.session.get_inputs()}
        names = [o.name for o in self.session.get_outputs()]
        features = dict(zip(names, self.session.run(names, feeds)))
        vectors = self.pipeline({**features, "attention_mask": arrays["attention_mask"]})
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def onnx_model_folder(name: str | None, backend: str) -> Path:
    """The local folder of a model to run on an onnx `backend` (onnxruntime importable), or a one-line UsageError."""
    if backend not in ONNX_BACKENDS:
        raise UsageError(f"unknown onnx backend {backend!r} (expected one of {', '.join(ONNX_BACKENDS)})")
    folder = Path(resolve_model(name))
    if not folder.is_dir():
        raise UsageError(f"{name}: the onnx backends need a local model folder or the bundled default, not a hub name")
    import_onnxruntime()
    return folder


def load_onnx_encoder(name: str | None, backend: str = "onnx-int8") -> OnnxEncoder:
    """An ONNX encoder for a local model folder or the bundled default, exporting on first use (cached)."""
    folder = onnx_model_folder(name, backend)
    pipeline = read_pipeline(folder)
    spec = pipeline.transformer
    cache = onnx_cache(folder, spec.folder, spec.all_layers)
    return OnnxEncoder(
        model_reference(name), reduction_of(name), backend, pipeline, make_session(cache / FILES[backend]), load_tokenizer(spec), model_fingerprint(name)
    )
