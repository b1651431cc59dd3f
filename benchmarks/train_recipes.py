"""The training-recipe table (issue 16): each recipe run as a `simsearch` command, then scored on STS-B dev/test and SICK trial.

Recipes: the base model; plain CoSENT; AnglE; CoSENT + SICK (multi-dataset: its NLI triplets with
MNRL, or its relatedness scores with CoSENT);
CoSENT with Matryoshka dims cut to 384/128/64 beside whitening-128, JL-128 and plain
truncation-128 of the plain CoSENT model; a 3-seed soup; the best of a hyperparameter search.
Every choice (checkpoints, soup, search) is made on STS-B dev; STS-B test and SICK trial are
only scored here. Each row is written to OUT_DIR/rows/NAME.json when done, and finished rows
are skipped on a rerun (the multi-run commands also resume inside themselves), so an
interrupted run continues. --smoke runs every recipe on a few dozen rows with 1 epoch, to
check the script end to end in a few minutes; its numbers mean nothing.

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/train_recipes.py build/train-recipes
    .venv/bin/python benchmarks/train_recipes.py build/train-recipes-smoke --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import paths  # noqa: I001  (puts the repository root on sys.path)
from common.sts_data import StsData, load_sts
from embedder.loading import load_model
from embedder.training_runs import dev_score

DATA = paths.DATA
STSB = DATA / "stsb-en" / "stsbenchmark.tsv.gz"
SICK_TRAIN = DATA / "sick" / "SICK_train.txt"
SICK_TRIAL = DATA / "sick" / "SICK_trial.txt"
TRAINED = ("cosent", "angle", "cosent-sick", "cosent-sick-scored", "matryoshka", "soup", "search")  # the rows the best recipe is chosen from


@dataclass(frozen=True)
class Inputs:
    """The files one benchmark run uses: the real sets, or small subsets of them for --smoke."""

    stsb: Path
    sick_train: Path
    sick_trial: Path
    fit: Path  # distinct STS-B train sentences, unlabeled: the whitening fit corpus


@dataclass(frozen=True)
class Recipe:
    """One table row: a `simsearch` command (None: the base model as is) and the model folder it scores."""

    name: str
    label: str
    command: list[str] | None
    model: str


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def fit_corpus(stsb: Path, out: Path) -> Path:
    """The distinct sentences of STS-B train, one per line."""
    train = load_sts(stsb, "train")
    return write_lines(out, list(dict.fromkeys(train.sentences1 + train.sentences2)))


def smoke_inputs(folder: Path) -> Inputs:
    """Subsets: 64 STS-B train, 40 dev and 40 test pairs; SICK train's first 600 pairs; SICK trial's first 40."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["s1\ts2\tscore\tsplit"]
    for split, n in (("train", 64), ("dev", 40), ("test", 40)):
        data = load_sts(STSB, split)
        rows += [f"{a}\t{b}\t{s:g}\t{split}" for a, b, s in list(zip(data.sentences1, data.sentences2, data.scores))[:n]]
    stsb = write_lines(folder / "stsb.tsv", rows)
    sick_train = write_lines(folder / "SICK_train.txt", SICK_TRAIN.read_text(encoding="utf-8").splitlines()[:601])
    sick_trial = write_lines(folder / "SICK_trial.txt", SICK_TRIAL.read_text(encoding="utf-8").splitlines()[:41])
    return Inputs(stsb, sick_train, sick_trial, fit_corpus(stsb, folder / "fit.txt"))


def recipes(inputs: Inputs, models: Path, smoke: bool) -> list[Recipe]:
    """The issue's rows, in table order."""
    stsb, m = str(inputs.stsb), lambda name: str(models / name)
    quick = ["--epochs", "1", "--batch-size", "16"] if smoke else []
    small, tiny = (64, 32) if smoke else (128, 64)
    dims = f"384,{small},{tiny}" if smoke else "384,256,128,64"
    grid = "lr=5e-5,1e-4 epochs=1" if smoke else "lr=3e-5,1e-4 epochs=4 batch=16,32"

    def train(name: str, method: str, *options: str) -> list[str]:
        return ["train", method, "--train", stsb, "--dev", stsb, *options, *quick, "-o", m(name)]

    return [
        Recipe("base", "base all-MiniLM-L6-v2", None, "default"),
        Recipe("cosent", "CoSENT", train("cosent", "cosent"), m("cosent")),
        Recipe("angle", "AnglE", train("angle", "angle"), m("angle")),
        Recipe("cosent-sick", "CoSENT + SICK NLI triplets (MNRL)", train("cosent-sick", "cosent", "--train", f"{inputs.sick_train}@simcse-sup"), m("cosent-sick")),
        Recipe("cosent-sick-scored", "CoSENT + SICK relatedness scores (CoSENT)", train("cosent-sick-scored", "cosent", "--train", f"{inputs.sick_train}@cosent"), m("cosent-sick-scored")),
        Recipe("matryoshka", "CoSENT + Matryoshka, 384 dims", train("matryoshka", "cosent", "--matryoshka", dims), m("matryoshka")),
        Recipe(f"matryoshka-{small}", f"CoSENT + Matryoshka, truncated to {small}", ["reduce", "truncate", m("matryoshka"), "--dim", str(small), "-o", m(f"matryoshka-{small}")], m(f"matryoshka-{small}")),
        Recipe(f"matryoshka-{tiny}", f"CoSENT + Matryoshka, truncated to {tiny}", ["reduce", "truncate", m("matryoshka"), "--dim", str(tiny), "-o", m(f"matryoshka-{tiny}")], m(f"matryoshka-{tiny}")),
        Recipe(f"cosent-whiten-{small}", f"CoSENT, whitening to {small}", ["reduce", "whiten", m("cosent"), "--fit", str(inputs.fit), "--dim", str(small), "-o", m(f"cosent-whiten-{small}")], m(f"cosent-whiten-{small}")),
        Recipe(f"cosent-jl-{small}", f"CoSENT, JL to {small} (seed 0)", ["reduce", "jl", m("cosent"), "--dim", str(small), "-o", m(f"cosent-jl-{small}")], m(f"cosent-jl-{small}")),
        Recipe(f"cosent-truncate-{small}", f"CoSENT, truncated to {small} (no Matryoshka)", ["reduce", "truncate", m("cosent"), "--dim", str(small), "-o", m(f"cosent-truncate-{small}")], m(f"cosent-truncate-{small}")),
        Recipe("soup", "CoSENT, 3 seeds, weight average if it wins on dev", train("soup", "cosent", "--seeds", "3", "--average"), m("soup")),
        Recipe("search", "CoSENT, best of the search on dev", train("search", "cosent", "--search", grid, *(["--trials", "3"] if not smoke else [])), m("search")),
    ]


