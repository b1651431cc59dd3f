"""Fine-tune an encoder with CoSENT, AnglE or SimCSE on sentence-transformers' trainer, keeping the best dev checkpoint.

This module is configuration, data and evaluation around `SentenceTransformerTrainer`:
the losses (embedder.training_losses), batch samplers, multi-dataset samplers, optimizer,
schedule and checkpointing are the library's. Several training sets, each with its own
method, train together as the trainer's dict of datasets and dict of losses. The output
folder is a plain sentence-transformers model plus `training.json`, written atomically.
"""

from __future__ import annotations

import itertools
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import torch
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer, WeightedLayerPooling
from transformers import PrinterCallback, TrainerCallback

from common.atomic import atomic_folder, check_target
from common.hashing import sha256_of
from common.progress import wants_progress
from common.sts_data import StsData, load_sts
from embedder.dim_choice import sts_measure
from embedder.loading import embedding_dim, load_model
from embedder.model_files import TRAINING_RECORD, model_reference
from embedder.pooling import POOLINGS, make_pooling
from embedder.reduction import truncation_map
from embedder.training_data import TrainingData, TrainSet, check_pairs, parse_train_spec, read_training_data
from embedder.training_losses import describe_loss, make_loss
from embedder.training_methods import IN_BATCH_METHODS, METHOD_DEFAULTS, METHODS, SAMPLERS, SCORED_METHODS
from errors import UsageError

log = logging.getLogger("simsearch.train")

TRAINING_JSON = TRAINING_RECORD
DEV_NAME = "dev"
DEV_METRIC = f"eval_{DEV_NAME}_spearman_cosine"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; recorded in training.json."""

    method: str  # the method of every --train set that names none
    train: Path | str | Sequence[str | Path]  # one or more FILE[:SPLIT][@METHOD]
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
    sampler: str = "proportional"  # how batches are drawn from several --train sets
    matryoshka: tuple[int, ...] = ()  # train these output dims too (MatryoshkaLoss); () : only the full dim
    loss: str | None = None  # train rerank: bce or mse (None: bce); the bi-encoder methods have their own
    overwrite: bool = False
    show_progress: bool | None = None  # None: only on a terminal
    resume: bool = False  # train rerank: continue from the last checkpoint an interrupted run of the same command left in .OUT.work/


@dataclass
class TrainResult:
    """What a run produced: the saved model (also in memory), and the training.json record."""

    output: Path
    model: SentenceTransformer
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def final_dev_spearman(self) -> float | None:
        return self.record["final_dev_spearman"]


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


def train_sets(config: TrainConfig) -> list[TrainSet]:
    """The --train sets of `config`, each parsed and checked (a set naming no method gets `config.method`)."""
    specs = [config.train] if isinstance(config.train, (str, Path)) else list(config.train)
    if not specs:
        raise UsageError("give at least one --train FILE")
    return [parse_train_spec(spec, config.method) for spec in specs]


def parse_dims(text: str) -> tuple[int, ...]:
    """`--matryoshka 384,256,128` → (384, 256, 128), checked: whole numbers from 1 up, no repeats."""
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--matryoshka {text!r}: expected comma-separated whole numbers, e.g. 384,256,128,64") from None
    if any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise UsageError(f"--matryoshka {text!r}: dims must be distinct and at least 1")
    return dims


def check_config(config: TrainConfig) -> None:
    """Reject impossible settings before reading any data."""
    if config.method not in METHODS:
        raise UsageError(f"unknown training method {config.method!r} (expected one of {', '.join(METHODS)})")
    if config.sampler not in SAMPLERS:
        raise UsageError(f"unknown --sampler {config.sampler!r} (expected one of {', '.join(SAMPLERS)})")
    if any(d < 1 for d in config.matryoshka) or len(set(config.matryoshka)) != len(config.matryoshka):
        raise UsageError(f"--matryoshka dims must be distinct and at least 1, got {list(config.matryoshka)}")
    if config.loss is not None:
        raise UsageError(f"--loss applies to train rerank; {config.method} trains with its own loss")
    if config.resume:
        raise UsageError(f"--resume applies to train rerank; {config.method} with --seeds or --search resumes when run again")
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
    if config.dev is not None and not config.dev.is_file():
        raise UsageError(f"{config.dev}: no such file")
    sets = train_sets(config)
    if config.max_score is not None and not any(s.method in SCORED_METHODS for s in sets):
        raise UsageError(f"--max-score only applies to {' and '.join(SCORED_METHODS)} sets")
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


def check_dims(dims: Sequence[int], model: SentenceTransformer) -> None:
    """Matryoshka dims must fit in the model's output (checked once the base model is loaded, before training)."""
    full = embedding_dim(model)
    if too_big := [d for d in dims if d > full]:
        raise UsageError(f"--matryoshka {too_big[0]} is larger than the base model's embedding dimension ({full})")


