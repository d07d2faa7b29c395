"""Embeddings: the ``Embedder`` protocol (``base``), its open_clip implementation
(``openclip``), the toy-world model, and the runner behind ``audit embed``.

Importing this package imports nothing heavy (no torch, no open_clip).
"""

# The model ``audit embed`` and ``audit scan`` use unless told otherwise: every default
# (CLI options, library signatures, the open_clip loader) names these two, here where
# importing them costs nothing.
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
