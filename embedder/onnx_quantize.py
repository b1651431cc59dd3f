"""Int8 quantization of an ONNX graph's weight MatMuls with one activation scale per token, so a vector never depends on its batch.

onnxruntime's `quantize_dynamic` takes one activation scale over the whole input tensor:
every sentence in a batch (and its padding) shares it, so a sentence encoded alone and in a
batch of 64 gave vectors with cosine 0.993 (#30). Here each MatMul `A @ W` whose `W` is a 2-D
float initializer becomes, with A's rows (tokens) flattened to (tokens, K):

    s = max|A| per row / 127                          (one scale per token)
    q = QuantizeLinear(A, s, 128, axis=0)             (uint8, symmetric around 128)
    A @ W ≈ MatMulIntegerToFloat(q, Wq, 1, sw, 128) * s   (Wq int8, one scale sw per output column)

The integer product is exact, so a row's output depends on that row alone. Measured on
all-MiniLM-L6-v2 (2,000 STS-B sentences, batch 64, 2 cores, medians of 5 alternating rounds):
662 sentences/s against 617 for `quantize_dynamic` and 428 for fp32 (the same graph with eight
element-wise ONNX ops in place of QuantizeLinear and the fused MatMulIntegerToFloat: 498);
STS-B test Spearman 81.74 (fp32 82.03, per-tensor 81.73); alone vs batched difference 0
(per-tensor 2.8e-2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INT8_MAX = 127.0
ZERO_POINT = 128  # uint8 activations: round(A / s) in [-127, 127] stored in [1, 255]
TINY_SCALE = 1e-12  # an all-zero row quantizes to zeros instead of dividing by zero
CONTRIB = "com.microsoft"  # onnxruntime's operator domain (MatMulIntegerToFloat)


def quantize_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, float32 scale per output column) with symmetric per-column scales."""
    scales = np.maximum(np.abs(weights).max(axis=0), TINY_SCALE) / INT8_MAX
    return np.clip(np.round(weights / scales), -INT8_MAX, INT8_MAX).astype(np.int8), scales.astype(np.float32)


def weight_initializers(prefix: str, weights: np.ndarray) -> list:
    """The initializers `per_token_matmul(prefix, ...)` reads: int8 weights, their column scales, and the shapes around them."""
    from onnx import numpy_helper

    quantized, scales = quantize_weights(weights.astype(np.float32))
    return [
        numpy_helper.from_array(quantized, f"{prefix}/weights"),
        numpy_helper.from_array(scales, f"{prefix}/scales"),
        numpy_helper.from_array(np.array([-1, weights.shape[0]], np.int64), f"{prefix}/rows_shape"),
        numpy_helper.from_array(np.array([weights.shape[1]], np.int64), f"{prefix}/columns"),
    ]


def per_token_matmul(prefix: str, activations: str, output: str) -> list:
    """The nodes computing `output` ≈ activations @ (the weights under `prefix`) with one int8 scale per activation row."""
    from onnx import helper

    def name(suffix: str) -> str:
        return f"{prefix}/{suffix}"

    return [
        helper.make_node("Shape", [activations], [name("shape")]),
        helper.make_node("Reshape", [activations, name("rows_shape")], [name("rows")]),
        helper.make_node("Abs", [name("rows")], [name("abs")]),
        helper.make_node("ReduceMax", [name("abs")], [name("max")], axes=[1], keepdims=0),
        helper.make_node("Div", [name("max"), "int8q/int8_max"], [name("scale0")]),
        helper.make_node("Max", [name("scale0"), "int8q/tiny"], [name("scale")]),
        helper.make_node("Shape", [name("scale")], [name("count")]),
        helper.make_node("Expand", ["int8q/zero_point", name("count")], [name("zero_points")]),
        helper.make_node("QuantizeLinear", [name("rows"), name("scale"), name("zero_points")], [name("q")], axis=0),
        helper.make_node("MatMulIntegerToFloat", [name("q"), name("weights"), "int8q/one", name("scales"), "int8q/zero_point"], [name("unscaled")], domain=CONTRIB),
        helper.make_node("Unsqueeze", [name("scale"), "int8q/axis1"], [name("column")]),
        helper.make_node("Mul", [name("unscaled"), name("column")], [name("product")]),
        helper.make_node("Slice", [name("shape"), "int8q/start", "int8q/last"], [name("lead")]),
        helper.make_node("Concat", [name("lead"), name("columns")], [name("out_shape")], axis=0),
        helper.make_node("Reshape", [name("product"), name("out_shape")], [output]),
    ]


def quantize_int8(source: Path, target: Path) -> None:
    """Write `source` with every float MatMul against a 2-D initializer quantized per token (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    added = [
        numpy_helper.from_array(np.array(INT8_MAX, np.float32), "int8q/int8_max"),
        numpy_helper.from_array(np.array(TINY_SCALE, np.float32), "int8q/tiny"),
        numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), "int8q/zero_point"),
        numpy_helper.from_array(np.array(1.0, np.float32), "int8q/one"),
        numpy_helper.from_array(np.array([1], np.int64), "int8q/axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "int8q/start"),
        numpy_helper.from_array(np.array([-1], np.int64), "int8q/last"),
    ]
    nodes, replaced = [], set()
    for number, node in enumerate(graph.node):
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        prefix = f"int8q/{number}"
        added += weight_initializers(prefix, numpy_helper.to_array(weight))
        nodes += per_token_matmul(prefix, node.input[0], node.output[0])
        replaced.add(weight.name)
    still_used = {name for node in nodes for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name not in replaced or tensor.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    if replaced and not any(opset.domain == CONTRIB for opset in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB, 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