def read_sets(sets: Sequence[TrainSet], max_score: float | None) -> list[TrainingData]:
    """Every set's rows, read and checked in full before any model is loaded (--max-score goes to scored-pair sets)."""
    return [read_training_data(s.method, s.path, max_score if s.method in SCORED_METHODS else None, s.split) for s in sets]


def set_names(sets: Sequence[TrainSet]) -> list[str]:
    """Distinct dataset names for the trainer's dict of datasets (which become module names, so no dots): 'N-FILENAME_EXT'."""
    return [f"{i}-{s.path.name.replace('.', '_')}" for i, s in enumerate(sets)]


def training_datasets(names: Sequence[str], data: Sequence[TrainingData]):
    """The trainer's train_dataset: one `datasets.Dataset`, or a dict of them by name for several sets."""
    from datasets import Dataset

    if len(data) == 1:
        return Dataset.from_dict(data[0].columns)
    return {name: Dataset.from_dict(d.columns) for name, d in zip(names, data)}


def widget_examples(data: TrainingData) -> list[dict]:
    """The model card's example from the first training texts; set here, sentence-transformers would sample 1,000 rows behind a stray stderr bar."""
    rows = zip(*(column for column in data.columns.values() if column and isinstance(column[0], str)))
    texts = list(dict.fromkeys(text for row in itertools.islice(rows, 8) for text in row))[:4]
    return [{"source_sentence": texts[0], "sentences": texts[1:]}] if len(texts) > 1 else []


def mixed_precision() -> str:
    """bf16 on CUDA devices that support it, else fp16 on CUDA; full precision on CPU."""
    if not torch.cuda.is_available():
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def training_arguments(
    config: TrainConfig, sets: Sequence[TrainSet], checkpoints: Path, precision: str, has_dev: bool
) -> SentenceTransformerTrainingArguments:
    """The trainer settings: schedule, seed, precision, samplers, and dev evaluation that keeps only the best checkpoint.

    Batches hold no repeated text when any set has an in-batch-negatives objective (a repeat would be a false negative).
    """
    show = wants_progress(config.show_progress)
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
        batch_sampler=BatchSamplers.NO_DUPLICATES if any(s.method in IN_BATCH_METHODS for s in sets) else BatchSamplers.BATCH_SAMPLER,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.ROUND_ROBIN if config.sampler == "round-robin" else MultiDatasetBatchSamplers.PROPORTIONAL,
        logging_steps=0.05,
        logging_first_step=True,
        report_to="none",
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not show,
        **evaluation,
    )


