"""Fine-tune an encoder with CoSENT or SimCSE on sentence-transformers' trainer, keeping the best dev checkpoint.

This module is configuration, data and evaluation around `SentenceTransformerTrainer`:
the losses (CoSENTLoss, MultipleNegativesRankingLoss), batch samplers, optimizer,
schedule and checkpointing are the library's. The output folder is a plain
sentence-transformers model plus `training.json`, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer, WeightedLayerPooling
from transformers import PrinterCallback, TrainerCallback

from embedder.loading import load_model
from embedder.model_files import model_reference
from embedder.pooling import POOLINGS, make_pooling
from embedder.training_data import TrainingData, check_pairs, read_training_data
from embedder.training_methods import METHOD_DEFAULTS, METHODS
from errors import UsageError
from common.sts_data import StsData, load_sts
from common.atomic import atomic_folder, check_target

log = logging.getLogger("simsearch.train")

TRAINING_JSON = "training.json"
LOSS_SCALE = 20.0  # CoSENT's scale; for SimCSE the in-batch softmax scale, i.e. temperature 1/20 = 0.05
DEV_NAME = "dev"
DEV_METRIC = f"eval_{DEV_NAME}_spearman_cosine"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; recorded in training.json."""

    method: str
    train: Path
    output: Path
    dev: Path | None = None
    base: str | None = None  # None: the bundled default model
    epochs: int | None = None  # None: METHOD_DEFAULTS[method]
    batch_size: int | None = None
    lr: float | None = None
    max_seq_length: int | None = None  # None: the base model's
    pooling: str | None = None  # None: keep the base model's pooling
    seed: int = 42
    eval_steps: int | None = None  # None: evaluate on dev once per epoch
    max_score: float | None = None  # cosent: divide scores by this; None: by the data's maximum
    warmup_ratio: float = 0.1
    overwrite: bool = False
    show_progress: bool | None = None  # None: only on a terminal


@dataclass
class TrainResult:
    """What a run produced: the saved model (also in memory), and the training.json record."""

    output: Path
    model: SentenceTransformer
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def final_dev_spearman(self) -> float | None:
        return self.record["final_dev_spearman"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that decide the numbers, for the record."""
    names = ("simsearch", "torch", "transformers", "sentence-transformers", "datasets", "accelerate", "numpy")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_config(config: TrainConfig) -> None:
    """Reject impossible settings before reading any data."""
    if config.method not in METHODS:
        raise UsageError(f"unknown training method {config.method!r} (expected one of {', '.join(METHODS)})")
    if config.pooling is not None and config.pooling not in POOLINGS:
        raise UsageError(f"unknown pooling {config.pooling!r} (expected one of {', '.join(POOLINGS)})")
    for name in ("epochs", "batch_size", "max_seq_length", "eval_steps"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if config.lr is not None and not config.lr > 0:
        raise UsageError(f"--lr must be positive, got {config.lr}")
    if config.eval_steps is not None and config.dev is None:
        raise UsageError("--eval-steps needs --dev (the data to evaluate on)")
    for path in (config.train, config.dev):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    check_target(config.output, config.overwrite)


def with_method_defaults(config: TrainConfig) -> TrainConfig:
    """`config` with the method's default for each of epochs, batch size and lr left unset."""
    defaults = METHOD_DEFAULTS[config.method]
    return replace(
        config,
        epochs=config.epochs or defaults.epochs,
        batch_size=config.batch_size or defaults.batch_size,
        lr=config.lr or defaults.lr,
    )


def load_dev(path: Path) -> StsData:
    """Dev pairs (the dev split of a file with a split column), checked like training pairs."""
    data = load_sts(path, "dev")
    check_pairs(data, path)
    return data


def build_model(config: TrainConfig) -> SentenceTransformer:
    """The base model, with the requested max sequence length and pooling (modules after pooling are kept)."""
    model = load_model(config.base)
    if config.max_seq_length is not None:
        model.max_seq_length = config.max_seq_length
    if config.pooling is None:
        return model
    modules = list(model)
    transformer = modules[0]
    if not isinstance(transformer, Transformer):
        raise UsageError(f"--pooling needs a base model that starts with a transformer, {config.base!r} starts with {type(transformer).__name__}")
    rest = [m for m in modules[1:] if not isinstance(m, (Pooling, WeightedLayerPooling))]
    return SentenceTransformer(modules=[transformer, *make_pooling(config.pooling, transformer), *rest], device=str(model.device))


def make_loss(method: str, model: SentenceTransformer) -> torch.nn.Module:
    """CoSENT for scored pairs; for both SimCSE variants, in-batch-negatives softmax at temperature 0.05."""
    if method == "cosent":
        return CoSENTLoss(model, scale=LOSS_SCALE)
    return MultipleNegativesRankingLoss(model, scale=LOSS_SCALE)


def mixed_precision() -> str:
    """bf16 on CUDA devices that support it, else fp16 on CUDA; full precision on CPU."""
    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def training_arguments(config: TrainConfig, checkpoints: Path, precision: str, has_dev: bool) -> SentenceTransformerTrainingArguments:
    """The trainer settings: schedule, seed, precision, and dev evaluation that keeps only the best checkpoint."""
    show = sys.stderr.isatty() if config.show_progress is None else config.show_progress
    evaluation: dict[str, Any] = {"eval_strategy": "no", "save_strategy": "no"}
    if has_dev:
        evaluation = {
            "eval_strategy": "steps" if config.eval_steps else "epoch",
            "eval_steps": config.eval_steps,
            "eval_on_start": True,  # the base model's dev score: step 0 of the curve
            "save_strategy": "best",
            "metric_for_best_model": DEV_METRIC,
            "greater_is_better": True,
            "load_best_model_at_end": True,
            "save_only_model": True,
            "save_total_limit": 1,
        }
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a fraction of all steps (transformers 5)
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        batch_sampler=BatchSamplers.BATCH_SAMPLER if config.method == "cosent" else BatchSamplers.NO_DUPLICATES,
        logging_steps=0.05,
        logging_first_step=True,
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not show,
        **evaluation,
    )


