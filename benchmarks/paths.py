"""Where the benchmarks read shared data and keep caches: paths relative to the checkout or the user's cache dir, never this machine's."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks import the library from this checkout

DATA = ROOT.parent / "shared" / "data"  # ../shared/data beside the checkout


def default_cache() -> Path:
    """$XDG_CACHE_HOME/simsearch, else ~/.cache/simsearch."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "simsearch"


def cache_dir(root: Path, name: str = "") -> Path:
    """The folder `root/name`, created on demand."""
    folder = root / name if name else root
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_path_options(parser: argparse.ArgumentParser) -> None:
    """--cache DIR and --data-dir DIR, shared by every benchmark that caches or reads the shared data sets."""
    parser.add_argument("--cache", type=Path, default=default_cache(), help="cache folder, created on demand (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=DATA, help="the shared data sets (default: ../shared/data beside the checkout)")
