"""Pick an encoder backend by name; only the chosen backend's libraries are imported."""

from __future__ import annotations

from common.encoder import Encoder
from embedder.model_files import model_fingerprint, model_reference, reduction_of
from errors import UsageError

# torch: sentence-transformers; onnx / onnx-int8: ONNX Runtime (fp32 / dynamic int8), no torch at run time.
BACKENDS = ("torch", "onnx", "onnx-int8")
DEFAULT_BACKEND = "torch"


def load_encoder(name: str | None = None, device: str | None = None, backend: str = DEFAULT_BACKEND) -> Encoder:
    """The encoder (see common.encoder) for a model name: what index/, eval/ and the server take."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    from embedder.reranking import is_cross_encoder

    if is_cross_encoder(name):
        raise UsageError(f"{name}: a cross-encoder (a re-ranker) scores pairs and gives no sentence vectors; `eval sts --model` takes it")
    if backend != "torch":
        check_cpu(backend, device)
        from embedder.onnx_encoder import load_onnx_encoder

        return load_onnx_encoder(name, backend)
    from embedder.encoding import SentenceEncoder
    from embedder.loading import for_inference, load_model

    return SentenceEncoder(for_inference(load_model(name, device)), model_reference(name), reduction_of(name), fingerprint=model_fingerprint(name))


def check_cpu(backend: str, device: str | None) -> None:
    """The onnx backends run on CPU only: another --device is a one-line UsageError."""
    if device not in (None, "cpu"):
        raise UsageError(f"the {backend} backend runs on CPU only; drop --device {device} or use --backend torch")
