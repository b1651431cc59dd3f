"""Train a cross-encoder re-ranker from scored pairs on sentence-transformers' CrossEncoderTrainer, keeping the best dev checkpoint.

The data are the pairs `train cosent` reads (embedder.training_data.cosent_pairs: scores
divided by --max-score, or 0/1 labels); the loss, schedule and checkpointing are the
library's. The base is a cross-encoder folder (trained further) or a bi-encoder, whose
transformer gets a new one-label head (by default the bundled all-MiniLM-L6-v2). The output
is a plain `CrossEncoder` folder plus `training.json`, written atomically. Checkpoints (with
the optimizer's state) wait in `.OUT.work/` beside it, so `--resume` continues an interrupted run.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.atomic import atomic_folder, remove_own
from common.hashing import sha256_of
from common.progress import wants_progress
from common.sts_data import StsData
from embedder.model_files import TRAINING_RECORD, model_reference, resolve_model
from embedder.training import (
    DevCurve, TrainConfig, TrainResult, check_config, dev_table, load_dev, mixed_precision, run_outcome, with_method_defaults,
)
from embedder.training_data import TrainingData, TrainSet, cosent_pairs, parse_train_spec
from embedder.training_methods import RERANK, RERANK_LOSSES
from embedder.training_work import open_work
from errors import UsageError

log = logging.getLogger("simsearch.train")

DEV_NAME = "dev"
DEV_METRIC = f"eval_{DEV_NAME}_spearman"


def check_rerank_config(config: TrainConfig) -> None:
    """`train rerank` takes one scored-pair set and none of the bi-encoder options; the rest is checked as for `train cosent`."""
    given = [flag for flag, value in (("--pooling", config.pooling), ("--matryoshka", config.matryoshka), ("--sampler", config.sampler != "proportional")) if value]
    if given:
        raise UsageError(f"{', '.join(given)}: not an option of train rerank (a cross-encoder scores the pair, it has no sentence vectors)")
    if config.loss is not None and config.loss not in RERANK_LOSSES:
        raise UsageError(f"unknown --loss {config.loss!r} for train rerank (expected one of {', '.join(RERANK_LOSSES)})")
    rerank_set(config)
    check_config(replace(config, method="cosent", loss=None, resume=False))  # the same checks on numbers, files and the target as train cosent


def rerank_set(config: TrainConfig) -> TrainSet:
    """The one --train FILE[:SPLIT] of scored pairs that train rerank reads, parsed as train cosent parses its sets."""
    specs = [config.train] if isinstance(config.train, (str, Path)) else list(config.train)
    if len(specs) != 1 or "@" in str(specs[0]):
        raise UsageError("train rerank reads one --train FILE[:SPLIT] of scored pairs (no @METHOD)")
    return parse_train_spec(specs[0], "cosent")


def build_cross_encoder(base: str | None, max_length: int | None):
    """The model to train: a cross-encoder folder as it is, or a bi-encoder's transformer with a new one-label head."""
    from sentence_transformers.cross_encoder import CrossEncoder

    from embedder.loading import pick_device, quiet_load

    target = resolve_model(base)
    with quiet_load(base, "base model"):
        return CrossEncoder(target, num_labels=1, max_length=max_length, device=pick_device(None), local_files_only=Path(target).exists())


def make_rerank_loss(name: str, model):
    """The pair-score loss `--loss` names, from sentence-transformers."""
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MSELoss

    return BinaryCrossEntropyLoss(model) if name == "bce" else MSELoss(model)


def dev_evaluator(dev: StsData):
    """sentence-transformers' correlation evaluator on the dev pairs (Spearman picks the checkpoint kept)."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderCorrelationEvaluator

    return CrossEncoderCorrelationEvaluator(list(zip(dev.sentences1, dev.sentences2)), dev.scores.tolist(), name=DEV_NAME, write_csv=False)


def training_arguments(config: TrainConfig, checkpoints: Path, precision: str, has_dev: bool, resumed: bool):
    """The trainer settings: schedule, seed, precision, a checkpoint at each dev evaluation (or epoch) to resume from,
    and with dev the best checkpoint kept (beside the last) and loaded at the end."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    evaluation: dict[str, Any] = {"eval_strategy": "no", "save_strategy": "epoch", "save_total_limit": 1}
    if has_dev:
        strategy = "steps" if config.eval_steps else "epoch"
        evaluation = {
            "eval_strategy": strategy, "eval_steps": config.eval_steps, "eval_on_start": not resumed,
            "save_strategy": strategy, "save_steps": config.eval_steps, "metric_for_best_model": DEV_METRIC, "greater_is_better": True,
            "load_best_model_at_end": True, "save_total_limit": 2,
        }
    return CrossEncoderTrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr, warmup_steps=config.warmup_ratio, seed=config.seed, data_seed=config.seed,
        bf16=precision == "bf16", fp16=precision == "fp16", logging_steps=0.05, logging_first_step=True, report_to="none",
        dataloader_pin_memory=False, disable_tqdm=not wants_progress(config.show_progress), **evaluation,
    )


