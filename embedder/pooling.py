"""Pooling heads by name, including first-last-avg, built so that the saved folder loads with plain ST.

sentence-transformers 6 refuses to import a module class outside its own package
from a model folder unless the caller passes `trust_remote_code=True`. So
first-last-avg is composed from two stock modules instead of a class of ours:
`WeightedLayerPooling` over layers 1..L with fixed weights (1 on the first
transformer layer, 1 on the last, 0 elsewhere) gives per-token (h_1 + h_L) / 2,
and `Pooling("mean")` takes its masked mean over tokens. Because the mean is
linear this is exactly the mean of the first layer's and the last layer's masked
token means. `hidden_states[1]` is the first transformer layer's output, not the
embedding layer (`hidden_states[0]`).
"""

from __future__ import annotations

import torch
from sentence_transformers.sentence_transformer.modules import Module, Pooling, Transformer, WeightedLayerPooling

from embedder.training_methods import POOLINGS


def first_last_avg_pooling(transformer: Transformer) -> list[Module]:
    """Modules that turn `transformer`'s outputs into the first-last-avg sentence embedding.

    Switches on `output_hidden_states` in the transformer's config (saved with the model) and
    freezes the layer weights so training cannot drift them away from first/last.
    """
    config = transformer.model.config
    config.output_hidden_states = True
    layers = int(config.num_hidden_layers)
    weights = torch.zeros(layers)
    weights[0] = weights[-1] = 1.0
    dim = transformer.get_embedding_dimension()
    layer_mix = WeightedLayerPooling(dim, num_hidden_layers=layers, layer_start=1, layer_weights=torch.nn.Parameter(weights, requires_grad=False))
    return [layer_mix, Pooling(dim, pooling_mode="mean")]


def make_pooling(name: str, transformer: Transformer) -> list[Module]:
    """The pooling modules for a CLI name: 'cls' or 'mean' (stock sentence-transformers) or 'first-last-avg'."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r} (expected one of {', '.join(POOLINGS)})")
    if name == "first-last-avg":
        return first_last_avg_pooling(transformer)
    transformer.model.config.output_hidden_states = False
    return [Pooling(transformer.get_embedding_dimension(), pooling_mode=name)]