class DevCurve(TrainerCallback):
    """Collects (step, epoch, dev Spearman) at every evaluation and logs each as a table row."""

    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and DEV_METRIC in metrics:
            point = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "spearman": float(metrics[DEV_METRIC])}
            self.points.append(point)
            log.info(f"dev Spearman at step {point['step']} (epoch {point['epoch']:.2f}): {point['spearman'] * 100:.2f}")


def dev_table(curve: list[dict[str, float]], best_step: int | None) -> str:
    """The step vs dev Spearman table, best row marked."""
    rows = [f"{'step':>7}  {'epoch':>6}  dev Spearman"]
    for point in curve:
        mark = "  (base model, not a candidate)" if point["step"] == 0 else "  <- best (saved)" if point["step"] == best_step else ""
        rows.append(f"{point['step']:>7}  {point['epoch']:>6.2f}  {point['spearman'] * 100:>12.2f}{mark}")
    return "\n".join(rows)


def _name(option: Any) -> str:
    """An enum option's plain value ('no_duplicates', not 'BatchSamplers.NO_DUPLICATES')."""
    return str(getattr(option, "value", option))


def run_record(config: TrainConfig, data: TrainingData, dev: StsData | None, trainer: SentenceTransformerTrainer, curve: DevCurve, precision: str) -> dict[str, Any]:
    """The training.json content (without wall times)."""
    state = trainer.state
    trained = [p for p in curve.points if p["step"] > 0]
    best_step = state.best_global_step if dev is not None else None
    losses = [{"step": e["step"], "loss": e["loss"]} for e in state.log_history if "loss" in e]
    return {
        "format_version": 1,
        "method": config.method,
        "base": model_reference(config.base),
        "data": {
            "train": {"path": str(config.train.resolve()), "sha256": file_sha256(config.train), "rows": len(data), **data.stats},
            "dev": None if dev is None else {"path": str(config.dev.resolve()), "sha256": file_sha256(config.dev), "pairs": len(dev), "name": dev.name},
        },
        "hyperparameters": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "warmup_ratio": config.warmup_ratio,
            "max_seq_length": trainer.model.max_seq_length,
            "pooling": config.pooling or "base model's",
            "max_score": data.stats.get("max_score"),
            "eval_steps": config.eval_steps,
            "loss": f"{type(trainer.loss).__name__}(scale={LOSS_SCALE:g})",
            "batch_sampler": _name(trainer.args.batch_sampler),
            "precision": precision,
            "optimizer": _name(trainer.args.optim),
            "scheduler": _name(trainer.args.lr_scheduler_type),
        },
        "seed": config.seed,
        "steps": state.global_step,
        "dev_curve": curve.points,
        "best_step": best_step,
        "base_dev_spearman": curve.points[0]["spearman"] if curve.points and curve.points[0]["step"] == 0 else None,
        "final_dev_spearman": max(p["spearman"] for p in trained) if trained else None,
        "train_loss": losses,
        "device": str(trainer.model.device),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train(config: TrainConfig) -> TrainResult:
    """Validate the inputs, train, and write the best model (by dev Spearman, else the last) to `config.output`."""
    from datasets import Dataset

    started = time.perf_counter()
    check_config(config)
    config = with_method_defaults(config)
    data = read_training_data(config.method, config.train, config.max_score)
    dev = load_dev(config.dev) if config.dev is not None else None
    log.info(f"{config.method}: {len(data)} training rows from {config.train}" + (f", {len(dev)} dev pairs from {config.dev}" if dev else ""))
    model = build_model(config)
    precision = mixed_precision()
    evaluator = None
    if dev is not None:
        evaluator = EmbeddingSimilarityEvaluator(dev.sentences1, dev.sentences2, dev.scores.tolist(), batch_size=64, name=DEV_NAME, write_csv=False)
    curve = DevCurve()
    with atomic_folder(config.output, config.overwrite) as work:
        checkpoints = work / "checkpoints"
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_arguments(config, checkpoints, precision, dev is not None),
            train_dataset=Dataset.from_dict(data.columns),
            loss=make_loss(config.method, model),
            evaluator=evaluator,
            callbacks=[curve],
        )
        trainer.remove_callback(PrinterCallback)  # raw log dicts; the dev table below says what matters
        train_started = time.perf_counter()
        trainer.train()
        train_time = time.perf_counter() - train_started
        shutil.rmtree(checkpoints, ignore_errors=True)
        trainer.model.save(str(work))
        record = run_record(config, data, dev, trainer, curve, precision)
        record["train_time_s"] = round(train_time, 2)
        record["wall_time_s"] = round(time.perf_counter() - started, 2)
        (work / TRAINING_JSON).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if curve.points:
        log.info("dev Spearman by step:\n" + dev_table(curve.points, record["best_step"]))
    log.info(f"saved {config.output} in {record['wall_time_s']:.0f} s" + (f"; dev Spearman {record['final_dev_spearman'] * 100:.2f}" if record["final_dev_spearman"] is not None else ""))
    return TrainResult(config.output, trainer.model, record)

