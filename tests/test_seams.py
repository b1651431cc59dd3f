"""The seams between stages: encoders plug into index/ and eval/; model loading leaves the process alone."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from common.corpus import CorpusSpec
from conftest import run_python
from embedder import load_encoder, load_model
from errors import UsageError
from index.build import build_index
from index.search import load_index
from simsearch import api


def test_loading_a_local_model_does_not_switch_the_whole_process_offline(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    load_model(str(tiny_model_dir))
    load_model()
    assert "HF_HUB_OFFLINE" not in os.environ


def test_the_manifest_names_the_encoder_that_made_the_vectors(tmp_path, tiny_corpus, tiny_model_dir):
    encoder = load_encoder(str(tiny_model_dir))
    manifest = build_index(CorpusSpec(tiny_corpus), tmp_path / "idx", encoder)
    assert manifest.model == encoder.name == str(tiny_model_dir.resolve())
    assert (manifest.backend, manifest.embedding_dim) == ("torch", 32)


def test_index_takes_vectors_without_any_encoder(tmp_path, tiny_corpus, tiny_model_dir):
    encoder = load_encoder(str(tiny_model_dir))
    build_index(CorpusSpec(tiny_corpus), tmp_path / "idx", encoder)
    bare = load_index(tmp_path / "idx")
    queries = encoder.encode(["the cat runs in the park", "stocks fell today"])
    assert [hits[0].text for hits in bare.search_vectors(queries, k=1)] == ["the cat runs in the park", "stocks fell today"]
    with pytest.raises(UsageError, match="without an encoder"):
        bare.search(["a dog"])


def test_an_encoder_of_another_dimension_is_refused(tmp_path, tiny_corpus, tiny_model_dir):
    api.build(tiny_corpus, tmp_path / "idx", model=str(tiny_model_dir))
    with pytest.raises(UsageError, match="32-dim vectors .* gives 384"):
        api.open_index(tmp_path / "idx", model="default")
    result = CliRunner().invoke(main, ["query", str(tmp_path / "idx"), "a dog", "--model", "default"])
    assert result.exit_code == 2 and "Traceback" not in result.output and "gives 384" in result.stderr


def test_python_api_and_cli_give_the_same_hits(tmp_path, tiny_corpus, tiny_model_dir):
    api.build(tiny_corpus, tmp_path / "idx", model=str(tiny_model_dir))
    hits = api.query(tmp_path / "idx", "a dog sleeps on the sofa", k=3).hits[0]
    result = CliRunner().invoke(main, ["query", str(tmp_path / "idx"), "a dog sleeps on the sofa", "-k", "3", "--json"])
    assert [(h["id"], h["score"]) for h in json.loads(result.stdout)["hits"]] == [(h.id, h.score) for h in hits]


def test_encode_file_matches_the_encoder_and_refuses_to_overwrite(tmp_path, tiny_corpus, tiny_model_dir):
    out = tmp_path / "v.npy"
    shape = api.encode_file(tiny_corpus, out, model=str(tiny_model_dir))
    texts = [line.strip() for line in tiny_corpus.read_text().splitlines() if line.strip()]
    np.testing.assert_allclose(np.load(out), load_encoder(str(tiny_model_dir)).encode(texts), atol=1e-6)
    assert shape == (12, 32)
    before = out.read_bytes()
    result = CliRunner().invoke(main, ["encode", str(tiny_corpus), "-o", str(out), "--model", str(tiny_model_dir)])
    assert result.exit_code == 2 and "--overwrite" in result.stderr and out.read_bytes() == before


def test_help_imports_neither_torch_nor_sentence_transformers(tmp_path):
    """Every --help (each group and command, serve and bench included) must start fast: heavy libraries load inside commands."""
    code = (
        "import json, sys\nimport click\nfrom click.testing import CliRunner\nfrom cli import main\n"
        "def paths(group, prefix):\n"
        "    yield prefix\n"
        "    for name, command in group.commands.items():\n"
        "        yield from paths(command, prefix + [name]) if isinstance(command, click.Group) else [prefix + [name]]\n"
        "every = list(paths(main, []))\n"
        "helped = [' '.join(args) for args in every if CliRunner().invoke(main, args + ['--help']).exit_code == 0]\n"
        "print(json.dumps([len(every), helped]))\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers', 'faiss', 'scipy', 'numpy') if m in sys.modules))\n"
    )
    out = run_python(code).splitlines()
    total, helped = json.loads(out[0])
    assert len(helped) == total and {"", "serve", "bench encode", "index add", "eval ann", "train", "reduce sweep"} <= set(helped)
    assert out[1] == "[]"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_encoding_on_cuda_runs_in_half_precision_with_the_same_vectors():
    import torch

    texts = ["a man is playing guitar", "stocks fell today", "the cat runs in the park"]
    gpu = load_encoder(device="cuda")
    assert next(gpu.model.parameters()).dtype in (torch.bfloat16, torch.float16)
    cosines = np.einsum("ij,ij->i", gpu.encode(texts), load_encoder(device="cpu").encode(texts))
    assert cosines.min() > 0.99


def test_counting_tokens_in_one_thread_leaves_an_encode_in_another_intact(tiny_model_dir):
    """The server counts `usage` tokens while a batch encodes: the count must not retune the tokenizer under the encode."""
    import threading

    encoder = load_encoder(str(tiny_model_dir))
    texts = [" ".join(["dog cat"] * (1 + i % 9)) for i in range(32)]  # mixed lengths: the encode pads, the count does not
    want, counts, failures = encoder.encode(texts, 8), set(), []

    def count() -> None:
        try:
            for _ in range(400):
                counts.add(encoder.count_tokens(texts[:5]))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        for _ in range(40):
            assert np.allclose(encoder.encode(texts, 8), want, atol=1e-5)
    finally:
        counter.join()
    assert not failures and len(counts) == 1
