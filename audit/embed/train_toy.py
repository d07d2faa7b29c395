"""Train the toy-world CLIP (``toy-shapes``) on CPU in minutes.

Uses open_clip's own model class (built from the registered ``toy-shapes``
config) and ``open_clip.loss.ClipLoss``, AdamW with linear warmup + cosine
decay, on batches drawn fresh from ``audit.embed.toyworld`` at every step.
Saves weights only, as safetensors (fp16 by default), then prints zero-shot
accuracy on freshly drawn images (a seed the training never used).

    python scripts/train_toy_clip.py --steps 6000 --batch-size 64 --warmup 100 \
        --threads 1 --max-minutes 17 --seed 0 --eval-every 200 \
        --out audit/embed/weights/toy-shapes.safetensors

(the command that produced the shipped checkpoint; ``--max-minutes`` compresses the
cosine schedule into a wall-clock budget, so the step count reached depends on the
machine's load. On a shared 2-core machine use ``--threads 1``: two threads were
several times slower than one while other processes competed for the cores.)
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
import time
from typing import Optional, Sequence

import numpy as np

from audit.embed import toyworld as tw
from audit.embed.toy_model import IMAGE_SIZE, MODEL_NAME, TOY_MEAN, TOY_STD, register

EVAL_SEED_OFFSET = 1_000_003  # eval scenes come from seed + this; training never uses it


# ------------------------------------------------------------------ data


def _draw_augmented(scene: tw.ToyScene, rng: random.Random) -> np.ndarray:
    """Draw at 64 px, sometimes via a larger drawing + bicubic downscale or a JPEG
    round trip, so the model sees what sample archives (512 px, JPEG) look like
    after open_clip's preprocessing."""
    from PIL import Image

    u = rng.random()
    if u < 0.15:
        img = tw.draw(scene, 128, supersample=2).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    else:
        img = tw.draw(scene, IMAGE_SIZE)
        if u > 0.85:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=rng.randint(40, 95))
            buf.seek(0)
            img = Image.open(buf).convert("RGB")
    return np.asarray(img)


class BatchMaker:
    """Balanced batches: (colour, shape, background) combinations cycle in a shuffled
    order so that every batch covers the world evenly; size, position, rotation,
    colour jitter, caption template and prompt noise are random."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.combos = [(c, s, b) for c in tw.COLOURS for s in tw.SHAPES for b in tw.BACKGROUNDS]
        self._queue: list = []

    def _next_combo(self):
        if not self._queue:
            self._queue = list(self.combos)
            self.rng.shuffle(self._queue)
        return self._queue.pop()

    def __call__(self, n: int):
        images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        texts = []
        for i in range(n):
            c, s, b = self._next_combo()
            scene = tw.random_scene(self.rng, colour=c, shape=s, background=b)
            images[i] = _draw_augmented(scene, self.rng)
            texts.extend(tw.captions(scene, self.rng, 1))
        return images, texts


def to_model_input(images: np.ndarray):
    """uint8 (N, H, W, 3) -> normalised float tensor (N, 3, H, W), exactly what
    open_clip's preprocess gives for 64 px RGB images."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(TOY_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TOY_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_text_trimmed(model, tokens):
    """``model.encode_text`` (unnormalised) on tokens cut to the longest sequence in
    the batch. Exact for CLIP's causal text tower: no token attends to the padding
    after it, and pooling reads the EOT position."""
    import torch
    from open_clip.transformer import text_global_pool

    length = int((tokens != 0).sum(dim=1).max())
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type)
    if model.text_projection is not None:
        if isinstance(model.text_projection, torch.nn.Linear):
            x = model.text_projection(x)
        else:
            x = x @ model.text_projection
    return x


# ------------------------------------------------------------------ evaluation


def zero_shot_accuracy(
    model, preprocess, tokenizer, n: int, seed: int, px: int = IMAGE_SIZE, batch: int = 250
) -> float:
    """Top-1 accuracy over the 24 colour-shape classes on ``n`` fresh scenes drawn at
    ``px`` and preprocessed by ``preprocess`` (open_clip's transform)."""
    import torch

    scenes = tw.random_scenes(seed, n)
    with torch.no_grad():
        t = model.encode_text(tokenizer(tw.class_prompts()), normalize=True)
        correct = 0
        for i in range(0, n, batch):
            chunk = scenes[i : i + batch]
            x = torch.stack([preprocess(tw.draw(s, px)) for s in chunk])
            f = model.encode_image(x, normalize=True)
            pred = (f @ t.T).argmax(dim=1)
            correct += int((pred == torch.tensor([s.label for s in chunk])).sum())
    return correct / n


def text_precision_at_k(model, preprocess, tokenizer, query: str, match, n: int, seed: int, k: int = 10) -> float:
    """Precision@k of ``query`` over ``n`` fresh mixed scenes; ``match(scene)`` says
    which scenes are relevant."""
    import torch

    scenes = tw.random_scenes(seed, n)
    with torch.no_grad():
        x = torch.stack([preprocess(tw.draw(s)) for s in scenes])
        f = model.encode_image(x, normalize=True)
        t = model.encode_text(tokenizer([query]), normalize=True)[0]
        top = (f @ t).topk(k).indices.tolist()
    return sum(bool(match(scenes[i])) for i in top) / k


