"""The bundled sample archive: a few hundred toy-world generations with A1111-, ComfyUI-
and EXIF-style metadata, some planted "prohibited" stand-ins (red triangles) and
near-duplicates, and the toy policy that flags them. ``make_sample_archive`` writes it
deterministically; ``scripts/make_sample_archive.py`` is its command line."""

from audit.sample.archive import SampleManifest, make_sample_archive

__all__ = ["SampleManifest", "make_sample_archive"]
