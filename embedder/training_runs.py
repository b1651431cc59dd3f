"""Several training runs behind one output: N seeds with an optional weight average ("model soup"), or a hyperparameter search.

Both compare runs on the dev set only, each run scored by the same measure (the project's
Spearman of cosines, `common.measures`: `dev_score`, and the checkpoint choice inside `train()`). Runs are kept in a work folder beside
the output (`.OUT.work/`), so an interrupted command, run again, skips what is finished;
the work folder is removed once the output is written.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer

from common.atomic import atomic_folder, remove_own, swap_into_place
from common.sts_data import StsData
from embedder.dim_choice import sts_measure
from embedder.loading import load_model
from embedder.rerank_training import train_reranker
from embedder.training import TRAINING_JSON, TrainConfig, TrainResult, check_config, load_dev, train
from embedder.training_methods import RERANK
from embedder.training_work import open_work
from errors import UsageError

log = logging.getLogger("simsearch.train")

# --search KEY -> (TrainConfig field, value type)
SEARCH_KEYS: dict[str, tuple[str, type]] = {
    "lr": ("lr", float),
    "epochs": ("epochs", int),
    "batch": ("batch_size", int),
    "batch_size": ("batch_size", int),
    "seed": ("seed", int),
    "pooling": ("pooling", str),
    "max_seq_length": ("max_seq_length", int),
    "warmup": ("warmup_ratio", float),
}
RESULTS = "results.jsonl"


@dataclass(frozen=True)
class RunPlan:
    """How many runs make the output: `seeds` runs (seed, seed+1, ...) with an optional soup, or a `search` grid."""

    seeds: int = 1
    average: bool = False
    search: str | None = None  # 'lr=1e-5,3e-5 epochs=2,4 batch=32,64'
    trials: int | None = None  # a random subset of the grid of this size (seeded by the config's seed)


def check_plan(config: TrainConfig, plan: RunPlan) -> None:
    """Reject plans that cannot work before any run starts."""
    if plan.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {plan.seeds}")
    if plan.average and plan.seeds < 2:
        raise UsageError("--average needs --seeds 2 or more (it averages the runs' weights)")
    if plan.trials is not None and plan.search is None:
        raise UsageError("--trials needs --search (it picks that many settings from the grid)")
    if plan.trials is not None and plan.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {plan.trials}")
    if plan.search is not None and plan.seeds > 1:
        raise UsageError("--search and --seeds cannot be combined: search with one seed, then train the chosen setting with --seeds")
    if (plan.seeds > 1 or plan.search is not None) and config.dev is None:
        raise UsageError(f"{'--search' if plan.search else '--seeds'} needs --dev: runs are compared on dev, never on test")


def run_plan(config: TrainConfig, plan: RunPlan) -> TrainResult:
    """Train what `plan` asks for and write the chosen model to `config.output`."""
    if config.method == RERANK:
        if plan != RunPlan():
            raise UsageError("--seeds, --average, --search and --trials are not options of train rerank (yet): train one run")
        return train_reranker(config)
    check_plan(config, plan)
    if plan.search is not None:
        return search(config, plan.search, plan.trials)
    if plan.seeds > 1:
        return train_seeds(config, plan.seeds, plan.average)
    return train(config)


def dev_score(model: SentenceTransformer, dev: StsData) -> float:
    """Dev Spearman of the model's cosines: the one number runs are compared by."""
    return sts_measure(model, dev).full


def read_record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / TRAINING_JSON).read_text(encoding="utf-8"))


def finish(config: TrainConfig, model: SentenceTransformer, record: dict[str, Any], work: Path) -> TrainResult:
    """Write the chosen model and its record to the output atomically, then drop the work folder."""
    with atomic_folder(config.output, config.overwrite) as out:
        model.save(str(out))
        (out / TRAINING_JSON).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    remove_own(work)
    log.info(f"saved {config.output}; dev Spearman {record['final_dev_spearman'] * 100:.2f}")
    return TrainResult(config.output, model, record)


# --- seeds and the model soup -------------------------------------------------------------------


def average_weights(models: list[SentenceTransformer]) -> SentenceTransformer:
    """A copy of the first model with every floating-point weight replaced by the mean over `models` (same architecture)."""
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        raise UsageError("cannot average models with different architectures")
    mean = {
        name: torch.stack([s[name] for s in states]).mean(dim=0) if value.is_floating_point() else value
        for name, value in states[0].items()
    }
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(mean)
    return soup


def finished_run(folder: Path) -> SentenceTransformer | None:
    """The model a resumed command finished in `folder`, or None when it is missing or damaged (a killed save): then it is trained again."""
    if not (folder / TRAINING_JSON).is_file():
        return None
    try:
        read_record(folder)
        return load_model(str(folder))
    except (UsageError, ValueError) as exc:  # ValueError: a damaged training.json (json.JSONDecodeError)
        log.warning(f"{folder} is damaged ({str(exc).splitlines()[0]}); training it again")
        return None


