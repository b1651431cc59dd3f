"""Build a retrieval benchmark from the shared STS data: corpus, queries and qrels.

English (`en`): corpus = every distinct STS-B (all splits) and SICK (train + trial) sentence.
Chinese (`zh`): corpus = every distinct Chinese STS-B sentence (train, valid, test).
Queries: distinct test sentence1 of pairs scored ≥ 4.0; relevant: their sentence2.
A query's own text is left out of the corpus (it would trivially rank first),
unless it is itself relevant to some query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.sts_data import StsData, load_sts
from common.atomic import atomic_folder

STSB = Path("stsb-en/stsbenchmark.tsv.gz")
SICK = (Path("sick/SICK_train.txt"), Path("sick/SICK_trial.txt"))
STSB_ZH = {split: Path(f"stsb-zh/STS-B.{split}.data") for split in ("train", "valid", "test")}
LANGUAGES = ("en", "zh")
MIN_SCORE = 4.0


@dataclass(frozen=True)
class RetrievalSet:
    """Documents (id → text), queries (qid → text) and binary judgements (qid → {doc id})."""

    corpus: dict[int, str]
    queries: dict[str, str]
    qrels: dict[str, set[int]]


def build_stsb_retrieval(data_dir: Path, min_score: float = MIN_SCORE, lang: str = "en") -> RetrievalSet:
    """Assemble the benchmark from the STS files under `data_dir`: English STS-B and SICK (`en`) or Chinese STS-B (`zh`)."""
    if lang == "zh":
        sets = {split: load_sts(data_dir / path, None) for split, path in STSB_ZH.items()}
    else:
        sets = {split: load_sts(data_dir / STSB, split) for split in ("train", "dev", "test")}
        sets |= {str(path): load_sts(data_dir / path, None) for path in SICK}
    return retrieval_set([s for data in sets.values() for s in data.sentences1 + data.sentences2], sets["test"], min_score)


def retrieval_set(sentences: list[str], test: StsData, min_score: float) -> RetrievalSet:
    """Every distinct sentence as a document; each test sentence1 of a pair scored ≥ min_score as a query, its sentence2 relevant."""
    relevant: dict[str, list[str]] = {}
    for s1, s2, score in zip(test.sentences1, test.sentences2, test.scores):
        if score >= min_score and s1 != s2:
            relevant.setdefault(s1, []).append(s2)
    targets = {s for docs in relevant.values() for s in docs}
    kept = [s for s in dict.fromkeys(sentences) if s not in relevant or s in targets]
    doc_id = {s: i for i, s in enumerate(kept, start=1)}
    queries = {f"q{n}": s for n, s in enumerate(relevant, start=1)}
    qrels = {qid: {doc_id[s] for s in relevant[text]} for qid, text in queries.items()}
    return RetrievalSet({i: s for s, i in doc_id.items()}, queries, qrels)


def write_retrieval_set(data: RetrievalSet, out: Path, overwrite: bool = False) -> None:
    """Write corpus.jsonl, queries.tsv and qrels.tsv (TSV: qid, docid, relevance) atomically."""
    with atomic_folder(out, overwrite) as work:
        with open(work / "corpus.jsonl", "w", encoding="utf-8") as handle:
            for doc_id, text in data.corpus.items():
                handle.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        with open(work / "queries.tsv", "w", encoding="utf-8") as handle:
            handle.write("qid\ttext\n")
            handle.writelines(f"{qid}\t{text}\n" for qid, text in data.queries.items())
        with open(work / "qrels.tsv", "w", encoding="utf-8") as handle:
            handle.write("qid\tdocid\trelevance\n")
            handle.writelines(f"{qid}\t{doc}\t1\n" for qid, docs in data.qrels.items() for doc in sorted(docs))
