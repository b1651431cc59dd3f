"""A sentence-transformers model folder's modules, read from its files and run in numpy (no torch).

The ONNX graph replaces only the first module (the Hugging Face transformer). Every
later module (WeightedLayerPooling, Pooling, Dense, Normalize) is rebuilt here from
its own config and weights, and computes what the sentence-transformers class
computes, so that a reduced or first-last-avg model gives the same vectors on both
backends. A module type or setting not handled here is a one-line UsageError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from errors import DataError, UsageError

Features = dict[str, np.ndarray]
MODULES_FILE = "modules.json"
# Pooling modes in the order sentence-transformers concatenates them, with the legacy config flag of each.
POOLING_FLAGS = {
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean": "pooling_mode_mean_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
ACTIVATIONS = {"torch.nn.modules.linear.Identity": lambda x: x, "torch.nn.modules.activation.Tanh": np.tanh}
SENTENCE = "sentence_embedding"


def read_json(path: Path) -> Any:
    """A JSON object or list from a model file, or a DataError naming the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read model file ({exc})") from None
    if not isinstance(value, (dict, list)):
        raise DataError(f"{path}: expected a JSON object or list")
    return value


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """A module's float32 tensors from its model.safetensors (numpy reader: no torch)."""
    from safetensors.numpy import load_file

    path = folder / "model.safetensors"
    if not path.is_file():
        raise UsageError(f"{folder}: the onnx backends read module weights from model.safetensors, which is missing")
    return {key: value.astype(np.float32) for key, value in load_file(str(path)).items()}


class Step(Protocol):
    """One module after the transformer: updates the features dict as its sentence-transformers class does."""

    def output_dim(self, dim: int) -> int: ...

    def __call__(self, features: Features) -> Features: ...


@dataclass(frozen=True)
class LayerMix:
    """WeightedLayerPooling: token embeddings = weighted mean of hidden layers layer_start.. (no-op without them)."""

    layer_start: int
    weights: np.ndarray

    def output_dim(self, dim: int) -> int:
        return dim

    def __call__(self, features: Features) -> Features:
        layers = features.get("all_layer_embeddings")
        if layers is None:
            return features
        mixed = np.tensordot(self.weights, layers[self.layer_start :], axes=1) / self.weights.sum()
        return {**features, "token_embeddings": mixed.astype(np.float32)}


def _pool(mode: str, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One pooling mode over right-padded `tokens` (batch, seq, dim) with `mask` (batch, seq) as float."""
    if mode == "cls":
        return tokens[:, 0]
    if mode == "max":
        return np.where(mask[..., None] > 0, tokens, -np.inf).max(axis=1)
    if mode == "lasttoken":
        last = np.maximum(mask.sum(axis=1).astype(np.int64) - 1, 0)
        return tokens[np.arange(len(tokens)), last]
    weights = mask * np.arange(1, mask.shape[1] + 1, dtype=np.float32) if mode == "weightedmean" else mask
    total = np.einsum("bs,bsd->bd", weights, tokens)
    count = np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    return total / (np.sqrt(count) if mode == "mean_sqrt_len_tokens" else count)


@dataclass(frozen=True)
class Pool:
    """Pooling: the configured modes over non-padding tokens, concatenated in sentence-transformers' order."""

    modes: tuple[str, ...]

    def output_dim(self, dim: int) -> int:
        return dim * len(self.modes)

    def __call__(self, features: Features) -> Features:
        tokens, mask = features["token_embeddings"], features["attention_mask"].astype(np.float32)
        pooled = [_pool(mode, tokens, mask) for mode in self.modes]
        return {**features, SENTENCE: np.concatenate(pooled, axis=1).astype(np.float32)}


@dataclass(frozen=True)
class Linear:
    """Dense: activation(x Wᵀ + b) on the sentence embedding."""

    weight: np.ndarray  # (out, in), as torch.nn.Linear stores it
    bias: np.ndarray | None
    activation: str

    def output_dim(self, dim: int) -> int:
        return int(self.weight.shape[0])

    def __call__(self, features: Features) -> Features:
        out = features[SENTENCE] @ self.weight.T
        if self.bias is not None:
            out = out + self.bias
        return {**features, SENTENCE: ACTIVATIONS[self.activation](out).astype(np.float32)}


@dataclass(frozen=True)
class Normalize:
    """Normalize: L2 norm of the sentence embedding (torch's F.normalize clamps the norm at 1e-12)."""

    def output_dim(self, dim: int) -> int:
        return dim

    def __call__(self, features: Features) -> Features:
        x = features[SENTENCE]
        return {**features, SENTENCE: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)}


def pooling_modes(config: dict[str, Any], where: Path) -> tuple[str, ...]:
    """Pooling modes from a v6 `pooling_mode` entry or the legacy `pooling_mode_*` flags (none set: mean)."""
    if config.get("include_prompt", True) is False:
        raise UsageError(f"{where}: pooling with include_prompt=false is not supported by the onnx backends")
    mode = config.get("pooling_mode")
    modes = tuple([mode] if isinstance(mode, str) else mode or [m for m, flag in POOLING_FLAGS.items() if config.get(flag)]) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_FLAGS]
    if unknown:
        raise UsageError(f"{where}: pooling mode {unknown[0]!r} is not supported by the onnx backends")
    return modes


