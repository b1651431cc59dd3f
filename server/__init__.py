"""`simsearch serve`: an HTTP search service over index folders (FastAPI + uvicorn, micro-batched encoder calls).

Light on import: `server.command` (the click command) and `server.config` load no
web stack or model; `server.service.run` does.
"""
