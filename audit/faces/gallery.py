"""Galleries of protected persons: a folder of reference photos, or a descriptor file.

*Folder*: one subfolder per person, named by the person's label, holding reference photos
(``gallery/jane-placeholder/1.jpg``). Each photo gives the descriptor of its largest face;
a photo without a face is reported (``Gallery.skipped``), never silently used.

*Descriptor file*: the same gallery without the photos, so platforms and hash-sharing
programmes can exchange it. ``.npz`` (arrays ``labels``: str, ``descriptors``: (n, 128)
float32) or JSON lines (``.jsonl``: one ``{"label": "...", "descriptor": [128 numbers]}`` a
line). ``export_gallery(folder, out)`` (``audit faces export-gallery``) writes one.

Reading a descriptor file needs only numpy; building from photos needs the ``faces`` extra.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DIM = 128
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
REFERENCE_MAX_SIDE = 1024  # reference photos are described at a higher resolution than items


class GalleryError(ValueError):
    """A gallery that cannot be read; ``str()`` is one line."""


@dataclass
class Gallery:
    labels: list[str]
    descriptors: np.ndarray  # (n, 128) float32
    sources: list[str] = field(default_factory=list)  # photo (relative) or "file:line" per row
    skipped: list[str] = field(default_factory=list)  # "photo: reason"

    def __len__(self) -> int:
        return len(self.labels)

    def nearest(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each row of ``faces`` (k, 128): the nearest gallery row and its distance."""
        if not len(self) or not len(faces):
            return np.zeros(len(faces), np.int64), np.full(len(faces), np.inf)
        d = np.linalg.norm(faces[:, None, :] - self.descriptors[None, :, :], axis=2)
        best = d.argmin(axis=1)
        return best, d[np.arange(len(faces)), best]


def gallery_files(folder: Path) -> list[tuple[str, Path]]:
    """``[(label, photo)]`` of a gallery folder, sorted; hidden entries are ignored."""
    out = []
    for person in sorted(Path(folder).iterdir()):
        if person.name.startswith(".") or not person.is_dir():
            continue
        for photo in sorted(person.rglob("*")):
            if photo.is_file() and photo.suffix.lower() in PHOTO_SUFFIXES and not photo.name.startswith("."):
                out.append((person.name, photo))
    return out


# ---------------------------------------------------------------------------- files


def _check_rows(labels: list, descriptors: np.ndarray, where: str) -> None:
    if descriptors.ndim != 2 or (len(descriptors) and descriptors.shape[1] != DIM):
        raise GalleryError(f"{where}: descriptors must be rows of {DIM} numbers, got shape {descriptors.shape}")
    if len(labels) != len(descriptors):
        raise GalleryError(f"{where}: {len(labels)} labels for {len(descriptors)} descriptors")
    if len(descriptors) and not np.isfinite(descriptors).all():
        raise GalleryError(f"{where}: descriptors hold NaN or infinite numbers")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise GalleryError(f"{where}: every label must be a non-empty string")


