"""The work folder beside a training output (`.OUT.work/`): runs and checkpoints wait there until OUT is written, so an interrupted command resumes.

`--seeds` and `--search` keep their finished runs in it; `train rerank` its checkpoints
(`--resume` continues from the last). A rerun must be the same command (plan.json holds its
settings); the folder is removed once the output is written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.atomic import OWNER_MARK, is_own, mark_own
from embedder.training import TrainConfig
from errors import UsageError

log = logging.getLogger("simsearch.train")

PLAN = "plan.json"


def work_folder(output: Path) -> Path:
    """Where a command keeps its runs or checkpoints until the output is written: a hidden sibling of the output."""
    return output.parent / f".{output.name}.work"


def _plan_key(config: TrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """What must match for a rerun to resume the work folder: every setting but the output and display ones."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("output", "overwrite", "show_progress", "resume")}
    return json.loads(json.dumps({**settings, **extra}, default=str))


def open_work(config: TrainConfig, extra: dict[str, Any]) -> Path:
    """The work folder for this command, created, or resumed when it holds a run of the same command."""
    work = work_folder(config.output)
    key = _plan_key(config, extra)
    plan_file = work / PLAN
    if (work.exists() or work.is_symlink()) and not is_own(work, config.output):
        raise UsageError(f"{work}: is in the way of the runs of {config.output.name} and was not made by simsearch (no {OWNER_MARK}); move it away")
    if plan_file.is_file():
        if json.loads(plan_file.read_text(encoding="utf-8")) != key:
            raise UsageError(f"{work}: holds runs of a different command; rerun that command to finish it, or remove the folder")
        log.info(f"resuming from {work}")
    else:
        work.mkdir(parents=True, exist_ok=True)
        mark_own(work, config.output)
        plan_file.write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")
    return work
