"""Train with `simsearch train` and score base vs trained on held-out STS sets; optionally beside plain sentence-transformers.

Prints one table: model, Spearman x100 on each --test set, train wall time, and
(with --plain, cosent on STS-B only) the same run as a plain sentence-transformers
script with the same loss, hyperparameters and seed. Run it from the checkout under the shared lock:

    S=../shared/data
    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/train_benchmark.py cosent \\
        --train $S/stsb-en/stsbenchmark.tsv.gz --dev $S/stsb-en/stsbenchmark.tsv.gz \\
        --test $S/stsb-en/stsbenchmark.tsv.gz:test --test $S/sick/SICK_trial.txt:test --plain
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import paths  # noqa: F401, I001  (puts the repository root on sys.path)
from common.sts_data import load_sts, parse_data_arg
from embedder.backends import load_encoder
from embedder.model_files import resolve_model
from embedder.training import TrainConfig, train
from eval.sts import evaluate_sts


def test_sets(specs: list[str]) -> list[tuple[str, object]]:
    """'PATH[:SPLIT]' (split default test) -> (label, StsData)."""
    return [(data.name, data) for data in (load_sts(*parse_data_arg(spec, "test")) for spec in specs)]


def scores(model_dir: str | None, sets) -> dict[str, float]:
    encoder = load_encoder(model_dir)
    return {name: round(evaluate_sts(encoder, data).spearman * 100, 2) for name, data in sets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--dev", type=Path)
    parser.add_argument("--test", action="append", required=True, help="PATH[:SPLIT], repeatable; the first is the headline")
    parser.add_argument("--base", default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: the method's (embedder.training_methods)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--pooling", default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-steps", type=int, default=None)
    parser.add_argument("--plain", action="store_true", help="also train with benchmarks/train_plain_st.py (cosent, STS-B .tsv.gz only)")
    parser.add_argument("--skip-base", action="store_true", help="do not score the base model")
    parser.add_argument("--save-model", type=Path, default=None, help="copy our trained model folder here")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("simsearch.train").setLevel(logging.INFO)

    sets = test_sets(args.test)
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    rows: list[dict] = []
    if not args.skip_base:
        rows.append({"model": "base", **scores(args.base, sets), "train_s": None})

    config = TrainConfig(
        args.method, args.train, work / "ours", dev=args.dev, base=args.base, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        max_seq_length=args.max_seq_length, pooling=args.pooling, seed=args.seed, eval_steps=args.eval_steps,
    )
    cpu = time.process_time()
    result = train(config)
    cpu = time.process_time() - cpu
    ours = {"model": "simsearch train", **scores(str(result.output), sets), "train_s": result.record["wall_time_s"], "cpu_s": round(cpu, 1), "dev": result.final_dev_spearman}
    rows.append(ours)
    if args.save_model:
        shutil.copytree(result.output, args.save_model, dirs_exist_ok=True)

    hp = result.record["hyperparameters"]  # as run: the method's defaults filled in
    if args.plain:
        from train_plain_st import train_plain

        base = resolve_model(args.base)
        cpu = time.process_time()
        seconds = train_plain(args.train, work / "plain", base, hp["epochs"], hp["batch_size"], hp["lr"], args.seed, args.eval_steps, args.max_seq_length)
        cpu = time.process_time() - cpu
        rows.append({"model": "plain sentence-transformers", **scores(str(work / "plain"), sets), "train_s": round(seconds, 2), "cpu_s": round(cpu, 1)})

    names = [name for name, _ in sets]
    print(f"\n{args.method} on {args.train.name}: epochs {hp['epochs']}, batch {hp['batch_size']}, lr {hp['lr']:g}, "
          f"max_seq_length {hp['max_seq_length']}, pooling {hp['pooling']}, seed {args.seed}")
    print("| model | " + " | ".join(f"{n} Spearman" for n in names) + " | train wall s | train CPU s |")
    print("|---|" + "---|" * (len(names) + 2))
    for row in rows:
        print(f"| {row['model']} | " + " | ".join(f"{row[n]:.2f}" for n in names) + f" | {row['train_s'] or '-'} | {row.get('cpu_s') or '-'} |")
    if not args.skip_base:
        print("trained - base: " + ", ".join(f"{n} {ours[n] - rows[0][n]:+.2f}" for n in names))
    if args.plain:
        plain = rows[-1]
        print(f"ours - plain on {names[0]}: {ours[names[0]] - plain[names[0]]:+.2f}; ours / plain: wall time {ours['train_s'] / plain['train_s']:.3f}, "
              f"CPU time {ours['cpu_s'] / plain['cpu_s']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "training": result.record}, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")
