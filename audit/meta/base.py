"""The seam between image containers and generator-specific metadata parsers.

A *container reader* (PNG chunks, EXIF, alpha-channel "stealth" data, sidecar files,
manifest columns) turns a file into ``MetadataText`` pieces: where a text was found and
the text verbatim. A *parser* recognises one generator family's format in those pieces
and returns a ``GenerationMetadata``. ``extract()`` in ``audit.meta`` runs every parser
over every piece and keeps the richest result, recording everything it found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class MetadataText:
    """One piece of metadata as stored in a file, kept verbatim for evidence."""

    location: str  # e.g. "png:tEXt:parameters", "exif:UserComment", "png:stealth", "sidecar:a.json"
    key: str  # the key the writer used: "parameters", "prompt", "workflow", "Comment", ...
    text: str


@dataclass
class Resource:
    """A model file that shaped a generation: checkpoint, LoRA, embedding, VAE, ..."""

    kind: str  # "checkpoint", "lora", "lycoris", "embedding", "hypernetwork", "vae", "upscaler", ...
    name: str
    hash: str | None = None
    weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "hash": self.hash, "weight": self.weight}


@dataclass
class GenerationMetadata:
    """What a generator recorded about how an image was made.

    Fields are ``None`` when the format does not state them. ``seed`` is kept as text:
    ComfyUI seeds run up to 2**64-1, beyond any signed 64-bit column.
    """

    generator: str | None = None  # "a1111", "forge", "comfyui", "invokeai", "novelai", ...
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: str | None = None
    steps: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    cfg_scale: float | None = None
    model: str | None = None
    model_hash: str | None = None
    resources: list[Resource] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # clip_skip, denoise, size, samplers, ...
    source: str | None = None  # MetadataText.location the values came from

    FIELDS = ("prompt", "negative_prompt", "seed", "steps", "sampler", "scheduler", "cfg_scale", "model", "model_hash")

    def richness(self) -> int:
        """How much this result says; used to pick between parsers that all matched."""
        score = sum(getattr(self, f) not in (None, "") for f in self.FIELDS)
        return score * 4 + min(len(self.resources), 3)

    @property
    def empty(self) -> bool:
        return self.richness() == 0 and self.generator is None


@runtime_checkable
class MetadataParser(Protocol):
    """Recognises one generator family. Must never raise on malformed input: return
    ``None`` for "not mine" and put problems in ``extra["errors"]`` of a partial result."""

    name: str

    def parse(self, pieces: list[MetadataText]) -> GenerationMetadata | None: ...
