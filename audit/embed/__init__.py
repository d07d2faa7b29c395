"""Embeddings: the ``Embedder`` protocol (``base``), its open_clip implementation
(``openclip``), the toy-world model, and the runner behind ``audit embed``.

Importing this package imports nothing heavy (no torch, no open_clip).
"""
