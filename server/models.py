"""Pydantic models of every request and response body (they are also the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 naming it, not a silently ignored option."""

    model_config = ConfigDict(extra="forbid")


class SearchRequest(Strict):
    queries: list[str] = Field(min_length=1, description="Query texts; each gets its own hit list.")
    k: int = Field(10, ge=1, description="Hits per query (at most 1000 and at most the index size).")
    where: dict[str, str | int | float] | None = Field(None, description="Metadata filter: field → value, ANDed.")


class Hit(BaseModel):
    """The hit object `simsearch query --json` prints: the document's metadata fields, then id, score, text."""

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
    texts: list[str] = Field(min_length=1)
    model: str | None = Field(None, description="An index name (or its model reference); default: the first index's model.")


class EncodeResponse(BaseModel):
    model: str
    dim: int
    vectors: list[list[float]]


class EmbeddingsRequest(BaseModel):
    """OpenAI's /v1/embeddings body; other OpenAI fields (user, ...) are accepted and ignored."""

    input: str | list[str]
    model: str
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
    text: str = Field(min_length=1)
    metadata: dict[str, Scalar | None] = Field(default_factory=dict)


class AddRequest(Strict):
    documents: list[NewDocument] = Field(min_length=1)


class RemoveRequest(Strict):
    ids: list[int] = Field(min_length=1)


class IndexSummary(BaseModel):
    """The manifest summary of a served index."""

    name: str
    model: str
    backend: str
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


class ErrorBody(BaseModel):
    """Every 4xx/5xx this service writes itself: a one-line message and, for a limit, its name."""

    detail: str
    limit: str | None = None
