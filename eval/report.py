"""Gather JSON results (from `eval ... --json` and benchmark scripts) into markdown tables and plots.

Each record is a flat JSON object. Its kind comes from a `kind` field, or is
recognised from its keys: STS results carry `spearman`, retrieval results
`mrr@10`, ANN results `ann_recall`. Known kinds get a purpose-made table (and a
plot where one helps); any other kind is shown as a plain table of its fields.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_file
from common.corpus import json_object
from errors import DataError, UsageError
from eval.tables import format_table

RETRIEVAL_METRICS = ("recall@1", "recall@5", "recall@10", "recall@100", "mrr@10", "ndcg@10", "map@100")


@dataclass(frozen=True)
class Record:
    """One result row and the file it came from."""

    kind: str
    fields: dict[str, Any]
    source: Path


def infer_kind(fields: dict[str, Any]) -> str:
    if "kind" in fields:
        return str(fields["kind"])
    if "rows" in fields and "model_dim" in fields:
        return "reduction-sweep"
    if "mrr@10" in fields:
        return "retrieval"
    if "ann_recall" in fields:
        return "ann"
    if "spearman" in fields and "data" in fields:
        return "sts"
    return "other"


def _objects(path: Path) -> Iterable[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        yield from ((1, v) for v in values)
    elif path.suffix == ".json":
        yield 1, json_object(text, str(path))
    else:
        yield from ((n, json_object(line, f"{path}:{n}")) for n, line in enumerate(text.splitlines(), start=1) if line.strip())


def result_files(inputs: Sequence[Path]) -> list[Path]:
    """JSON/JSONL files named directly or found under the given folders, in a stable order."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix in (".json", ".jsonl"))
        elif item.is_file():
            files.append(item)
        else:
            raise UsageError(f"{item}: no such file or folder")
    return files


