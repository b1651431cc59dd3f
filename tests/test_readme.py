"""The README's command-line block runs as written, in order, on the files in examples/ (outputs redirected to a temporary folder)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command_block(section: str = "## Command line") -> str:
    """The first ```bash block after the README heading `section`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(section + "\n"):]
    return re.search(r"```bash\n(.*?)```", after, re.S).group(1)


def test_the_command_line_block_runs_as_written(tmp_path):
    block = command_block()
    assert "S=.venv/bin/simsearch" in block and "../shared" not in block  # a fresh clone has examples/, not the shared data
    script = block.replace("S=.venv/bin/simsearch", f"S={Path(sys.executable).parent / 'simsearch'}").replace("build/", f"{tmp_path}/")
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    info = json.loads(subprocess.run([str(Path(sys.executable).parent / "simsearch"), "index", "info", str(tmp_path / "docs"), "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["document_count"] == 13  # 12 documents, 3 added, 2 removed
    retrieval = json.loads((tmp_path / "results" / "retrieval.json").read_text().splitlines()[0])
    assert retrieval["recall@10"] == 1.0 and retrieval["queries"] == 4  # 10 of 13 documents: every judged one is found
    assert (tmp_path / "report.md").is_file() and (tmp_path / "corpus.npy").is_file()