class StsDevEvaluator(BaseEvaluator):
    """Dev Spearman for the trainer's checkpoint choice, by the project's one STS measure (the number `eval sts` prints)."""

    def __init__(self, data: StsData, name: str = DEV_NAME) -> None:
        super().__init__()
        self.data, self.name = data, name
        self.primary_metric = "spearman_cosine"

    def __call__(self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        metrics = self.prefix_name_to_metrics({"spearman_cosine": sts_measure(model, self.data).full}, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


class DevCurve(TrainerCallback):
    """Collects (step, epoch, dev Spearman) at every evaluation and logs each as a table row."""

    def __init__(self, metric: str = DEV_METRIC) -> None:
        self.points: list[dict[str, float]] = []
        self.metric = metric  # the trainer's name of the dev Spearman

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run starts from the evaluations its checkpoint's state logged (none for a fresh run)."""
        self.points = [self.point(e["step"], e.get("epoch"), e[self.metric]) for e in state.log_history if self.metric in e]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and self.metric in metrics:
            point = self.point(state.global_step, state.epoch, metrics[self.metric])
            self.points.append(point)
            log.info(f"dev Spearman at step {point['step']} (epoch {point['epoch']:.2f}): {point['spearman'] * 100:.2f}")

    @staticmethod
    def point(step: int, epoch: float | None, spearman: float) -> dict[str, float]:
        return {"step": step, "epoch": round(epoch or 0.0, 4), "spearman": float(spearman)}


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


def set_record(train_set: TrainSet, name: str, data: TrainingData, loss: torch.nn.Module) -> dict[str, Any]:
    """One training set as training.json lists it: where it came from, what trained on it, how many rows."""
    return {
        "name": name,
        "path": str(train_set.path.resolve()),
        "split": train_set.split,
        "method": train_set.method,
        "loss": describe_loss(loss),
        "sha256": sha256_of(train_set.path),
        "rows": len(data),
        **data.stats,
    }


def dev_by_dim(model: SentenceTransformer, dev: StsData, dims: Sequence[int]) -> dict[str, float]:
    """Dev Spearman of the model's output truncated to each dim (then normalized), the full dim included."""
    measure = sts_measure(model, dev)
    full = embedding_dim(model)
    return {str(d): measure(truncation_map(full, d)) if d < full else measure.full for d in sorted({*dims, full}, reverse=True)}


def run_record(
    config: TrainConfig, sets: list[dict[str, Any]], dev: StsData | None, trainer: SentenceTransformerTrainer, curve: DevCurve, precision: str
) -> dict[str, Any]:
    """The training.json content (without wall times)."""
    return {
        "format_version": 2,
        "method": config.method,
        "base": model_reference(config.base),
        "data": {
            "train": sets,
            "dev": None if dev is None else {"path": str(config.dev.resolve()), "sha256": sha256_of(config.dev), "pairs": len(dev), "name": dev.name},
        },
        "hyperparameters": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "warmup_ratio": config.warmup_ratio,
            "max_seq_length": trainer.model.max_seq_length,
            "pooling": config.pooling or "base model's",
            "max_score": config.max_score,
            "eval_steps": config.eval_steps,
            "matryoshka_dims": list(config.matryoshka) or None,
            "batch_sampler": _name(trainer.args.batch_sampler),
            "multi_dataset_sampler": config.sampler if len(sets) > 1 else None,
            "precision": precision,
            "optimizer": _name(trainer.args.optim),
            "scheduler": _name(trainer.args.lr_scheduler_type),
        },
        "seed": config.seed,
        **run_outcome(trainer, curve, dev is not None),
    }


def run_outcome(trainer: Any, curve: DevCurve, has_dev: bool) -> dict[str, Any]:
    """What a finished trainer run records in training.json, for encoders and re-rankers alike: steps, dev curve, losses, where and when."""
    state = trainer.state
    trained = [p for p in curve.points if p["step"] > 0]
    return {
        "steps": state.global_step,
        "dev_curve": curve.points,
        "best_step": state.best_global_step if has_dev else None,
        "base_dev_spearman": curve.points[0]["spearman"] if curve.points and curve.points[0]["step"] == 0 else None,
        "final_dev_spearman": max(p["spearman"] for p in trained) if trained else None,
        "train_loss": [{"step": e["step"], "loss": e["loss"]} for e in state.log_history if "loss" in e],
        "device": str(trainer.model.device),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def train(config: TrainConfig) -> TrainResult:
    """Validate the inputs, train, and write the best model (by dev Spearman, else the last) to `config.output`."""
    started = time.perf_counter()
    check_config(config)
    config = with_method_defaults(config)
    sets = train_sets(config)
    data = read_sets(sets, config.max_score)
    dev = load_dev(config.dev) if config.dev is not None else None
    for train_set, rows in zip(sets, data):
        log.info(f"{train_set.method}: {len(rows)} training rows from {train_set.spec}")
    if dev:
        log.info(f"{len(dev)} dev pairs from {config.dev}")
    model = build_model(config)
    check_dims(config.matryoshka, model)
    names = set_names(sets)
    losses = [make_loss(s.method, model, config.matryoshka) for s in sets]
    precision = mixed_precision()
    evaluator = None
    if dev is not None:
        evaluator = StsDevEvaluator(dev)
    curve = DevCurve()
    model.model_card_data.widget = widget_examples(data[0])
    with atomic_folder(config.output, config.overwrite) as work:
        checkpoints = work / "checkpoints"
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_arguments(config, sets, checkpoints, precision, dev is not None),
            train_dataset=training_datasets(names, data),
            loss=losses[0] if len(sets) == 1 else dict(zip(names, losses)),
            evaluator=evaluator,
            callbacks=[curve],
        )
        trainer.remove_callback(PrinterCallback)  # raw log dicts; the dev table below says what matters
        train_started = time.perf_counter()
        trainer.train()
        train_time = time.perf_counter() - train_started
        shutil.rmtree(checkpoints, ignore_errors=True)
        trainer.model.save(str(work))
        record = run_record(config, [set_record(*parts) for parts in zip(sets, names, data, losses)], dev, trainer, curve, precision)
        if config.matryoshka and dev is not None:
            record["dev_by_dim"] = dev_by_dim(trainer.model, dev, config.matryoshka)
        record["train_time_s"] = round(train_time, 2)
        record["wall_time_s"] = round(time.perf_counter() - started, 2)
        (work / TRAINING_JSON).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if curve.points:
        log.info("dev Spearman by step:\n" + dev_table(curve.points, record["best_step"]))
    log.info(f"saved {config.output} in {record['wall_time_s']:.0f} s" + (f"; dev Spearman {record['final_dev_spearman'] * 100:.2f}" if record["final_dev_spearman"] is not None else ""))
    return TrainResult(config.output, trainer.model, record)

