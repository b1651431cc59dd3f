"""Reference: CoSENT on STS-B written as a plain sentence-transformers script (no simsearch code).

It follows sentence-transformers' own `training_stsbenchmark.py` example: read the
STS-B train/dev splits, scores / 5, CoSENTLoss (scale 20), dev Spearman evaluator,
keep the best checkpoint. `train_benchmark.py --plain` runs it beside `simsearch
train` with the same hyperparameters and seed; it can also run alone:

    .venv/bin/python benchmarks/train_plain_st.py ../shared/data/stsb-en/stsbenchmark.tsv.gz -o build/plain
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import shutil
import time
from pathlib import Path

from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sentence_transformers.sentence_transformer.losses import CoSENTLoss


def read_split(path: Path, split: str) -> dict[str, list]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(io.StringIO(handle.read()), delimiter="\t", quoting=csv.QUOTE_NONE) if r["split"] == split]
    return {"sentence1": [r["sentence1"] for r in rows], "sentence2": [r["sentence2"] for r in rows], "score": [float(r["score"]) / 5.0 for r in rows]}


def train_plain(stsb: Path, output: Path, base: str, epochs: int, batch_size: int, lr: float, seed: int, eval_steps: int | None, max_seq_length: int | None) -> float:
    """Train, save the best-on-dev model to `output`, and return the wall time in seconds."""
    started = time.perf_counter()
    train, dev = read_split(stsb, "train"), read_split(stsb, "dev")
    model = SentenceTransformer(base, device="cpu")
    if max_seq_length:
        model.max_seq_length = max_seq_length
    evaluator = EmbeddingSimilarityEvaluator(dev["sentence1"], dev["sentence2"], dev["score"], batch_size=64, name="dev", write_csv=False)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=0.1,
        seed=seed,
        data_seed=seed,
        eval_strategy="steps" if eval_steps else "epoch",
        eval_steps=eval_steps,
        eval_on_start=True,
        save_strategy="best",
        metric_for_best_model="eval_dev_spearman_cosine",
        load_best_model_at_end=True,
        save_only_model=True,
        save_total_limit=1,
        logging_steps=0.05,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(train), loss=CoSENTLoss(model, scale=20.0), evaluator=evaluator)
    trainer.train()
    shutil.rmtree(output / "checkpoints", ignore_errors=True)
    model.save(str(output))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stsb", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--base", default="default", help="model folder, hub name or 'default' (the bundled all-MiniLM-L6-v2, no network)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-steps", type=int, default=None)
    parser.add_argument("--max-seq-length", type=int, default=None)
    a = parser.parse_args()
    from embedder.model_files import resolve_model

    seconds = train_plain(a.stsb, a.output, resolve_model(a.base), a.epochs, a.batch_size, a.lr, a.seed, a.eval_steps, a.max_seq_length)
    print(f"saved {a.output} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
