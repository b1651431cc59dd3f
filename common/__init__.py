"""Neutral bottom layer: data files, safe writes, shared measures, progress and the encoder contract.

Every stage (embedder/, index/, eval/) and the API may import from here; nothing here
imports a stage, so the stages never need to import each other sideways.
"""
