"""A fresh machine (issue #21): with an empty, read-only or missing home, every command says only its own lines.

Each case runs the real CLI in a fresh interpreter whose environment has none of the
cache variables a warm machine may carry (XDG_*, MPLCONFIGDIR, HF_HOME, Ray's and ONNX
Runtime's switches), so no cache left by an earlier run can make it pass. stderr must
hold nothing but the command's own lines: no matplotlib, fontconfig, ONNX Runtime or
Ray message about a cache, a config folder or a token file. In an empty home, only the
caches we accept (matplotlib's and fontconfig's font lists, our ONNX exports and model-file digests) may appear.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

# Variables through which a warm machine points libraries at caches or changes what they write.
CACHE_VARIABLES = (
    "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "MPLCONFIGDIR", "HF_HOME", "HF_HUB_CACHE",
    "HF_HUB_OFFLINE", "TRANSFORMERS_CACHE", "SENTENCE_TRANSFORMERS_HOME", "TORCH_HOME", "ORT_DISABLE_TELEMETRY",
    "RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
)
# What an empty home may hold afterwards: font lists (matplotlib, fontconfig) and our own ONNX exports.
ACCEPTED_IN_HOME = {".cache/matplotlib", ".config/matplotlib", ".cache/fontconfig", ".cache/simsearch"}
HOMES = ("empty", "read-only", "unset")
INDEX_LINES = ("indexed ", "index: ", "why: ", "built on: ", "memory: ", "lexical: ", "search: ", "measured on ")


def fresh_env(home: Path | None) -> dict[str, str]:
    """This process's environment without cache variables, with HOME at `home` (None: no HOME at all)."""
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES and k != "HOME"}
    if home is not None:
        env["HOME"] = str(home)
    return env


@pytest.fixture(params=HOMES)
def home(request, tmp_path, read_only) -> tuple[str, Path | None]:
    """(kind, folder) of a fresh home: an empty folder, an unwritable empty folder, or none (HOME unset)."""
    if request.param == "unset":
        return request.param, None
    folder = tmp_path / "home"
    folder.mkdir()
    return request.param, read_only(folder) if request.param == "read-only" else folder


def home_contents(folder: Path) -> set[str]:
    """What was written into `folder`, named by its first two levels ('.cache/matplotlib'; a file at the top by its name)."""
    found = (p.relative_to(folder).parts for p in folder.rglob("*"))
    return {"/".join(parts[:2]) for parts in found if len(parts) >= 2 or (folder / parts[0]).is_file()}


def assert_only_own_lines(stderr: str, own: tuple[str, ...]) -> None:
    """Every non-blank stderr line starts with one of the command's own prefixes."""
    foreign = [line for line in stderr.splitlines() if line.strip() and not line.startswith(own)]
    assert foreign == [], stderr


def tiny_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny model without any ONNX export (each case exports afresh)."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy, ignore=shutil.ignore_patterns("onnx"))
    return copy


def sweep_record(tmp_path: Path) -> Path:
    """A `reduce sweep --json` result: `report` draws a plot for it."""
    rows = [{"method": "full", "dim": 32, "sts": {"mean": 0.5, "std": 0.0}}] + [
        {"method": "jl", "dim": d, "sts": {"mean": 0.4 + d / 100, "std": 0.01}} for d in (4, 8, 16)
    ]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"kind": "reduction-sweep", "rows": rows}), encoding="utf-8")
    return path


def sts_pairs(tmp_path: Path) -> Path:
    path = tmp_path / "sts.tsv"
    path.write_text("a dog\ta cat\t1\nthe man\ta man\t3\nthe cat\tthe dog\t2\nstocks fell\tstocks rose\t4\n", encoding="utf-8")
    return path


def run_plain(tmp: Path, model: Path, corpus: Path, env: dict[str, str]) -> None:
    """build, query and encode on the torch backend."""
    built = run_cli(["index", "build", corpus, "-o", tmp / "idx", "--model", model], env)
    assert built.returncode == 0, built.stderr
    assert_only_own_lines(built.stderr, INDEX_LINES)
    asked = run_cli(["query", tmp / "idx", "a dog", "-k", "2", "--json"], env)
    assert asked.returncode == 0 and asked.stderr == "", asked.stderr
    assert len(json.loads(asked.stdout)["hits"]) == 2
    encoded = run_cli(["encode", corpus, "-o", tmp / "v.npy", "--model", model], env)
    assert encoded.returncode == 0, encoded.stderr
    assert_only_own_lines(encoded.stderr, ("wrote ",))


