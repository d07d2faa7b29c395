"""The toy world: one benign coloured shape on a plain background.

A synthetic world small enough to train a CLIP on in minutes on a CPU (see
``audit.embed.toy_model``), used to test the embedding/search/policy code paths
with a model that really understands its world. Everything here is
deterministic given a seed (``random.Random`` / ``numpy.random.Generator``
instances are passed in, never global state).

Geometry is stored resolution-independently (fractions of the image side), so
the same scene can be drawn at 64 px for training and at 512 px for sample
archives and benchmarks.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence

from PIL import Image, ImageDraw

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS = ("white", "black", "gray")

#: the 24 colour-shape classes, in a fixed order (colour-major)
CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)

# base RGB of each colour name; scenes jitter around these so the model learns
# the names, not exact values
COLOUR_RGB = {
    "red": (215, 35, 35),
    "green": (40, 170, 60),
    "blue": (35, 75, 215),
    "yellow": (238, 215, 40),
    "purple": (135, 50, 175),
    "orange": (245, 135, 25),
}
BACKGROUND_RGB = {"white": (242, 242, 242), "black": (18, 18, 18), "gray": (128, 128, 128)}
COLOUR_JITTER = 22
BACKGROUND_JITTER = 5
BACKGROUND_SHIFT = 14

#: shape size is the circumradius as a fraction of the image side
SIZE_RANGE = (0.14, 0.40)
SMALL_BELOW = 0.21
LARGE_ABOVE = 0.32


@dataclass(frozen=True)
class ToyScene:
    colour: str
    shape: str
    background: str
    size: float  # circumradius, fraction of the image side
    cx: float  # centre, fractions of the image side
    cy: float
    rotation: float = 0.0  # degrees
    fg_rgb: Optional[tuple[int, int, int]] = None  # jittered colour; None: base colour
    bg_rgb: Optional[tuple[int, int, int]] = None

    @property
    def label(self) -> int:
        """Index of this scene's colour-shape class in ``CLASSES``."""
        return CLASSES.index((self.colour, self.shape))

    @property
    def size_word(self) -> Optional[str]:
        if self.size < SMALL_BELOW:
            return "small"
        if self.size > LARGE_ABOVE:
            return "large"
        return None


def _jitter(rgb, amount, rng: random.Random, shared: int = 0) -> tuple[int, int, int]:
    """Per-channel jitter of up to ``amount`` plus a common brightness shift of up to ``shared``."""
    common = rng.randint(-shared, shared) if shared else 0
    return tuple(  # type: ignore[return-value]
        max(0, min(255, v + common + rng.randint(-amount, amount))) for v in rgb
    )


def random_scene(
    rng: random.Random,
    colour: Optional[str] = None,
    shape: Optional[str] = None,
    background: Optional[str] = None,
) -> ToyScene:
    """A random scene; any of colour/shape/background can be fixed."""
    colour = colour or rng.choice(COLOURS)
    shape = shape or rng.choice(SHAPES)
    background = background or rng.choice(BACKGROUNDS)
    size = rng.uniform(*SIZE_RANGE)
    margin = size + 0.02
    cx = rng.uniform(margin, 1.0 - margin)
    cy = rng.uniform(margin, 1.0 - margin)
    rotation = rng.uniform(0.0, 360.0)
    return ToyScene(
        colour=colour,
        shape=shape,
        background=background,
        size=size,
        cx=cx,
        cy=cy,
        rotation=rotation,
        fg_rgb=_jitter(COLOUR_RGB[colour], COLOUR_JITTER, rng),
        bg_rgb=_jitter(BACKGROUND_RGB[background], BACKGROUND_JITTER, rng, BACKGROUND_SHIFT),
    )


def _regular_polygon(cx, cy, r, n, rotation_deg, inner: Optional[float] = None):
    pts = []
    step = math.pi / n if inner is not None else 2 * math.pi / n
    count = 2 * n if inner is not None else n
    start = math.radians(rotation_deg) - math.pi / 2
    for i in range(count):
        rr = r if (inner is None or i % 2 == 0) else r * inner
        a = start + i * step
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def draw(scene: ToyScene, px: int = 64, supersample: Optional[int] = None) -> Image.Image:
    """Render ``scene`` as an RGB image of ``px`` x ``px`` pixels, anti-aliased.

    The shape is drawn on a ``supersample`` times larger canvas and reduced with
    a box filter (default: 4x for small images, fewer for large ones).
    """
    if supersample is None:
        supersample = 4 if px <= 128 else (2 if px <= 512 else 1)
    big = px * supersample
    fg = scene.fg_rgb or COLOUR_RGB[scene.colour]
    bg = scene.bg_rgb or BACKGROUND_RGB[scene.background]
    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    cx, cy, r = scene.cx * big, scene.cy * big, scene.size * big
    if scene.shape == "circle":
        # slightly smaller than the circumradius so areas are comparable
        rc = r * 0.85
        d.ellipse((cx - rc, cy - rc, cx + rc, cy + rc), fill=fg)
    elif scene.shape == "square":
        d.polygon(_regular_polygon(cx, cy, r, 4, scene.rotation), fill=fg)
    elif scene.shape == "triangle":
        d.polygon(_regular_polygon(cx, cy, r, 3, scene.rotation), fill=fg)
    elif scene.shape == "star":
        d.polygon(_regular_polygon(cx, cy, r, 5, scene.rotation, inner=0.45), fill=fg)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}")
    if supersample > 1:
        img = img.resize((px, px), Image.Resampling.BOX)
    return img