def resume_point(checkpoints: Path, resume: bool) -> str | None:
    """With --resume, the last checkpoint an interrupted run of this command left (None: start afresh); without, a left-over one is discarded."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume:
        log.info(f"resuming from {last}" if last else f"--resume: no checkpoint in {checkpoints}; training from the start")
        return last
    if checkpoints.exists():
        log.info(f"discarding the checkpoints of an interrupted run in {checkpoints} (--resume would continue it)")
        shutil.rmtree(checkpoints)
    return None


def rerank_record(
    config: TrainConfig, train_set: TrainSet, data: TrainingData, dev: StsData | None, trainer, curve: DevCurve, precision: str,
    resumed_from: int | None,
) -> dict[str, Any]:
    """The training.json content (without wall times)."""
    return {
        "format_version": 2,
        "method": RERANK,
        "kind": "cross-encoder",
        "base": model_reference(config.base),
        "data": {
            "train": [{"path": str(train_set.path.resolve()), "split": train_set.split, "sha256": sha256_of(train_set.path), "rows": len(data), **data.stats}],
            "dev": None if dev is None else {"path": str(config.dev.resolve()), "sha256": sha256_of(config.dev), "pairs": len(dev), "name": dev.name},
        },
        "hyperparameters": {
            "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr, "warmup_ratio": config.warmup_ratio,
            "max_length": trainer.model.max_seq_length, "loss": config.loss, "max_score": config.max_score, "eval_steps": config.eval_steps,
            "precision": precision,
        },
        "seed": config.seed,
        "resumed_from_step": resumed_from,
        **run_outcome(trainer, curve, dev is not None),
    }


def train_reranker(config: TrainConfig) -> TrainResult:
    """Validate the inputs, train, and write the best cross-encoder (by dev Spearman, else the last) to `config.output`."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer
    from transformers import PrinterCallback, set_seed

    started = time.perf_counter()
    check_rerank_config(config)
    config = replace(with_method_defaults(config), loss=config.loss or "bce")
    train_set = rerank_set(config)
    data = cosent_pairs(train_set.path, config.max_score, train_set.split)
    dev = load_dev(config.dev) if config.dev is not None else None
    log.info(f"rerank: {len(data)} training pairs from {train_set.path}:{train_set.split}" + (f"; {len(dev)} dev pairs from {config.dev}" if dev else ""))
    set_seed(config.seed)  # a new head is drawn when the model is built, before the trainer seeds itself
    model = build_cross_encoder(config.base, config.max_seq_length)
    precision = mixed_precision()
    curve = DevCurve(DEV_METRIC)
    work = open_work(config, {})
    checkpoints = work / "checkpoints"
    resume_from = resume_point(checkpoints, config.resume)
    trainer = CrossEncoderTrainer(
        model=model,
        args=training_arguments(config, checkpoints, precision, dev is not None, resume_from is not None),
        train_dataset=Dataset.from_dict(data.columns),
        loss=make_rerank_loss(config.loss, model),
        evaluator=dev_evaluator(dev) if dev is not None else None,
        callbacks=[curve],
    )
    trainer.remove_callback(PrinterCallback)
    train_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_time = time.perf_counter() - train_started
    resumed_from = int(Path(resume_from).name.rsplit("-", 1)[1]) if resume_from else None
    with atomic_folder(config.output, config.overwrite) as out:
        trainer.model.save(str(out))
        record = rerank_record(config, train_set, data, dev, trainer, curve, precision, resumed_from)
        record["train_time_s"] = round(train_time, 2)
        record["wall_time_s"] = round(time.perf_counter() - started, 2)
        (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    remove_own(work)
    if curve.points:
        log.info("dev Spearman by step:\n" + dev_table(curve.points, record["best_step"]))
    final = record["final_dev_spearman"]
    log.info(f"saved {config.output} in {record['wall_time_s']:.0f} s" + (f"; dev Spearman {final * 100:.2f}" if final is not None else ""))
    return TrainResult(config.output, trainer.model, record)