def run_plots(tmp: Path, model: Path, corpus: Path, env: dict[str, str]) -> None:
    """`eval sts --plot` and `report` with a plot: matplotlib builds its font list on first use."""
    scored = run_cli(["eval", "sts", "--data", sts_pairs(tmp), "--model", model, "--plot", tmp / "s.png"], env)
    assert scored.returncode == 0, scored.stderr
    assert_only_own_lines(scored.stderr, ())
    reported = run_cli(["report", sweep_record(tmp), "-o", tmp / "r.md"], env)
    assert reported.returncode == 0, reported.stderr
    assert_only_own_lines(reported.stderr, ("wrote ",))
    for png in (tmp / "s.png", tmp / "r-dims.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_onnx(tmp: Path, model: Path, corpus: Path, env: dict[str, str]) -> None:
    """`encode --backend onnx` exports into the model folder; ONNX Runtime keeps no telemetry id in the home."""
    encoded = run_cli(["encode", corpus, "-o", tmp / "x.npy", "--model", model, "--backend", "onnx"], env)
    assert encoded.returncode == 0, encoded.stderr
    assert_only_own_lines(encoded.stderr, ("wrote ", f"exporting {model} to ONNX (once; later runs reuse it) into {model / 'onnx'}"))
    torch_run = run_cli(["encode", corpus, "-o", tmp / "t.npy", "--model", model], env)
    assert torch_run.returncode == 0, torch_run.stderr
    assert np.allclose(np.load(tmp / "x.npy"), np.load(tmp / "t.npy"), atol=1e-4)


def run_train(tmp: Path, model: Path, corpus: Path, env: dict[str, str]) -> None:
    """`train cosent` from the tiny model: sentence-transformers, transformers, datasets and accelerate all load."""
    pairs = tmp / "pairs.tsv"
    pairs.write_text("".join(f"the dog runs {i}\tthe cat runs {i}\t{i % 5}\n" for i in range(16)), encoding="utf-8")
    trained = run_cli(["train", "cosent", "--train", pairs, "--base", model, "-o", tmp / "m", "--epochs", "1"], env)
    assert trained.returncode == 0, trained.stderr
    # sentence-transformers draws its model-card "Computing widget examples" bar on any stream: a bar, not a cache message.
    assert_only_own_lines(trained.stderr, ("cosent: ", "saved ", "Computing widget examples", "\rComputing widget examples"))
    assert (tmp / "m" / "training.json").is_file()


COMMANDS: dict[str, Callable[[Path, Path, Path, dict[str, str]], None]] = {
    "build-query-encode": run_plain, "plots": run_plots, "onnx": run_onnx, "train": run_train,
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_fresh_home_adds_no_foreign_line(command, home, tmp_path, tiny_model_dir, tiny_corpus):
    kind, folder = home
    COMMANDS[command](tmp_path, tiny_copy(tiny_model_dir, tmp_path), tiny_corpus, fresh_env(folder))
    if kind == "empty":
        assert home_contents(folder) <= ACCEPTED_IN_HOME, home_contents(folder)


def test_a_full_disk_while_plotting_is_one_error_naming_the_png(tmp_path, tiny_model_dir):
    """Under a full disk matplotlib cannot save its font list (silently) and the PNG cannot be written (one line, no debris)."""
    env = fresh_env(tmp_path / "home")
    (tmp_path / "home").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    commands = {
        "s.png": ["eval", "sts", "--data", sts_pairs(tmp_path), "--model", tiny_model_dir, "--plot", out / "s.png"],
        "r-dims.png": ["report", sweep_record(tmp_path), "-o", out / "r.md"],
    }
    for png, args in commands.items():
        done = run_cli(args, env, file_limit=20_000)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip() == f"Error: {out / png}: File too large"
        assert list(out.iterdir()) == []


def test_onnx_exports_under_the_home_cache_when_the_model_folder_is_read_only(tmp_path, tiny_model_dir, tiny_corpus, read_only):
    """No XDG_CACHE_HOME: the export lands in ~/.cache/simsearch/onnx; with the home read-only too, one line says what to set."""
    model = read_only(tiny_copy(tiny_model_dir, tmp_path))
    (tmp_path / "home").mkdir()
    done = run_cli(["encode", tiny_corpus, "-o", tmp_path / "x.npy", "--model", model, "--backend", "onnx"], fresh_env(tmp_path / "home"))
    assert done.returncode == 0, done.stderr
    exports = list((tmp_path / "home" / ".cache" / "simsearch" / "onnx").glob("*/model.onnx"))
    assert len(exports) == 1
    assert f"exporting {model} to ONNX (once; later runs reuse it) into {exports[0].parent}" in done.stderr  # says where, once
    (tmp_path / "locked-home").mkdir()
    locked = read_only(tmp_path / "locked-home")
    refused = run_cli(["encode", tiny_corpus, "-o", tmp_path / "y.npy", "--model", model, "--backend", "onnx"], fresh_env(locked))
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith(f"Error: {model}: cannot write an ONNX export") and "XDG_CACHE_HOME" in refused.stderr
    assert not (tmp_path / "y.npy").exists()


@pytest.mark.parametrize("kind", ["empty", "read-only"])
def test_a_local_ray_build_needs_no_home(kind, tmp_path, tiny_model_dir, tiny_corpus, read_only):
    """Ray (seen in 2.60) saves a token to ~/.ray/auth_token and warns; the local cluster simsearch starts keeps its token in memory."""
    pytest.importorskip("ray")
    folder = tmp_path / "home"
    folder.mkdir()
    if kind == "read-only":
        read_only(folder)
    done = run_cli(["index", "build", tiny_corpus, "-o", tmp_path / "idx", "--model", tiny_model_dir, "--engine", "ray", "--workers", "1"], fresh_env(folder))
    assert done.returncode == 0, done.stderr
    assert "indexed 12 documents" in done.stderr
    assert not any(word in done.stderr for word in ("auth_token", "Token authentication", str(folder))), done.stderr
    assert home_contents(folder) <= {".cache/simsearch"}  # only our model-file digests (common.file_digests), nothing of Ray's
