"""simsearch's Python API: one function per CLI command, wiring an encoder into an index.

    import simsearch
    simsearch.build("examples/corpus.txt", "build/idx")
    hits = simsearch.query("build/idx", ["Is it going to snow?"], k=3).hits[0]

Names are imported on first use (PEP 562), so `import simsearch` is cheap.
"""

from importlib import import_module

_EXPORTS = {name: "simsearch.api" for name in (
    "QueryResult", "add", "add_lexical", "build", "encode_file", "eval_ann", "eval_retrieval", "eval_sts", "info", "load_encoder",
    "make_stsb_retrieval", "open_index", "query", "reduce", "remove", "report", "sweep", "train",
)}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