# ---------------------------------------------------------------- captions


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


_TEMPLATES = (
    "{a_cs}",
    "{cs}",
    "a photo of {a_cs}",
    "a picture of {a_cs}",
    "an image of {a_cs}",
    "a drawing of {a_cs}",
    "a photo of {a_szcs}",
    "a drawing of {a_szcs}",
    "{a_szcs}",
    "{a_cs} on {a_bg} background",
    "{a_szcs} on {a_bg} background",
    "a photo of {a_cs} on {a_bg} background",
    "a picture of {a_cs} on {bg}",
    "{a_cs}, {bg} background",
    "{a_s} that is {c}",
    "a {c} shape: {a_s}",
    "a {bg} background with {a_cs}",
    "a {bg} image showing {a_szcs}",
)

#: A1111-style quality tags, appended (and sometimes prepended) as prompt noise
PROMPT_NOISE = (
    "high quality",
    "best quality",
    "masterpiece",
    "4k",
    "8k",
    "highly detailed",
    "sharp focus",
    "digital art",
    "trending on artstation",
    "simple background",
    "centered",
    "minimalist",
    "award winning",
    "hd",
    "studio lighting",
    "detailed",
    "clean",
    "vector art",
    "flat colors",
    "professional",
)


def caption_parts(scene: ToyScene) -> dict:
    sz = scene.size_word
    cs = f"{scene.colour} {scene.shape}"
    szcs = f"{sz} {cs}" if sz else cs
    return {
        "c": scene.colour,
        "s": scene.shape,
        "bg": scene.background,
        "cs": cs,
        "a_cs": _a(cs),
        "a_s": _a(scene.shape),
        "a_szcs": _a(szcs),
        "a_bg": _a(scene.background),
    }


def add_prompt_noise(text: str, rng: random.Random, p: float = 0.45) -> str:
    """With probability ``p``, decorate ``text`` with A1111-style quality tags."""
    if rng.random() >= p:
        return text
    n = rng.choice((1, 1, 2, 2, 3, 4, 6))
    tags = rng.sample(PROMPT_NOISE, n)
    if rng.random() < 0.2:
        k = rng.randint(1, len(tags))
        return ", ".join(tags[:k] + [text] + tags[k:])
    return ", ".join([text] + tags)


def captions(scene: ToyScene, rng: Optional[random.Random] = None, n: int = 1, noise: float = 0.45) -> list[str]:
    """``n`` captions for ``scene`` drawn from several templates.

    Without ``rng`` the first ``n`` templates are used, undecorated (deterministic).
    """
    parts = caption_parts(scene)
    if rng is None:
        return [_TEMPLATES[i % len(_TEMPLATES)].format(**parts) for i in range(n)]
    out = []
    for _ in range(n):
        text = rng.choice(_TEMPLATES).format(**parts)
        out.append(add_prompt_noise(text, rng, noise))
    return out


def class_prompts(template: str = "a photo of {a_cs}") -> list[str]:
    """One prompt per colour-shape class, in ``CLASSES`` order."""
    out = []
    for c, s in CLASSES:
        parts = {"c": c, "s": s, "cs": f"{c} {s}", "a_cs": _a(f"{c} {s}"), "a_s": _a(s)}
        out.append(template.format(**parts))
    return out


def random_scenes(seed: int, n: int, **fixed) -> list[ToyScene]:
    """``n`` random scenes from ``seed`` (deterministic)."""
    rng = random.Random(seed)
    return [random_scene(rng, **fixed) for _ in range(n)]


def draw_batch(scenes: Sequence[ToyScene], px: int = 64):
    """Draw ``scenes`` into a uint8 numpy array of shape (N, px, px, 3)."""
    import numpy as np

    out = np.empty((len(scenes), px, px, 3), dtype=np.uint8)
    for i, sc in enumerate(scenes):
        out[i] = np.asarray(draw(sc, px))
    return out
