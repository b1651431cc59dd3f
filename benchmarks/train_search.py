"""CoSENT hyperparameter search on STS-B: one `train_benchmark.py` run per setting, then a table ranked by dev.

Each setting trains all-MiniLM-L6-v2 on STS-B train, keeps the best STS-B dev checkpoint,
and scores STS-B test and SICK trial (never trained on). Results go to OUT_DIR/NAME.json;
settings whose JSON already exists are not re-run, so an interrupted search resumes.
Select on dev, report test: the table is sorted by dev Spearman.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/train_search.py build/train-search
    .venv/bin/python benchmarks/train_search.py build/train-search --table-only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import paths

STSB = Path("stsb-en/stsbenchmark.tsv.gz")  # under --data-dir
SICK = Path("sick/SICK_trial.txt")

# name -> train_benchmark.py options; the pooling/max-seq-length/epoch variants are taken around
# the best lr/batch found (lr 5e-5, batch 32, 2 epochs).
SETTINGS: dict[str, list[str]] = {
    "lr5e-5-b32-2ep": ["--epochs", "2", "--batch-size", "32", "--lr", "5e-5"],
    "lr1e-4-b32-2ep": ["--epochs", "2", "--batch-size", "32", "--lr", "1e-4"],
    "lr5e-5-b16-2ep": ["--epochs", "2", "--batch-size", "16", "--lr", "5e-5"],
    "lr1e-4-b64-2ep": ["--epochs", "2", "--batch-size", "64", "--lr", "1e-4"],
    "lr5e-5-b32-4ep": ["--epochs", "4", "--batch-size", "32", "--lr", "5e-5"],
    "lr5e-5-b32-2ep-len64": ["--epochs", "2", "--batch-size", "32", "--lr", "5e-5", "--max-seq-length", "64"],
    "lr5e-5-b32-2ep-first-last-avg": ["--epochs", "2", "--batch-size", "32", "--lr", "5e-5", "--pooling", "first-last-avg"],
    "lr5e-5-b32-2ep-cls": ["--epochs", "2", "--batch-size", "32", "--lr", "5e-5", "--pooling", "cls"],
    # a second seed for the default, the best by dev and 4 epochs: how much of the differences above
    # is seed noise; and the two best changes (first-last-avg, 4 epochs) together
    "lr5e-5-b32-2ep-seed1": ["--epochs", "2", "--batch-size", "32", "--lr", "5e-5", "--seed", "1"],
    "lr5e-5-b32-2ep-first-last-avg-seed1": ["--epochs", "2", "--batch-size", "32", "--lr", "5e-5", "--pooling", "first-last-avg", "--seed", "1"],
    "lr5e-5-b32-4ep-seed1": ["--epochs", "4", "--batch-size", "32", "--lr", "5e-5", "--seed", "1"],
    "lr5e-5-b32-4ep-first-last-avg": ["--epochs", "4", "--batch-size", "32", "--lr", "5e-5", "--pooling", "first-last-avg"],
}


def run_setting(name: str, options: list[str], out_dir: Path, data: Path) -> None:
    """Train and score one setting with train_benchmark.py, writing OUT_DIR/NAME.json."""
    stsb, sick = data / STSB, data / SICK
    command = [
        sys.executable, "-u", str(Path(__file__).with_name("train_benchmark.py")), "cosent",
        "--train", str(stsb), "--dev", str(stsb), "--test", f"{stsb}:test", "--test", f"{sick}:test",
        "--skip-base", "--json", str(out_dir / f"{name}.json"), *options,
    ]
    print(f"== {name}: {' '.join(options)}", flush=True)
    subprocess.run(command, check=True)


def table(out_dir: Path) -> str:
    """Markdown table of every NAME.json in out_dir, best dev first."""
    rows = []
    for path in sorted(out_dir.glob("*.json")):
        result = json.loads(path.read_text())
        ours = result["rows"][0]
        hp = {**result["training"]["hyperparameters"], "seed": result["training"]["seed"]}
        rows.append((ours["dev"] * 100, path.stem, hp, ours))
    lines = [
        "| setting | lr | batch | epochs | max_seq_length | pooling | seed | STS-B dev | STS-B test | SICK trial | train wall s |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for dev, name, hp, ours in sorted(rows, key=lambda row: -row[0]):
        test, sick = ours[f"{STSB.name}:test"], ours[SICK.name]
        lines.append(
            f"| {name} | {hp['lr']:g} | {hp['batch_size']} | {hp['epochs']} | {hp['max_seq_length']} | {hp['pooling']} | {hp['seed']} "
            f"| {dev:.2f} | {test:.2f} | {sick:.2f} | {ours['train_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--only", default=None, help="comma-separated setting names (default: all)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the results already in OUT_DIR")
    parser.add_argument("--data-dir", type=Path, default=paths.DATA, help="the shared data sets (default: ../shared/data beside the checkout)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        wanted = args.only.split(",") if args.only else list(SETTINGS)
        for name in wanted:
            if not (args.out_dir / f"{name}.json").exists():
                run_setting(name, SETTINGS[name], args.out_dir, args.data_dir)
    print(table(args.out_dir))


if __name__ == "__main__":
    main()
