"""Where the shipped toy-world CLIP lives; importing this costs nothing (no torch), so a
run that only needs the model's identity (its checkpoint SHA-256) never loads open_clip."""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "toy-shapes"
_HERE = Path(__file__).resolve().parent
TOY_CONFIG = _HERE / "model_configs" / f"{MODEL_NAME}.json"
TOY_CHECKPOINT = _HERE / "weights" / f"{MODEL_NAME}.safetensors"
