"""Benchmark: int8 activation scales per token (onnx-int8 since #30) against one scale per batch tensor (`quantize_dynamic`) and fp32.

The model's cached fp32 ONNX export is quantized both ways into `--cache`; each graph runs in
one ONNX Runtime session (the backend's own settings), in alternating rounds over the same
sentences, and only `encode` is timed. Also printed: how far a sentence's vector moves between
being encoded alone and inside a batch of 64 (0 means batch-independent).

    flock /tmp/simsearch-bench.lock .venv/bin/python benchmarks/int8_scales.py ../shared/data/stsb-en/stsbenchmark.tsv.gz --limit 1000 --rounds 9
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

import paths  # noqa: I001  (puts the repository root on sys.path)
from common.sts_data import load_sts
from embedder.backends import load_encoder
from embedder.model_files import default_model_path
from embedder.onnx_cache import FILES, onnx_cache
from embedder.onnx_encoder import OnnxEncoder, make_session
from embedder.onnx_quantize import quantize_int8


def per_tensor(source: Path, target: Path) -> None:
    """onnx-int8 before #30: onnxruntime's dynamic quantization, one activation scale per input tensor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)
    quantize_dynamic(source, target, per_channel=True, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)


def graphs(template: OnnxEncoder, work: Path) -> dict[str, Path]:
    """{name: ONNX file}: the bundled model's cached fp32 export, and it quantized per tensor and per token into `work`."""
    spec = template.pipeline.transformer
    fp32 = onnx_cache(default_model_path(), spec.folder, spec.all_layers) / FILES["onnx"]
    made = {"fp32": fp32, "per-tensor int8": work / "per_tensor.onnx", "per-token int8": work / "per_token.onnx"}
    per_tensor(fp32, made["per-tensor int8"])
    quantize_int8(fp32, made["per-token int8"])
    return made


def main(args: argparse.Namespace) -> None:
    every = load_sts(args.data, split=None)
    texts = list(dict.fromkeys(every.sentences1 + every.sentences2))[: args.limit]
    work = paths.cache_dir(args.cache, "int8-scales")
    template = load_encoder(None, backend="onnx")
    encoders = {name: OnnxEncoder(name, None, "onnx-int8", template.pipeline, make_session(path), template.tokenizer) for name, path in graphs(template, work).items()}
    speeds: dict[str, list[float]] = {name: [] for name in encoders}
    for round_number in range(args.rounds):
        names = list(encoders) if round_number % 2 == 0 else list(encoders)[::-1]
        for name in names:
            encoders[name].encode(texts[:64])  # warm-up
            started = time.perf_counter()
            encoders[name].encode(texts, 64)
            speeds[name].append(len(texts) / (time.perf_counter() - started))
    reference = float(np.median(speeds["per-tensor int8"]))
    print(f"{len(texts)} sentences, batch 64, {args.rounds} alternating rounds, medians")
    print("| graph | sentences/s | × per-tensor | max abs(alone − in a batch of 64) |\n|---|---:|---:|---:|")
    for name, encoder in encoders.items():
        alone = np.stack([encoder.encode([text])[0] for text in texts[:64]])
        moved = float(np.abs(alone - encoder.encode(texts[:64], 64)).max())
        print(f"| {name} | {np.median(speeds[name]):.0f} | {np.median(speeds[name]) / reference:.2f} | {moved:.1e} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="STS-B file (e.g. ../shared/data/stsb-en/stsbenchmark.tsv.gz)")
    parser.add_argument("--limit", type=int, default=1000, help="time the first N distinct sentences")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds per graph")
    paths.add_path_options(parser)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
