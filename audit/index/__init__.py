"""FAISS indexes of image and prompt vectors, per model identity: choice, build, search.

- ``choice``: which index type for n vectors under a memory budget (autofaiss-style)
- ``files``: atomic, versioned save/load with the id → key mapping and a checked manifest
- ``build``: full builds (trained on a sample, tuned for recall) and incremental updates
- ``search``: query embedding and nearest items as a polars DataFrame
"""

from audit.index.choice import FLAT_BELOW, IndexSpec, choose_index, parse_size

__all__ = ["FLAT_BELOW", "IndexSpec", "choose_index", "parse_size"]
