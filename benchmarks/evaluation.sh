#!/usr/bin/env bash
# Evaluation benchmark (issue 6): STS table (STS-B en test, zh test, SICK trial) and
# retrieval table on the STS-B retrieval set, for each LABEL=MODEL given, then a report.
#
#   benchmarks/evaluation.sh OUT_DIR default=default whiten-128=/path/to/model ...
#
# Writes OUT_DIR/results/*.json(l) and per-model scatter plots, and the report
# (tables + plots) to ${REPORT:-docs/evaluation/report.md}. Uses only `simsearch` commands.
set -euo pipefail
S=${SIMSEARCH:-.venv/bin/simsearch}
DATA=${DATA:-../shared/data}
REPORT=${REPORT:-docs/evaluation/report.md}
out=${1:?usage: benchmarks/evaluation.sh OUT_DIR LABEL=MODEL...}; shift
mkdir -p "$out/results"
retrieval="$out/stsb-retrieval"
[ -d "$retrieval" ] || $S eval make-stsb-retrieval -o "$retrieval" --data-dir "$DATA"
for pair in "$@"; do
  label=${pair%%=*}; model=${pair#*=}
  start=$SECONDS
  $S eval sts --model "$model" --json --plot "$out/results/sts-$label.png" \
    --data "$DATA/stsb-en/stsbenchmark.tsv.gz:test" --data "$DATA/stsb-zh/STS-B.test.data" --data "$DATA/sick/SICK_trial.txt" \
    | grep -v '"data": "mean"' | sed "s/^{/{\"label\": \"$label\", /" > "$out/results/sts-$label.jsonl"
  $S index build "$retrieval/corpus.jsonl" -o "$out/index-$label" --model "$model" --overwrite
  $S eval retrieval "$out/index-$label" --queries "$retrieval/queries.tsv" --qrels "$retrieval/qrels.tsv" --json \
    | sed "s/^{/{\"label\": \"$label\", /" > "$out/results/retrieval-$label.json"
  echo "$label: $((SECONDS - start)) s" >&2
done
mkdir -p "$(dirname "$REPORT")"
$S report "$out/results" -o "$REPORT" --title "Evaluation: STS and STS-B retrieval"
cat "$REPORT"
