"""Load a sentence-transformers model (local folder, hub name, or the bundled default) and wrap it as an encoder."""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from sentence_transformers import SentenceTransformer
from transformers.utils import logging as transformers_logging

from embedder.model_files import PICKLE_REFUSED, resolve_model
from errors import UsageError

def pick_device(device: str | None = None) -> str:
    """The torch device to run on: the one asked for, else CUDA when present, else CPU."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name: str | None = None, device: str | None = None) -> SentenceTransformer:
    """Load a model by local folder or hub name; None or 'default' loads the bundled default offline.

    A local folder is loaded with `local_files_only`, so nothing is fetched for it, and
    the process environment is left alone (a later hub name still reaches the hub).
    """
    target = resolve_model(name)
    with quiet_load(name):
        return SentenceTransformer(target, device=pick_device(device), local_files_only=Path(target).exists())


@contextmanager
def quiet_load(name: str | None, what: str = "model") -> Iterator[None]:
    """Load without the libraries' chatter (weight bars, the report of a newly made head) and with their load errors as one UsageError line."""
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()  # the per-load "Loading weights" bar is noise
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a new cross-encoder head is "MISSING" from its base on purpose
    try:
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it; our one line says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            yield
    except pickle.UnpicklingError:  # torch's weights-only loader refused a pickle that holds more than tensors
        raise UsageError(f"cannot load {what} {name!r}: {PICKLE_REFUSED}") from None
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a truncated or damaged model.safetensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot load {what} {name!r}: {first}") from exc
    finally:
        transformers_logging.set_verbosity(verbosity)


def embedding_dim(model: SentenceTransformer) -> int:
    """Output dimension of `model` (the method was renamed in sentence-transformers 6)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def for_inference(model: SentenceTransformer) -> SentenceTransformer:
    """On CUDA, run the encoder in bf16 (fp16 where bf16 is unsupported): half the memory, tensor-core matmuls; CPU stays fp32."""
    if model.device.type == "cuda":
        model.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return model
