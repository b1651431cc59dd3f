"""Export a model's transformer to ONNX (fp32) and quantize it to int8 (embedder.onnx_quantize); the only ONNX module that imports torch.

The graph takes the tokenizer's tensors (input_ids, attention_mask and, where the
model reads it, token_type_ids) with dynamic batch and sequence axes, and returns
`token_embeddings` (last hidden state) and, when the model config asks for every
hidden state (first-last-avg), `all_layer_embeddings` stacked as (layers + 1, batch,
seq, dim). Everything after the transformer runs in numpy (embedder.onnx_modules).
A cross-encoder's graph (`classifier`) is its sequence-classification model whole and
returns `logits` (batch, labels); its activation runs in numpy (embedder.onnx_reranker).
"""

from __future__ import annotations

import inspect
import pickle
import warnings
from pathlib import Path

from embedder.model_files import PICKLE_REFUSED
from embedder.onnx_cache import FILES, INSTALL_HINT
from embedder.onnx_encoder import import_onnxruntime
from embedder.onnx_quantize import quantize_int8
from errors import UsageError

OPSET = 17
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def export_model(transformer_dir: Path, out: Path, all_layers: bool, classifier: bool = False) -> dict[str, str]:
    """Write model.onnx and model_int8.onnx for the transformer in `transformer_dir` into `out`; returns tool versions."""
    onnxruntime = import_onnxruntime()
    try:
        import onnx  # noqa: F401  (quantize_int8 needs it; fail with the install hint, not deep inside)
        import torch
    except ImportError as exc:
        raise UsageError(f"exporting to ONNX needs {exc.name}: {INSTALL_HINT}") from None
    try:
        export_fp32(transformer_dir, out / FILES["onnx"], all_layers, classifier)
        quantize_int8(out / FILES["onnx"], out / FILES["onnx-int8"])
    except pickle.UnpicklingError:  # torch's weights-only loader refused a pickle that holds more than tensors
        raise UsageError(f"{transformer_dir}: cannot export the model to ONNX: {PICKLE_REFUSED}") from None
    except Exception as exc:  # the exporter fails in many ways; the user needs one line, the traceback stays chained
        raise UsageError(f"{transformer_dir}: cannot export the model to ONNX: {_first_line(exc)}") from exc
    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opset": str(OPSET)}


def export_fp32(transformer_dir: Path, path: Path, all_layers: bool, classifier: bool = False) -> None:
    """torch.onnx.export of the Hugging Face model (a `classifier`: with its sequence-classification head) with dynamic batch and sequence axes."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the "Loading weights" bar is noise, as in embedder.loading
    # Eager attention traces to plain ONNX ops; the math is the same as the default kernel.
    loader = AutoModelForSequenceClassification if classifier else AutoModel
    model = loader.from_pretrained(str(transformer_dir), local_files_only=True, attn_implementation="eager").eval()
    accepted = set(inspect.signature(model.forward).parameters)
    inputs = [name for name in MODEL_INPUTS if name in accepted]
    outputs = ["logits"] if classifier else ["token_embeddings", "all_layer_embeddings"] if all_layers else ["token_embeddings"]

    class Graph(torch.nn.Module):
        """The transformer with positional tensor inputs and the outputs the later modules read."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            result = self.model(**dict(zip(inputs, tensors)), output_hidden_states=all_layers, return_dict=True)
            if classifier:
                return (result.logits,)
            if all_layers:
                return result.last_hidden_state, torch.stack(result.hidden_states)
            return (result.last_hidden_state,)

    # A padded example (second row shorter), so that no "no padding" shortcut is traced into the graph.
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    example = {"input_ids": torch.tensor([[101, 7, 8, 102], [101, 102, 0, 0]]), "attention_mask": mask, "token_type_ids": torch.zeros_like(mask)}
    axes = {name: {0: "batch", 1: "sequence"} for name in [*inputs, "token_embeddings"]}
    if classifier:
        axes = {**{name: axes[name] for name in inputs}, "logits": {0: "batch"}}
    if all_layers:
        axes["all_layer_embeddings"] = {1: "batch", 2: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes: the padded example keeps the graph general
        torch.onnx.export(
            Graph(),
            tuple(example[name].clamp(max=model.config.vocab_size - 1) for name in inputs),
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
