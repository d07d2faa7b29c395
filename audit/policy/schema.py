"""The policy's data model: plain frozen dataclasses, no behaviour beyond small lookups.

A policy names *signals* (things a detector can observe about an item) and *flags* (how signals
combine into a category). Signal names are ``kind:id``:

=====================  ==========================================================================
``concept:X``          concept X fired on the image or on the prompt embedding
``concept:X/image``    concept X fired on the image embedding
``concept:X/prompt``   concept X fired on the prompt embedding
``rule:X``             prompt rule X matched (prompt and/or negative prompt, as the rule says)
``names:X``            a name from name list X occurs in the prompt
``hash:X``             the item matched hash list X (PDQ within distance, exact md5/sha256, or
                       a model/LoRA hash or Civitai AIR of the item's resources)
``face:X``             a face in the image is within ``max_distance`` of a person of gallery X
``prompt:overlong``    the prompt is longer than 20,000 characters (an evasion path)
``prompt:rule-error``  a rule could not be evaluated on this prompt (regular expression timeout);
                       only with ``[policy] timeout_is_finding = true``
``provenance:ai-generated``  the file's C2PA actions or XMP ``DigitalSourceType`` say a trained
                       model made it (``trainedAlgorithmicMedia``, ``compositeWith...``)
``provenance:c2pa-invalid``  a C2PA manifest is present but unreadable, or fails validation
``provenance:c2pa``    a C2PA manifest is present
``kind:*``             any signal of that kind (``hash:*``, ``concept:*``, ``rule:*``, ``names:*``)
=====================  ==========================================================================

An entry of a flag's ``all`` list may hold alternatives separated by ``|``
(``"concept:minor|rule:minor-age"``): it holds when any alternative fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from audit.vocabulary import SEVERITIES

if TYPE_CHECKING:  # pragma: no cover
    from audit.policy.hashlists import HashBank

SEVERITY_RANK = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}  # low=0 … critical=3
PROMPT_FIELDS = ("prompt", "negative_prompt")
# fields of the generation metadata that rules and name lists may also match: the names of
# the resources (checkpoints, LoRAs, LyCORIS, embeddings, hypernetworks) and the model column
RESOURCE_FIELDS = ("resources", "model")
TEXT_FIELDS = PROMPT_FIELDS + RESOURCE_FIELDS
DEFAULT_TEMPLATES = ("{}", "a photo of {}", "an image of {}")
SIGNAL_KINDS = ("concept", "rule", "names", "hash", "prompt", "face", "provenance")
RULE_ERROR_SIGNAL = "prompt:rule-error"
BUILTIN_PROMPT_SIGNALS = ("prompt:overlong", RULE_ERROR_SIGNAL)
# what the file's C2PA manifest / IPTC source type says (audit.provenance), always available
BUILTIN_PROVENANCE_SIGNALS = ("provenance:ai-generated", "provenance:c2pa-invalid", "provenance:c2pa")
MAX_PROMPT_CHARS = 20_000


@dataclass(frozen=True)
class Category:
    id: str
    severity: str
    no_view: bool
    description: str = ""
    line: int = 0

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]


@dataclass(frozen=True)
class Concept:
    id: str
    texts: tuple[str, ...]
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    exemplars: tuple[str, ...] = ()  # globs as written, relative to the policy file
    exemplar_paths: tuple[Path, ...] = ()  # the files they resolved to at load time
    image_threshold: float | None = None  # None: calibrated for the model in use
    prompt_threshold: float | None = None
    special_care: bool = False
    contrast: tuple[str, ...] = ()  # near-miss texts that must not fire (calibration references)
    description: str = ""
    line: int = 0

    def prompts(self) -> list[str]:
        """Every text under every template: the prompts whose embeddings are ensembled."""
        return [template.format(text) for text in self.texts for template in self.templates]


@dataclass(frozen=True)
class Rule:
    id: str
    patterns: tuple[str, ...] = ()  # regular expressions over normalised text, case-insensitive
    words: tuple[str, ...] = ()  # whole words / phrases, compiled to patterns
    ages_below: int | None = None  # adds age patterns for ages under this number
    fields: tuple[str, ...] = ("prompt",)
    allow: tuple[str, ...] = ()  # phrases removed (in normalised space) before matching
    description: str = ""
    line: int = 0

    @property
    def signal(self) -> str:
        return f"rule:{self.id}"


@dataclass(frozen=True)
class NameList:
    id: str
    names: tuple[str, ...] = ()  # inline names plus those read from ``path``
    path: Path | None = None
    fields: tuple[str, ...] = ("prompt",)
    description: str = ""
    line: int = 0

    @property
    def signal(self) -> str:
        return f"names:{self.id}"


@dataclass(frozen=True)
class Flag:
    id: str
    category: str
    all: tuple[str, ...] = ()  # every entry must hold; an entry may be "a|b" alternatives
    any: tuple[str, ...] = ()  # at least ``min_any`` of these must hold (when non-empty)
    none: tuple[str, ...] = ()  # none of these may hold
    min_any: int = 1
    description: str = ""
    implicit: bool = False  # synthesised from a hash list's ``category``
    line: int = 0


@dataclass(frozen=True)
class HashList:
    id: str
    path: Path
    category: str | None  # None for negative banks
    pdq_max_distance: int = 31
    pdq_min_quality: int = 50
    negative: bool = False
    suppresses: tuple[str, ...] = ()  # negative banks: categories suppressed (empty: all)
    description: str = ""
    line: int = 0
    bank: "HashBank | None" = field(default=None, repr=False, compare=False)
    # ``vpdq`` rows (known videos): a video matches when this share of its frames (%) match
    # the listed video and this share of the listed video's frames match it (vpdq's defaults)
    vpdq_query_match: float = 80.0
    vpdq_compared_match: float = 0.0

    @property
    def signal(self) -> str:
        return f"hash:{self.id}"


@dataclass(frozen=True)
class FaceGallery:
    """``[[faces]]``: likeness against a gallery of protected persons (``audit.faces``)."""

    id: str
    gallery: Path  # a folder (one subfolder per person) or a descriptor file (.npz / .jsonl)
    max_distance: float = 0.6  # Euclidean distance between 128-d dlib descriptors
    min_face_px: int = 40  # faces smaller than this (box side, in the downscaled copy) are ignored
    gate: str | None = None  # concept id: only items whose image fires it are looked at
    gate_threshold: float | None = None  # cosine for the gate (None: the concept's, or calibrated)
    max_side: int = 640  # faces are found on a copy whose longest side is at most this
    description: str = ""
    line: int = 0
    empty: bool = False  # the gallery holds no person yet (nothing to match, nothing to compute)

    @property
    def signal(self) -> str:
        return f"face:{self.id}"


@dataclass(frozen=True)
class NegativeConcept:
    id: str
    texts: tuple[str, ...]
    threshold: float | None = None  # None: calibrated like a concept's
    suppresses: tuple[str, ...] = ()  # concept ids whose signals this one cancels
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    description: str = ""
    line: int = 0

    def prompts(self) -> list[str]:
        return [template.format(text) for text in self.texts for template in self.templates]


@dataclass(frozen=True)
class Policy:
    name: str
    version: str
    categories: tuple[Category, ...]
    concepts: tuple[Concept, ...]
    rules: tuple[Rule, ...]
    name_lists: tuple[NameList, ...]
    flags: tuple[Flag, ...]
    hashlists: tuple[HashList, ...]  # positive lists (negative=false)
    negative_banks: tuple[HashList, ...]  # negative=true, from [[negative_bank]] or [[hashlist]]
    negative_concepts: tuple[NegativeConcept, ...]
    content_hash: str  # sha256 over the canonical policy text and every file it references
    text_hash: str  # sha256 of the canonical policy text alone
    path: Path | None
    description: str = ""
    special_care_adjustment: float = 0.01
    regex_timeout_s: float = 0.25
    max_prompt_chars: int = MAX_PROMPT_CHARS
    timeout_is_finding: bool = False  # a regex timeout fires prompt:rule-error (default: not a finding)
    faces: tuple[FaceGallery, ...] = ()

    def category(self, category_id: str) -> Category:
        for category in self.categories:
            if category.id == category_id:
                return category
        raise KeyError(category_id)

    def concept(self, concept_id: str) -> Concept:
        for concept in self.concepts:
            if concept.id == concept_id:
                return concept
        raise KeyError(concept_id)

    def signal_names(self) -> frozenset[str]:
        """Every concrete signal name this policy can produce."""
        names: set[str] = set(BUILTIN_PROMPT_SIGNALS) | set(BUILTIN_PROVENANCE_SIGNALS)
        if not self.timeout_is_finding:
            names.discard(RULE_ERROR_SIGNAL)
        for concept in self.concepts:
            names |= {f"concept:{concept.id}", f"concept:{concept.id}/image", f"concept:{concept.id}/prompt"}
        names |= {rule.signal for rule in self.rules}
        names |= {names_list.signal for names_list in self.name_lists}
        names |= {hashlist.signal for hashlist in self.hashlists}
        names |= {gallery.signal for gallery in self.faces}
        return frozenset(names)

    def check_prompt(
        self,
        prompt: str | None,
        negative_prompt: str | None = None,
        resources=(),
        *,
        embedder=None,
        deny_at: str = "low",
    ) -> dict:
        """The request-time gate's answer for one request (``audit.policy.gate``)."""
        from audit.policy.gate import PromptGate

        return PromptGate(self, embedder, deny_at=deny_at).check(prompt, negative_prompt, resources)

    def uses_fields(self, fields) -> bool:
        """Whether a rule or name list of this policy matches any of ``fields``."""
        wanted = set(fields)
        return any(wanted & set(x.fields) for x in (*self.rules, *self.name_lists))

    def uses_provenance(self) -> bool:
        """Whether a flag of this policy names a provenance signal."""
        return any("provenance:" in entry for f in self.flags for entry in (*f.all, *f.any, *f.none))

    def has_resource_hashes(self) -> bool:
        return any(h.bank is not None and getattr(h.bank, "resources", None) for h in self.hashlists)