def train_seeds(config: TrainConfig, seeds: int, average: bool) -> TrainResult:
    """Train `seeds` runs (config.seed, +1, ...); keep the best by dev, or their weight average if it beats every run on dev."""
    check_config(config)
    dev = load_dev(config.dev)
    work = open_work(config, {"seeds": seeds, "average": average})
    folders, models = [], []
    for seed in range(config.seed, config.seed + seeds):
        folder = work / f"seed-{seed}"
        model = finished_run(folder)
        if model is None:
            train(replace(config, seed=seed, output=folder, overwrite=True))
            model = load_model(str(folder))
        folders.append(folder)
        models.append(model)
    runs = [{"seed": read_record(f)["seed"], "dev_spearman": dev_score(m, dev)} for f, m in zip(folders, models)]
    best = max(range(seeds), key=lambda i: runs[i]["dev_spearman"])
    record = {**read_record(folders[best]), "runs": runs, "soup": None, "chosen": f"seed {runs[best]['seed']}"}
    record["final_dev_spearman"] = runs[best]["dev_spearman"]
    chosen = models[best]
    if average:
        soup = average_weights(models)
        soup_dev = dev_score(soup, dev)
        kept = soup_dev > runs[best]["dev_spearman"]
        record["soup"] = {"seeds": [r["seed"] for r in runs], "dev_spearman": soup_dev, "kept": kept}
        if kept:
            chosen, record["chosen"], record["final_dev_spearman"], record["seed"] = soup, "soup", soup_dev, None
    log.info("dev Spearman by run: " + ", ".join(f"seed {r['seed']} {r['dev_spearman'] * 100:.2f}" for r in runs)
             + (f", soup {record['soup']['dev_spearman'] * 100:.2f}" if record["soup"] else "") + f"; kept {record['chosen']}")
    return finish(config, chosen, record, work)


# --- hyperparameter search ----------------------------------------------------------------------


def _value(key: str, text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"--search {key}: {text!r} is not a{'n' if kind is int else ''} {kind.__name__}") from None


def parse_grid(spec: str) -> list[dict[str, Any]]:
    """'lr=1e-5,3e-5 epochs=2,4' → every combination as {TrainConfig field: value}, in the order written."""
    axes: dict[str, list[Any]] = {}
    for token in spec.split():
        key, sep, values = token.partition("=")
        if not sep or not values:
            raise UsageError(f"--search {token!r}: expected KEY=V1,V2,... (keys: {', '.join(SEARCH_KEYS)})")
        if key not in SEARCH_KEYS:
            raise UsageError(f"--search: unknown setting {key!r} (expected one of {', '.join(SEARCH_KEYS)})")
        field, kind = SEARCH_KEYS[key]
        if field in axes:
            raise UsageError(f"--search: {key!r} is given twice")
        axes[field] = [_value(key, v, kind) for v in values.split(",")]
    if not axes:
        raise UsageError("--search is empty: give settings like 'lr=1e-5,3e-5 epochs=2,4'")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def pick_trials(grid: list[dict[str, Any]], trials: int | None, seed: int) -> list[dict[str, Any]]:
    """The whole grid, or `trials` settings drawn from it by `seed` (kept in grid order, so a rerun draws the same)."""
    if trials is None or trials >= len(grid):
        return grid
    return [grid[i] for i in sorted(random.Random(seed).sample(range(len(grid)), trials))]


def trial_name(settings: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())


def _done(results: Path) -> dict[str, dict[str, Any]]:
    """Finished trials by name, from the results file (a torn last line from a crash is ignored)."""
    done = {}
    if results.is_file():
        for line in results.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["trial"]] = row
    return done


def _append(results: Path, row: dict[str, Any]) -> None:
    with open(results, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def search_table(rows: list[dict[str, Any]]) -> str:
    """The trials, best dev first, as a markdown table."""
    fields = list(rows[0]["settings"])
    lines = ["| " + " | ".join([*fields, "dev Spearman", "train s"]) + " |", "|" + "---|" * (len(fields) + 2)]
    for row in sorted(rows, key=lambda r: -r["dev_spearman"]):
        cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in row["settings"].values()]
        lines.append("| " + " | ".join([*cells, f"{row['dev_spearman'] * 100:.2f}", f"{row['train_time_s']:.0f}"]) + " |")
    return "\n".join(lines)


def search(config: TrainConfig, spec: str, trials: int | None = None) -> TrainResult:
    """Train every chosen grid setting, score each on dev, and write the best; finished trials are skipped on a rerun.

    Only the best model so far is kept on disk (`best/` in the work folder) beside the results file.
    """
    grid = {trial_name(s): s for s in pick_trials(parse_grid(spec), trials, config.seed)}
    configs = {name: replace(config, **settings) for name, settings in grid.items()}
    for trial in configs.values():
        check_config(trial)  # every setting is valid before the first trial starts
    load_dev(config.dev)  # and so is the dev file; each trial's train() scores its chosen checkpoint on it
    work = open_work(config, {"search": spec, "trials": trials})
    results, best = work / RESULTS, work / "best"
    done = _done(results)
    for name, trial in configs.items():
        if name in done:
            continue
        log.info(f"trial {len(done) + 1}/{len(configs)}: {name}")
        result = train(replace(trial, output=work / "trial", overwrite=True))
        score = result.final_dev_spearman
        if not best.is_dir() or score > read_record(best)["final_dev_spearman"]:
            result.record.update(final_dev_spearman=score, trial=name)
            (result.output / TRAINING_JSON).write_text(json.dumps(result.record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            swap_into_place(result.output, best)
        else:
            shutil.rmtree(result.output)
        done[name] = {"trial": name, "settings": grid[name], "dev_spearman": score, "train_time_s": result.record["train_time_s"]}
        _append(results, done[name])
    rows = [done[name] for name in configs]
    log.info("search on dev:\n" + search_table(rows))
    record = read_record(best)
    record["search"] = {"spec": spec, "trials": rows, "chosen": record.pop("trial")}
    return finish(config, load_model(str(best)), record, work)
