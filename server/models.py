"""Pydantic models of every request and response body (they are also the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError


def utf8_encodable(value: Any) -> Any:
    """Refuse a string that cannot be encoded as UTF-8 (a lone surrogate such as "\\ud800" is valid JSON but no text); in a list, name the item.

    Runs before the field's own type check, so the error names the field itself (not a branch of a union); other values pass on to it.
    """
    for position, text in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                item = f"item {position}: " if isinstance(value, list) else ""
                raise PydanticCustomError("utf8", "{item}cannot be encoded as UTF-8 (a lone surrogate {char} at character {at})",
                                          {"item": item, "char": repr(text[exc.start]), "at": exc.start}) from None
    return value


Text = Annotated[str, BeforeValidator(utf8_encodable)]  # every string a request carries: texts, metadata, filters
Scalar = Annotated[str | int | float | bool, BeforeValidator(utf8_encodable)]


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 naming it, not a silently ignored option."""

    model_config = ConfigDict(extra="forbid")


class SearchRequest(Strict):
    queries: list[Text] = Field(min_length=1, description="Query texts; each gets its own hit list.")
    k: int = Field(10, ge=1, description="Hits per query (at most 1000 and at most the index size).")
    where: dict[Text, Annotated[str | int | float, BeforeValidator(utf8_encodable)]] | None = Field(None, description="Metadata filter: field → value, ANDed.")
    mode: Literal["auto", "dense", "lexical", "hybrid"] = Field(
        "auto", description="dense: vectors; lexical: BM25; hybrid: both, fused; auto: hybrid weighted at the index's alpha (dense without a lexical index)."
    )
    fusion: Literal["rrf", "weighted"] | None = Field(None, description="hybrid: reciprocal rank (the default), or min-max scaled scores weighted by alpha (auto's).")
    rrf_k: int = Field(60, ge=1, description="The RRF constant: each side adds 1 / (rrf_k + rank).")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="fusion weighted: the dense side's weight (default: the index's, from the CJK share of its texts).")
    candidates: int | None = Field(None, ge=1, description="hybrid: hits read from each side before fusing (default max(50, k); at most the k limit).")
    rerank: Text | None = Field(None, description="A served re-ranker (its --rerank-model folder name): re-scores each query's first rerank_top hits.")
    rerank_top: int = Field(50, ge=1, description="rerank: how many first-stage hits the cross-encoder re-scores (queries × rerank_top at most max_rerank_pairs).")
    rerank_weight: float = Field(1.0, ge=0.0, le=1.0, description="rerank: the cross-encoder's weight in their new order; below 1 blended with the first stage's scores (each min-max scaled).")
    rescore: int | None = Field(None, ge=0, description="An index that keeps float vectors: re-score the top k × rescore candidates by exact cosine (0: off; default: the index's).")


class Hit(BaseModel):
    """The hit object `simsearch query --json` prints: the document's metadata fields, then id, score, text (and rerank_score when re-ranked)."""

    model_config = ConfigDict(extra="allow")
    id: int
    score: float
    text: str


class QueryHits(BaseModel):
    query: str
    hits: list[Hit]


class SearchResponse(BaseModel):
    index: str
    results: list[QueryHits]


class EncodeRequest(Strict):
    texts: list[Text] = Field(min_length=1)
    model: Text | None = Field(None, description="An index name (or its model reference); default: the first index's model.")


class EncodeResponse(BaseModel):
    model: str
    dim: int
    vectors: list[list[float]]


class RerankRequest(Strict):
    """TEI's /rerank body (query + texts), plus `top_n` and `model`."""

    query: Text = Field(description="The query every text is scored against.")
    texts: list[Text] = Field(min_length=1, description="The texts to score (at most max_queries and max_rerank_pairs).")
    model: Text | None = Field(None, description="A served re-ranker's name (its folder name); default: the first --rerank-model.")
    top_n: int | None = Field(None, ge=1, description="Answer only the n best texts.")
    return_text: bool = Field(False, description="Include each text in its answer.")


class RerankHit(BaseModel):
    """One text's score: its position in the request's texts, the cross-encoder's score (0 to 1, higher is more related)."""

    index: int
    score: float
    text: str | None = None


class EmbeddingsRequest(BaseModel):
    """OpenAI's /v1/embeddings body; other OpenAI fields (user, ...) are accepted and ignored."""

    input: Annotated[str | list[str], BeforeValidator(utf8_encodable)]
    model: Text
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "simsearch"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class NewDocument(Strict):
    id: int = Field(ge=-(2**63), le=2**63 - 1)
    text: Text = Field(min_length=1)
    metadata: dict[Text, Scalar | None] = Field(default_factory=dict)


class AddRequest(Strict):
    documents: list[NewDocument] = Field(min_length=1)


class RemoveRequest(Strict):
    ids: list[int] = Field(min_length=1)


class IndexSummary(BaseModel):
    """The manifest summary of a served index."""

    name: str
    model: str
    backend: str = Field(description="the backend the index was built with")
    served_backend: str = Field(description="the backend its queries are encoded with here (serve --backend, else the built one)")
    embedding_dim: int
    document_count: int
    index_type: str
    faiss_factory: str
    created: str
    updates: int
    metadata_fields: list[str]
    loaded_at: float


class IndexList(BaseModel):
    indexes: list[IndexSummary]


class Ready(BaseModel):
    ready: bool
    indexes: int
    models: int
    rerankers: int = 0
    missing: list[str] = Field(default_factory=list, description="Served indexes whose folder is gone from disk (answered from memory).")
    degraded: list[str] = Field(default_factory=list, description="--engine ray: shards (INDEX/shard-NNN) with no live replica; their searches wait for a restart.")


class ErrorBody(BaseModel):
    """Every 4xx/5xx this service writes itself: a one-line message and, for a limit, its name."""

    detail: str
    limit: str | None = None