def read_descriptor_file(path: str | os.PathLike) -> Gallery:
    """A gallery from a ``.npz`` or ``.jsonl`` descriptor file; ``GalleryError`` when bad."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "labels" not in data or "descriptors" not in data:
                    raise GalleryError(f"{path.name}: .npz needs arrays 'labels' and 'descriptors'")
                labels = [str(x) for x in data["labels"].tolist()]
                descriptors = (
                    np.asarray(data["descriptors"], dtype=np.float32).reshape(-1, DIM)
                    if data["descriptors"].size
                    else np.zeros((0, DIM), np.float32)
                )
                if data["descriptors"].size and data["descriptors"].ndim != 2:
                    raise GalleryError(f"{path.name}: descriptors must be a 2-d array")
        except GalleryError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise GalleryError(f"{path.name}: not a readable .npz descriptor file ({exc})") from None
        _check_rows(labels, descriptors, path.name)
        return Gallery(labels, descriptors, [f"{path.name}:{i}" for i in range(len(labels))])
    if suffix in (".jsonl", ".ndjson", ".json"):
        labels, rows, sources = [], [], []
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise GalleryError(f"{path.name}: cannot read descriptor file ({exc})") from None
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise GalleryError(f"{path.name}:{number}: not a JSON object") from None
            if not isinstance(row, dict) or not isinstance(row.get("descriptor"), list):
                raise GalleryError(f'{path.name}:{number}: needs "label" and "descriptor" ({DIM} numbers)')
            vector = row["descriptor"]
            if len(vector) != DIM or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vector
            ):
                raise GalleryError(f"{path.name}:{number}: descriptor must be {DIM} finite numbers")
            if not isinstance(row.get("label"), str) or not row["label"].strip():
                raise GalleryError(f"{path.name}:{number}: label must be a non-empty string")
            labels.append(row["label"])
            rows.append(vector)
            sources.append(f"{path.name}:{number}")
        descriptors = np.asarray(rows, dtype=np.float32).reshape(-1, DIM)
        return Gallery(labels, descriptors, sources)
    raise GalleryError(f"{path.name}: a descriptor file is .npz or .jsonl (or a folder of photos)")


def write_descriptor_file(gallery: Gallery, out: str | os.PathLike) -> Path:
    """Write ``gallery`` to ``out`` (.npz or .jsonl, by suffix), atomically (temp + rename)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".jsonl"):
        raise GalleryError(f"{out.name}: write a .npz or a .jsonl descriptor file")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if suffix == ".npz":
                np.savez(
                    fh,
                    labels=np.asarray(gallery.labels, dtype=str),
                    descriptors=np.asarray(gallery.descriptors, dtype=np.float32),
                )
            else:
                for label, vector in zip(gallery.labels, gallery.descriptors):
                    line = {"label": label, "descriptor": [round(float(v), 7) for v in vector]}
                    fh.write((json.dumps(line) + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


# ---------------------------------------------------------------------------- photos


def build_gallery(folder: str | os.PathLike, model=None) -> Gallery:
    """Descriptors of the largest face of every reference photo under ``folder``."""
    from audit.faces.describe import describe_faces
    from audit.faces.models import load_face_model
    from audit.imaging import DecodeError, decode_file

    folder = Path(folder)
    model = model or load_face_model()
    labels, rows, sources, skipped = [], [], [], []
    for label, photo in gallery_files(folder):
        shown = photo.relative_to(folder).as_posix()
        try:
            decoded = decode_file(photo, orientation=True)
            img = decoded.oriented(decoded.rgb())
        except (DecodeError, FileNotFoundError) as exc:
            skipped.append(f"{shown}: {exc}")
            continue
        faces = describe_faces(model, img, max_side=REFERENCE_MAX_SIDE)
        if not len(faces):
            skipped.append(f"{shown}: no face found")
            continue
        rows.append(faces.descriptors[int(faces.sizes.argmax())])
        labels.append(label)
        sources.append(shown)
    descriptors = np.stack(rows) if rows else np.zeros((0, DIM), np.float32)
    return Gallery(labels, descriptors, sources, skipped)


def export_gallery(folder: str | os.PathLike, out: str | os.PathLike, model=None) -> Gallery:
    """Describe a folder gallery and write its shareable descriptor file (no photos in it)."""
    gallery = build_gallery(folder, model)
    write_descriptor_file(gallery, out)
    return gallery


_cache: dict[tuple[str, str], Gallery] = {}


def load_gallery(spec, model=None, *, key: str = "") -> Gallery:
    """The gallery of a policy's ``FaceGallery`` (cached per path and policy hash ``key``)."""
    path = Path(spec.gallery)
    cache_key = (str(path.resolve()), key)
    cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    gallery = build_gallery(path, model) if path.is_dir() else read_descriptor_file(path)
    if len(_cache) > 8:
        _cache.clear()
    _cache[cache_key] = gallery
    return gallery
