"""The int8 CPU path (``--precision int8``): both towers of an open_clip CLIP exported to
ONNX and quantised with ONNX Runtime's dynamic int8 (weights int8, activations quantised
per batch; VNNI kernels where the CPU has them).

Measured on the build machine (AMX, bf16 native): ORT int8 runs at 0.26-0.40x the bf16
model; on CPUs without native bf16 (VNNI only) ORT int8 was ~1.4x fp32. ``auto`` never picks
int8: it is a vector space of its own, and a choice that hung on a timing taken on a shared
CPU flipped between runs and re-embedded a whole index into the other space. Without VNNI
(AVX2 only) a request for int8 falls back to fp32 (``VNNI_FLAGS``). PyTorch's own dynamic quantisation was slower than ORT in both cases.

The quantised towers are built once per weights identity and cached (offline, nothing is
downloaded) under ``cache_root()``: ``$AUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/audit``,
else ``~/.cache/audit``; each in ``int8/<hash of the identity key>/``, written to a
temporary name and renamed, so a killed export leaves nothing half-written behind.
Needs the ``int8`` extra (``onnx``, ``onnxruntime``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import DependencyMissing

INT8_MIN_COSINE = 0.99  # per item, images and texts, against fp32 on the same inputs
OPSET = 17
FORMAT = 3  # bump when the exported graphs change: older caches are then rebuilt


def available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# CPU flags whose int8 dot products ONNX Runtime's u8s8 kernels use. Without them (AVX2 only)
# the kernels saturate intermediate sums: on the toy-world model per-item cosine still held
# (>= 0.99) but only 93% of queries kept their top-10 neighbours (the bar is 95%), so int8
# is not used there.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_supports_vnni() -> bool:
    """VNNI (or AMX int8) on this CPU; True where the flags cannot be read (not Linux): the
    per-item check against fp32 still decides there."""
    from audit.embed.device import cpu_flags

    flags = cpu_flags()
    return flags is None or bool(flags & set(VNNI_FLAGS))


def require() -> None:
    if not available():
        raise DependencyMissing("--precision int8 needs onnx and onnxruntime: pip install 'imagegen-audit[int8]'")


def cache_root() -> Path:
    if os.environ.get("AUDIT_CACHE_DIR"):
        return Path(os.environ["AUDIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "audit"


def towers_dir(weights_key: str) -> Path:
    digest = hashlib.sha256(f"{weights_key}|format={FORMAT}".encode()).hexdigest()[:20]
    return cache_root() / "int8" / digest


def _tower(model, method: str):
    """``model.<method>`` as a module of its own, for the exporter."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return getattr(self.m, method)(x)

    return Tower(model)


def _export(module, example, path: Path, input_name: str) -> None:
    import logging
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    # the exporter's tracer warnings and the quantiser's "consider pre-processing" advice
    # (logged on the root logger) say nothing to an auditor
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(max(level, logging.ERROR))
        try:
            fp32, q = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            # Grad on and weights requiring it: otherwise nn.MultiheadAttention takes its fused
            # fast path (aten::_native_multi_head_attention), which has no ONNX export.
            params = [p for p in module.parameters() if not p.requires_grad]
            for p in params:
                p.requires_grad_(True)
            try:
                with torch.enable_grad():
                    # the TorchScript exporter: no onnxscript needed; dynamic batch by dynamic_axes
                    torch.onnx.export(
                        module,
                        (example,),
                        str(fp32),
                        input_names=[input_name],
                        output_names=["features"],
                        dynamic_axes={input_name: {0: "batch"}, "features": {0: "batch"}},
                        opset_version=OPSET,
                        dynamo=False,
                    )
            finally:
                for p in params:
                    p.requires_grad_(False)
            quantize_dynamic(
                str(fp32),
                str(q),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
            os.replace(q, path)
        finally:
            root.setLevel(level)


class Int8Towers:
    """ONNX Runtime sessions of the quantised image and text towers of one model."""

    def __init__(self, folder: Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.folder = folder
        self.image = ort.InferenceSession(str(folder / "image.int8.onnx"), opts, providers=providers)
        self.text = ort.InferenceSession(str(folder / "text.int8.onnx"), opts, providers=providers)
        self._lock = threading.Lock()

    def encode_image(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            return self.image.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0]

    def encode_text(self, tokens: np.ndarray) -> np.ndarray:
        with self._lock:
            return self.text.run(None, {"tokens": np.ascontiguousarray(tokens, dtype=np.int64)})[0]

    @classmethod
    def load_or_export(
        cls, model, weights_key: str, image_size: int, context_length: int, threads: int | None = None
    ) -> "Int8Towers":
        """The cached towers of ``weights_key``, exported from ``model`` (fp32) when missing."""
        require()
        import torch

        folder = towers_dir(weights_key)
        meta = folder / "meta.json"
        if not (meta.exists() and (folder / "image.int8.onnx").exists() and (folder / "text.int8.onnx").exists()):
            folder.mkdir(parents=True, exist_ok=True)
            model = model.float().cpu().eval()
            _export(
                _tower(model, "encode_image"),
                torch.zeros(2, 3, image_size, image_size),
                folder / "image.int8.onnx",
                "pixels",
            )
            _export(
                _tower(model, "encode_text"),
                torch.ones(2, context_length, dtype=torch.long),
                folder / "text.int8.onnx",
                "tokens",
            )
            tmp = folder / ".meta.json.tmp"
            tmp.write_text(json.dumps({"weights": weights_key, "format": FORMAT, "opset": OPSET}))
            os.replace(tmp, meta)  # written last: its presence means both towers are complete
        return cls(folder, threads)


def min_cosines(
    ref_images: np.ndarray, images: np.ndarray, ref_texts: np.ndarray, texts: np.ndarray
) -> tuple[float, float]:
    return (float(np.min(np.sum(ref_images * images, axis=1))), float(np.min(np.sum(ref_texts * texts, axis=1))))


def describe(report: dict[str, Any]) -> str:
    return f"int8 min cosine {min(report.get('min_cosine_image', 0), report.get('min_cosine_text', 0)):.4f}"
