"""The contract tests loop over the real registries (``default_detectors()``, the report
``writers()``, the metadata ``PARSERS``); this file makes sure the registries hold every
implementation in the package, so a detector, writer or parser added without being registered
(and so without being contract-tested) fails here instead of going unnoticed."""

from __future__ import annotations

import importlib
import pkgutil

import audit.faces
import audit.flag
import audit.meta
import audit.report
from audit.flag.resources import ResourceDetector
from audit.flag.runner import default_detectors
from audit.meta import PARSERS, RANK
from audit.report.base import FORMATS, writers


def _implementations(packages, method: str) -> set[type]:
    """Public classes defined in ``packages`` that have a ``name`` and a ``method``."""
    found = set()
    for package in packages:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if (
                    isinstance(obj, type)
                    and obj.__module__ == module.__name__
                    and not obj.__name__.startswith("_")
                    and callable(getattr(obj, method, None))
                    and "name" in dir(obj)
                    and not getattr(obj, "_is_protocol", False)
                ):
                    found.add(obj)
    return found


def test_every_detector_is_registered():
    from audit.faces.detector import FaceDetector
    from audit.flag.frames import FrameHashDetector
    from audit.flag.provenance import ProvenanceDetector
    from audit.flag.videos import VideoHashDetector

    # added by audit/flag/extra.py only when a policy asks for them (resource lists, [[faces]],
    # provenance signals, hash lists over animation frames, vpdq rows); their contract is tested in
    # tests/test_resources.py, tests/test_faces_flag.py, tests/test_flag_detectors.py and
    # tests/test_animation.py
    policy_dependent = {ResourceDetector, FaceDetector, ProvenanceDetector, FrameHashDetector, VideoHashDetector}
    registered = {type(d) for d in default_detectors()}
    assert registered and not registered & policy_dependent
    assert _implementations([audit.flag, audit.faces], "detect") == registered | policy_dependent


def test_every_report_writer_is_registered():
    registry = writers()
    assert set(registry) == set(FORMATS)
    assert all(name == w.name for name, w in registry.items())
    assert _implementations([audit.report], "write") == {type(w) for w in registry.values()}


def test_every_metadata_parser_is_registered_and_ranked():
    names = [p.name for p in PARSERS]
    assert len(names) == len(set(names))
    assert set(RANK) == set(names)  # a parser without a rank would lose every tie silently
    assert _implementations([audit.meta], "parse") == {type(p) for p in PARSERS}