def _check_io_names(config: dict[str, Any], where: Path) -> None:
    """Only modules that read and write the sentence embedding are rebuilt here."""
    names = {config.get("module_input_name", SENTENCE), config.get("module_output_name") or SENTENCE}
    if names != {SENTENCE}:
        raise UsageError(f"{where}: module input/output {sorted(names)} is not supported by the onnx backends (only {SENTENCE!r})")


def dense_step(folder: Path) -> Linear:
    """A Dense module from its config.json and model.safetensors."""
    config = read_json(folder / "config.json")
    _check_io_names(config, folder)
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in ACTIVATIONS:
        raise UsageError(f"{folder}: Dense activation {activation!r} is not supported by the onnx backends")
    if config.get("use_residual"):
        raise UsageError(f"{folder}: Dense with use_residual is not supported by the onnx backends")
    weights = read_weights(folder)
    return Linear(weights["linear.weight"], weights.get("linear.bias") if config.get("bias", True) else None, activation)


def layer_mix_step(folder: Path) -> LayerMix:
    """A WeightedLayerPooling module from its config.json and model.safetensors."""
    config = read_json(folder / "config.json")
    return LayerMix(int(config.get("layer_start", 4)), read_weights(folder)["layer_weights"])


def normalize_step(folder: Path) -> Normalize:
    """A Normalize module (its config, when present, must name the sentence embedding)."""
    if (folder / "config.json").is_file():
        _check_io_names(read_json(folder / "config.json"), folder)
    return Normalize()


STEP_READERS = {
    "WeightedLayerPooling": layer_mix_step,
    "Pooling": lambda folder: Pool(pooling_modes(read_json(folder / "config.json"), folder)),
    "Dense": dense_step,
    "Normalize": normalize_step,
}


@dataclass(frozen=True)
class TransformerSpec:
    """The first module: where the Hugging Face model lives and how its input is tokenized."""

    folder: Path
    max_length: int
    do_lower_case: bool
    all_layers: bool  # the model config asks for every hidden state (first-last-avg and other layer mixes)
    hidden_size: int


@dataclass(frozen=True)
class ModelPipeline:
    """A model folder as: transformer spec, then the numpy steps that turn token embeddings into the sentence vector."""

    transformer: TransformerSpec
    steps: tuple[Step, ...]

    @property
    def dim(self) -> int:
        dim = self.transformer.hidden_size
        for step in self.steps:
            dim = step.output_dim(dim)
        return dim

    def __call__(self, features: Features) -> np.ndarray:
        for step in self.steps:
            features = step(features)
        return features[SENTENCE]


def _class_name(module_type: str, where: Path) -> str:
    """The class name of a sentence-transformers module type; other packages' modules are refused."""
    if not module_type.startswith("sentence_transformers."):
        raise UsageError(f"{where}: module type {module_type!r} is not supported by the onnx backends")
    return module_type.rsplit(".", 1)[-1]


def transformer_spec(folder: Path, output_name: str = "last_hidden_state") -> TransformerSpec:
    """The transformer module's settings, as sentence-transformers resolves them.

    Maximum length: sentence_bert_config.json's max_seq_length, else the tokenizer's
    model_max_length, capped at the model's max_position_embeddings. `output_name`: what the
    module reads from the model (a cross-encoder's: logits).
    """
    st_config = read_json(folder / "sentence_bert_config.json") if (folder / "sentence_bert_config.json").is_file() else {}
    output = st_config.get("modality_config", {}).get("text", {})
    if output and (output.get("method"), output.get("method_output_name")) != ("forward", output_name):
        raise UsageError(f"{folder}: transformer output {output} is not supported by the onnx backends (only forward/{output_name})")
    config = read_json(folder / "config.json")
    tokenizer_config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    lengths = [st_config.get("max_seq_length") or tokenizer_config.get("model_max_length"), config.get("max_position_embeddings")]
    known = [int(n) for n in lengths if isinstance(n, (int, float)) and 0 < n < 1e9]
    if not known:
        raise UsageError(f"{folder}: no maximum sequence length in sentence_bert_config.json, tokenizer_config.json or config.json")
    if not isinstance(config.get("hidden_size"), int):
        raise UsageError(f"{folder / 'config.json'}: no integer hidden_size, which the onnx backends need for the embedding size")
    return TransformerSpec(folder, min(known), bool(st_config.get("do_lower_case", False)), bool(config.get("output_hidden_states")), config["hidden_size"])


def read_pipeline(folder: Path) -> ModelPipeline:
    """The model folder's modules.json as a transformer spec plus numpy steps; unsupported modules fail here."""
    modules_file = folder / MODULES_FILE
    if not modules_file.is_file():
        raise UsageError(f"{folder}: the onnx backends need a sentence-transformers folder (no {MODULES_FILE})")
    modules = sorted(read_json(modules_file), key=lambda m: m.get("idx", 0))
    if not modules or _class_name(modules[0]["type"], modules_file) != "Transformer":
        raise UsageError(f"{modules_file}: the first module must be a sentence-transformers Transformer for the onnx backends")
    steps = []
    for module in modules[1:]:
        name = _class_name(module["type"], modules_file)
        if name not in STEP_READERS:
            raise UsageError(f"{modules_file}: module {module['type']!r} is not supported by the onnx backends (supported: Transformer, {', '.join(STEP_READERS)})")
        steps.append(STEP_READERS[name](folder / module.get("path", "")))
    if not any(isinstance(step, Pool) for step in steps):
        raise UsageError(f"{modules_file}: no Pooling module, so the model gives no sentence embedding")
    return ModelPipeline(transformer_spec(folder / modules[0].get("path", "")), tuple(steps))