def shown(command: list[str], out_dir: Path) -> str:
    """The command as the table shows it: `simsearch ...`, data under ../shared/data, models under $OUT."""
    text = "simsearch " + shlex.join(command)
    return text.replace(str(DATA), "../shared/data").replace(str(out_dir.resolve()), "$OUT")


def run_command(command: list[str]) -> float:
    """Run `python -m cli COMMAND` from the checkout and return its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": str(paths.ROOT)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *command], cwd=paths.ROOT, env=env, check=True)
    return time.perf_counter() - started


def score_sets(inputs: Inputs) -> dict[str, StsData]:
    return {"STS-B dev": load_sts(inputs.stsb, "dev"), "STS-B test": load_sts(inputs.stsb, "test"), "SICK trial": load_sts(inputs.sick_trial, "test")}


def run_recipe(recipe: Recipe, sets: dict[str, StsData], out_dir: Path) -> dict:
    """Run the recipe's command (if any), score its model on every set (Spearman × 100), and return the row."""
    wall = run_command(recipe.command) if recipe.command else None
    model = load_model(recipe.model)
    row = {"name": recipe.name, "label": recipe.label, "command": shown(recipe.command, out_dir) if recipe.command else "-", "wall_s": wall}
    row.update({name: round(dev_score(model, data) * 100, 2) for name, data in sets.items()})
    record = Path(recipe.model) / "training.json"
    if record.is_file():
        training = json.loads(record.read_text(encoding="utf-8"))
        row["training"] = {k: training.get(k) for k in ("runs", "soup", "chosen", "dev_by_dim", "hyperparameters")}
        row["training"]["search"] = training.get("search")
    return row


def table(rows: list[dict]) -> str:
    lines = ["| recipe | STS-B dev | STS-B test | SICK trial | wall s | command |", "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        wall = "-" if row["wall_s"] is None else f"{row['wall_s']:,.0f}"
        lines.append(f"| {row['label']} | {row['STS-B dev']:.2f} | {row['STS-B test']:.2f} | {row['SICK trial']:.2f} | {wall} | `{row['command']}` |")
    return "\n".join(lines)


def goals(rows: dict[str, dict], small: int) -> list[str]:
    """The issue's goals, each with the numbers that decide it."""
    best = max((rows[name] for name in TRAINED), key=lambda r: r["STS-B dev"])
    lines = [f"best recipe on dev: {best['label']}: STS-B test {best['STS-B test']:.2f} (goal >= 88.0), SICK trial {best['SICK trial']:.2f} (goal >= base {rows['base']['SICK trial']:.2f})"]
    full, cut = rows["matryoshka"]["STS-B test"], rows[f"matryoshka-{small}"]["STS-B test"]
    lines.append(
        f"Matryoshka-{small} keeps {cut / full:.2%} of its full-dim STS-B test (goal >= 99.5%); vs whitening-{small} "
        f"{rows[f'cosent-whiten-{small}']['STS-B test']:.2f}, JL-{small} {rows[f'cosent-jl-{small}']['STS-B test']:.2f}: {cut:.2f}"
    )
    soup = rows["soup"]["training"]
    single = max(r["dev_spearman"] for r in soup["runs"])
    lines.append(f"soup dev {soup['soup']['dev_spearman'] * 100:.2f} vs best single seed {single * 100:.2f} (kept: {soup['chosen']})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny subsets and 1 epoch: checks the script, measures nothing")
    parser.add_argument("--only", default=None, help="comma-separated recipe names (default: all)")
    args = parser.parse_args()
    out_dir = args.out_dir.resolve()
    (out_dir / "rows").mkdir(parents=True, exist_ok=True)
    inputs = smoke_inputs(out_dir / "data") if args.smoke else Inputs(STSB, SICK_TRAIN, SICK_TRIAL, out_dir / "data" / "fit.txt")
    if not args.smoke and not inputs.fit.is_file():
        (out_dir / "data").mkdir(exist_ok=True)
        fit_corpus(STSB, inputs.fit)
    sets = score_sets(inputs)
    chosen = recipes(inputs, out_dir / "models", args.smoke)
    wanted = set(args.only.split(",")) if args.only else {r.name for r in chosen}
    rows = {}
    for recipe in chosen:
        path = out_dir / "rows" / f"{recipe.name}.json"
        if recipe.name in wanted and not path.is_file():
            print(f"== {recipe.name}", flush=True)
            path.write_text(json.dumps(run_recipe(recipe, sets, out_dir), indent=2) + "\n", encoding="utf-8")
        if path.is_file():
            rows[recipe.name] = json.loads(path.read_text(encoding="utf-8"))
    print(table(list(rows.values())))
    if len(rows) == len(chosen):
        print("\n".join(goals(rows, 64 if args.smoke else 128)))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")
