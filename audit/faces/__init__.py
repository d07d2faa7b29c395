"""Face likeness against a gallery of protected persons (``[[faces]]`` in a policy).

Faces are found with dlib's HOG frontal-face detector, aligned with its 5-point landmark
model and described by its 128-d ResNet descriptor (the models of the registry package
``face-recognition-models``); two photos of one person are typically 0.3-0.45 apart,
different persons 0.65-1.0 (Euclidean), hence the default ``max_distance = 0.6``.

dlib is an optional extra (``pip install ".[faces]"``): nothing here imports it until a
policy with a non-empty gallery is evaluated, so ``import audit`` stays light.

Modules: ``models`` (dlib and the model files, licences), ``describe`` (faces of one image,
on a downscaled copy), ``gallery`` (reference folders and shareable descriptor files),
``store`` (descriptors per item and model in the catalog), ``detector`` (the flag stage).
"""

from __future__ import annotations

_LAZY = {
    "FaceModel": "audit.faces.models",
    "load_face_model": "audit.faces.models",
    "model_files": "audit.faces.models",
    "MODEL_LICENCES": "audit.faces.models",
    "Gallery": "audit.faces.gallery",
    "build_gallery": "audit.faces.gallery",
    "load_gallery": "audit.faces.gallery",
    "export_gallery": "audit.faces.gallery",
    "read_descriptor_file": "audit.faces.gallery",
    "write_descriptor_file": "audit.faces.gallery",
    "FaceDetector": "audit.faces.detector",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'audit.faces' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
