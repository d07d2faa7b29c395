"""Detectors a policy asks for beyond the default three, given the catalog connection:
resource names and hashes (``resources``), provenance (``provenance``), animation frames and known videos
(``frames``, ``videos``) and face likeness (``faces``). Kept apart from
``runner`` so the run itself stays unaware of what they need (the catalog, dlib)."""

from __future__ import annotations


def policy_detectors(conn, policy) -> list:
    out = []
    from audit.flag.resources import ResourceDetector, wanted

    if wanted(policy):
        out.append(ResourceDetector(conn))
    from audit.flag.provenance import ProvenanceDetector, wanted as wants_provenance

    if wants_provenance(policy):
        out.append(ProvenanceDetector(conn))
    from audit.flag.frames import FrameHashDetector, wanted as wants_frame_hashes

    if wants_frame_hashes(policy):
        out.append(FrameHashDetector(conn))
    from audit.flag.videos import VideoHashDetector, wanted as wants_video_hashes

    if wants_video_hashes(policy):
        out.append(VideoHashDetector(conn))
    if any(not g.empty for g in policy.faces):
        from audit.faces.detector import FaceDetector
        from audit.faces.models import load_face_model

        load_face_model()  # fail before any work: one line naming the "faces" extra (exit 3)
        out.append(FaceDetector(conn))
    return out
