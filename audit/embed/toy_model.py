"""The toy-world CLIP: a small open_clip CLIP trained on ``audit.embed.toyworld``.

Importing this module registers the model config ``toy-shapes`` with open_clip,
so the ordinary local-checkpoint path works for it like for any other model::

    import audit.embed.toy_model                       # registers "toy-shapes"
    model, _, preprocess = open_clip.create_model_and_transforms("toy-shapes", pretrained=None)
    safetensors.torch.load_model(model, TOY_CHECKPOINT)  # strict; fp16 file, fp32 model
    tokenizer = open_clip.get_tokenizer("toy-shapes")

or simply ``model, preprocess, tokenizer = load_toy_model()``.

Architecture (``model_configs/toy-shapes.json``), about 8.3M parameters: open_clip's
``CLIP`` class with a ``ModifiedResNet`` image tower (layers [1, 1, 1, 1], width 16,
attention pooling; 64 px input) and a text transformer with 3 layers, width 128,
4 heads, context 77, open_clip's default BPE vocabulary (49,408 tokens, most of the
parameters); 128-d embeddings. A ViT tower (4 layers, width 128, patch 16 or 8) was
tried first: it learned colours at once but shapes far too slowly for a CPU budget of
minutes on a busy 2-core machine (patch 16: 34% after 400 steps of 128; patch 8: 38%
after 400 steps of 64), while the small conv tower passes 95% within minutes.

Image preprocessing is open_clip's default for a built-in config without a
pretrained tag: resize the shortest side to 64 (bicubic), centre crop, OpenAI
mean/std (``TOY_MEAN``/``TOY_STD``); the training script normalises drawn images
the same way (a test checks the two agree).

The checkpoint is trained by ``scripts/train_toy_clip.py`` (``audit.embed.train_toy``).
"""

from __future__ import annotations

from audit.embed.toy_files import MODEL_NAME, TOY_CHECKPOINT, TOY_CONFIG

IMAGE_SIZE = 64
# open_clip's defaults (OPENAI_DATASET_MEAN/STD), which create_model_and_transforms
# uses for a registered config loaded with pretrained=None
TOY_MEAN = (0.48145466, 0.4578275, 0.40821073)
TOY_STD = (0.26862954, 0.26130258, 0.27577711)


def register() -> str:
    """Make ``toy-shapes`` known to open_clip (idempotent); returns the model name."""
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(TOY_CONFIG)
    return MODEL_NAME


def model_config() -> dict:
    import json

    return json.loads(TOY_CONFIG.read_text())


def load_toy_model(device="cpu", checkpoint=None):
    """(model, preprocess, tokenizer) for the shipped toy-world CLIP, in eval mode.

    ``checkpoint`` defaults to the checkpoint shipped in the package; the weights
    are loaded strictly from safetensors (never unpickled).
    """
    import open_clip
    from safetensors.torch import load_file

    register()
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=None)
    state = load_file(str(checkpoint or TOY_CHECKPOINT))
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    return model, preprocess, tokenizer


register()