# ------------------------------------------------------------------ training


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # open_clip's convention: no weight decay on gains, biases, embeddings, logit scale
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name or "embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def train(
    steps: int,
    batch_size: int,
    out: str,
    seed: int = 0,
    lr: float = 1e-3,
    warmup: Optional[int] = None,
    weight_decay: float = 0.1,
    bf16: Optional[bool] = None,
    eval_images: int = 600,
    log_every: int = 50,
    threads: Optional[int] = None,
    max_minutes: Optional[float] = None,
    dtype: str = "fp16",
    eval_every: int = 0,
) -> dict:
    import open_clip
    import torch
    from safetensors.torch import save_file

    register()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    if bf16 is None:
        bf16 = bool(getattr(torch.backends, "mkldnn", None)) and _cpu_has_bf16()

    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    n_params = sum(p.numel() for p in model.parameters())
    loss_fn = open_clip.loss.ClipLoss()
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, min(steps // 10, 200)) if warmup is None else warmup
    make_batch = BatchMaker(seed)
    print(
        f"{MODEL_NAME}: {n_params:,} parameters; {steps} steps x {batch_size}; bf16 autocast: {bf16}; "
        f"threads: {torch.get_num_threads()}",
        flush=True,
    )

    t0 = time.time()
    model.train()
    done = 0
    budget_s = max_minutes * 60 if max_minutes is not None else None
    for step in range(steps):
        if step < warmup:
            cur_lr = lr * (step + 1) / warmup
        else:
            progress = (step - warmup) / max(1, steps - warmup)
            if budget_s is not None:  # a time budget compresses the schedule, never stretches it
                progress = max(progress, (time.time() - t0) / budget_s)
            if progress >= 1.0:
                print(f"stopping at step {step}: time budget of {max_minutes} min spent", flush=True)
                break
            cur_lr = 0.5 * (1 + math.cos(math.pi * progress)) * lr
        for g in opt.param_groups:
            g["lr"] = cur_lr
        images, texts = make_batch(batch_size)
        x = to_model_input(images)
        tokens = tokenizer(texts)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            img_f = model.encode_image(x)
            txt_f = encode_text_trimmed(model, tokens)
        img_f = torch.nn.functional.normalize(img_f.float(), dim=-1)
        txt_f = torch.nn.functional.normalize(txt_f.float(), dim=-1)
        loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        done = step + 1
        if step % log_every == 0 or done == steps:
            print(
                f"step {done}/{steps} loss {loss.item():.4f} lr {cur_lr:.2e} "
                f"scale {model.logit_scale.exp().item():.1f} {time.time() - t0:.0f}s",
                flush=True,
            )
        if eval_every and done % eval_every == 0:
            model.eval()
            acc = zero_shot_accuracy(model, preprocess, tokenizer, 144, seed + EVAL_SEED_OFFSET + done)
            model.train()
            print(f"  step {done}: zero-shot accuracy on 144 fresh images {acc:.3f}", flush=True)
    train_s = time.time() - t0

    model.eval()
    target = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    # floating tensors in the chosen dtype; integer buffers (BatchNorm's counters) as they are
    state = {
        k: (v.detach().to(target) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(
        state,
        out,
        metadata={
            "model": MODEL_NAME,
            "steps": str(done),
            "batch_size": str(batch_size),
            "seed": str(seed),
            "format": "open_clip state_dict",
        },
    )
    # evaluate exactly what was saved
    model.load_state_dict(state, strict=True)
    result = {"params": n_params, "steps": done, "train_seconds": train_s, "out": out}
    if eval_images:
        acc = zero_shot_accuracy(model, preprocess, tokenizer, eval_images, seed + EVAL_SEED_OFFSET)
        result["zero_shot_accuracy"] = acc
        print(f"zero-shot accuracy (24 colour-shape classes, {eval_images} fresh images): {acc:.4f}", flush=True)
    print(f"trained {done} steps in {train_s:.0f}s; saved {out}", flush=True)
    return result


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True, help="output .safetensors path (weights only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="off",
        help="bf16 autocast on CPU (auto: when the CPU has AVX-512 BF16 / AMX); measured no "
        "faster than fp32 for this small model on a 2-core AVX-512 BF16 CPU",
    )
    ap.add_argument("--dtype", choices=("fp16", "fp32", "bf16"), default="fp16", help="dtype of the saved weights")
    ap.add_argument("--eval-images", type=int, default=600)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=0, help="quick zero-shot check every N steps (0: off)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="training time budget: the cosine schedule is compressed to end within it "
        "(the learning rate follows whichever of steps or time is further along)",
    )
    a = ap.parse_args(argv)
    bf16 = {"auto": None, "on": True, "off": False}[a.bf16]
    train(
        a.steps,
        a.batch_size,
        a.out,
        seed=a.seed,
        lr=a.lr,
        warmup=a.warmup,
        weight_decay=a.weight_decay,
        bf16=bf16,
        eval_images=a.eval_images,
        log_every=a.log_every,
        threads=a.threads,
        max_minutes=a.max_minutes,
        dtype=a.dtype,
        eval_every=a.eval_every,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