def load_records(inputs: Sequence[Path]) -> list[Record]:
    records = []
    for path in result_files(inputs):
        for lineno, value in _objects(path):
            if not isinstance(value, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per result")
            records.append(Record(infer_kind(value), value, path))
    if not records:
        raise DataError(f"no results found in {', '.join(map(str, inputs))}")
    return records


def _label(fields: dict[str, Any]) -> str:
    """How a row is named: an explicit label, else the index folder or model."""
    for key in ("label", "index", "model"):
        if key in fields:
            value = str(fields[key])
            return Path(value).name  # folder or model name, not the whole path
    return "?"


def sts_section(records: Sequence[Record]) -> str:
    """Spearman ×100 (Pearson in brackets), one row per model, one column per data set."""
    sets = list(dict.fromkeys(_sts_column(r.fields) for r in records))
    table: dict[str, dict[str, str]] = {}
    for r in records:
        table.setdefault(_label(r.fields), {})[_sts_column(r.fields)] = f"{r.fields['spearman'] * 100:.2f} ({r.fields['pearson'] * 100:.2f})"
    rows = [(label, *(cells.get(s, "") for s in sets)) for label, cells in table.items()]
    return "Spearman × 100 (Pearson × 100) of cosine similarity.\n\n" + format_table(("model", *sets), rows, markdown=True)


def _sts_column(fields: dict[str, Any]) -> str:
    """A data set's column heading: file name, plus `:split` when one was applied."""
    name = Path(str(fields["data"])).name
    return f"{name}:{fields['split']}" if fields.get("split") else name


def retrieval_section(records: Sequence[Record]) -> str:
    present = [m for m in RETRIEVAL_METRICS if any(m in r.fields for r in records)]
    rows = [(_label(r.fields), r.fields.get("queries", ""), *(r.fields.get(m, float("nan")) for m in present)) for r in records]
    return format_table(("index / model", "queries", *present), [(a, b, *(f"{v:.4f}" for v in rest)) for a, b, *rest in rows], markdown=True)


def generic_section(records: Sequence[Record]) -> str:
    keys = list(dict.fromkeys(k for r in records for k in r.fields if k != "kind"))
    rows = [tuple(_plain(r.fields.get(k, "")) for k in keys) for r in records]
    return format_table(keys, rows, markdown=True)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def sweep_section(records: Sequence[Record]) -> str:
    """Each `reduce sweep --json` result: per method and dim, each measure as mean ± std."""
    tables = []
    for r in records:
        rows = r.fields["rows"]
        names = [k for k, v in rows[0].items() if isinstance(v, dict)]
        cells = [(row["method"], row["dim"], *(f"{row[n]['mean']:.4f} ± {row[n]['std']:.4f}" for n in names)) for row in rows]
        tables.append(f"`{r.source.name}` ({r.fields.get('documents', '?')} fit sentences):\n\n" + format_table(("method", "dim", *names), cells, markdown=True))
    return "\n\n".join(tables)


def index_bench_section(records: Sequence[Record]) -> str:
    """Each index type `benchmarks/index_engine.py --json` measured: build time, size, QPS at k=10, recall@10."""
    rows = [(f["dataset"], f["type"], f"{f['build_s']:.1f}", f"{f['bytes_per_vector']:,.0f}", f"{f['qps_batch']:,.0f}",
             f"{f['qps_single']:,.0f}", f"{f['recall@10']:.3f}", f.get("note", "")) for f in (r.fields for r in records)]
    headers = ("data", "index", "build s", "bytes/vector", "QPS batch", "QPS one at a time", "recall@10", "notes")
    return format_table(headers, rows, markdown=True)


SECTIONS = {
    "sts": ("STS", sts_section),
    "retrieval": ("Retrieval", retrieval_section),
    "reduction-sweep": ("Dimension sweep", sweep_section),
    "index-bench": ("Index types", index_bench_section),
}


def render_report(records: Sequence[Record], images: Sequence[str] = (), title: str = "Results") -> str:
    """Markdown: one section per kind of result, then the images (paths relative to the report)."""
    parts = [f"# {title}"]
    for kind in dict.fromkeys(r.kind for r in records):
        group = [r for r in records if r.kind == kind]
        heading, render = SECTIONS.get(kind, (kind, generic_section))
        sources = ", ".join(dict.fromkeys(f"`{r.source.name}`" for r in group))
        parts.append(f"## {heading}\n\nFrom {sources}.\n\n{render(group)}")
    if images:
        parts.append("## Plots\n\n" + "\n\n".join(f"![{Path(i).stem}]({i})" for i in images))
    return "\n\n".join(parts) + "\n"


def write_report(inputs: Sequence[Path], out: Path, title: str = "Results") -> list[Path]:
    """Write the markdown report to `out` and copy PNGs found among the inputs next to it; return the PNGs."""
    records = load_records(inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for folder in (p for p in inputs if p.is_dir()):
        for png in sorted(folder.rglob("*.png")):
            target = out.parent / png.name
            if png.resolve() != target.resolve():
                shutil.copyfile(png, target)
            images.append(target)
    images += plot_records(records, out.parent, out.stem)
    with atomic_file(out) as handle:
        handle.write(render_report(records, [p.name for p in images], title).encode("utf-8"))
    return images


def plot_records(records: Sequence[Record], folder: Path, stem: str) -> list[Path]:
    """Plots for kinds that have a natural picture: dimension sweeps and recall vs QPS (matplotlib is imported only for them)."""
    sweeps = [r for r in records if r.kind == "reduction-sweep"]
    bench = [r.fields for r in records if r.kind == "index-bench"]
    if not sweeps and not bench:
        return []
    from eval.plots import plot_recall_vs_qps, plot_sweep

    written = []
    for n, record in enumerate(sweeps):
        written.append(plot_sweep(record.fields["rows"], folder / f"{stem}-dims{n or ''}.png", record.source.stem))
    if bench:
        written.append(plot_recall_vs_qps(bench, folder / f"{stem}-recall-qps.png"))
    return written
