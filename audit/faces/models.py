"""dlib and its face models, loaded once per process; a clear line when they are missing.

Model files come from the registry package ``face-recognition-models`` (located without
importing it: its ``__init__`` needs ``pkg_resources``, which recent setuptools dropped).
Only these two are used, with dlib's built-in HOG frontal-face detector:

* ``shape_predictor_5_face_landmarks.dat``: 5-point landmarks, for alignment. Davis King
  trained it on his own dataset of face photos released CC0; the model is public domain / CC0.
  (The 68-point model in the same package is NOT used: it was trained on iBUG 300-W, whose
  licence excludes commercial use.)
* ``dlib_face_recognition_resnet_model_v1.dat``: the 128-d ResNet descriptor, public domain /
  CC0 per dlib-models.

The package ships one LICENSE file, CC0 1.0 Universal, and its metadata says the models "are
licensed in the public domain or under CC0 1.0 Universal". dlib itself: Boost Software License.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from audit.errors import DependencyMissing

LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# part of every stored descriptor's key: a different model (or detector) is a new descriptor
MODEL_NAME = "dlib-hog+sp5+resnet-v1"
INSTALL_HINT = (
    'face likeness ([[faces]] in the policy) needs the optional extra "faces": '
    'pip install ".[faces]" (dlib-bin, face-recognition-models)'
)
MODEL_LICENCES = {
    LANDMARKS_FILE: "CC0 1.0 / public domain (dlib-models; trained on dlib's own CC0 face dataset)",
    DESCRIPTOR_FILE: "CC0 1.0 / public domain (dlib-models)",
    "dlib": "Boost Software License 1.0",
}


def model_files() -> dict[str, Path]:
    """{file name: path} of the two model files; ``DependencyMissing`` when not installed."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyMissing(INSTALL_HINT)
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    out = {}
    for name in (LANDMARKS_FILE, DESCRIPTOR_FILE):
        path = folder / name
        if not path.is_file():
            raise DependencyMissing(f"{INSTALL_HINT}: {name} missing from {folder}")
        out[name] = path
    return out


def _dlib() -> Any:
    try:
        import dlib  # noqa: PLC0415 - optional extra
    except ImportError:
        raise DependencyMissing(INSTALL_HINT) from None
    return dlib


@dataclass
class FaceModel:
    """The detector, landmark model and descriptor network (dlib objects)."""

    detector: Any
    landmarks: Any
    descriptor: Any
    name: str = MODEL_NAME
    # dlib's objects are not documented as thread-safe: one call at a time
    lock: Any = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()


@lru_cache(maxsize=1)
def load_face_model() -> FaceModel:
    dlib = _dlib()
    files = model_files()
    return FaceModel(
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(files[LANDMARKS_FILE])),
        dlib.face_recognition_model_v1(str(files[DESCRIPTOR_FILE])),
    )


def faces_available() -> bool:
    """Whether dlib and the model files are installed (nothing is loaded)."""
    try:
        model_files()
    except DependencyMissing:
        return False
    return importlib.util.find_spec("dlib") is not None
