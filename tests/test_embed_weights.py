"""Where weights come from: the Hugging Face cache as open_clip lays it out, offline.

No hub is reachable here, so the "downloaded" weights are random-weight models saved into
a temporary HF cache exactly where ``hf_hub_download`` looks for them
(``$HF_HOME/hub/models--ORG--REPO/snapshots/<commit>/open_clip_model.safetensors`` plus
``refs/main``), with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import audit
from audit.errors import ExitCode
from tests.cli_helper import audit_subprocess
from tests.embed_fixtures import random_toy_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_hf_cache(hf_home: Path, repo_id: str, weights: Path, filename: str = "open_clip_model.safetensors") -> Path:
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo_dir / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    target = snap / filename
    target.write_bytes(weights.read_bytes())
    return target


def _offline_env(hf_home: Path) -> dict:
    """Hugging Face Hub reads these when it is imported: they take effect only in a fresh process,
    which is why the tests below run ``audit`` as a subprocess."""
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
    }


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import open_clip
    from open_clip.pretrained import _PRETRAINED, _pcfg
    from audit.embed.openclip import load_embedder
    from audit.errors import WeightsUnavailable

    # a pretrained tag for the toy architecture, resolved by open_clip like any other tag
    _PRETRAINED["toy-shapes"] = {"hubtest": _pcfg(hf_hub="audit-test/toy-shapes-hub/"),
                                 "missing": _pcfg(hf_hub="audit-test/not-cached/")}
    hub = load_embedder("toy-shapes", "hubtest", precision="fp32")
    local = load_embedder("toy-shapes", None, checkpoint=sys.argv[1], precision="fp32")
    same = float(np.abs(hub.embed_texts(["a red star"]) - local.embed_texts(["a red star"])).max())
    try:
        load_embedder("toy-shapes", "missing", precision="fp32")
        missing = "loaded?!"
    except WeightsUnavailable as exc:
        missing = str(exc)
    print(json.dumps({"key": hub.identity.key, "pretrained": hub.identity.pretrained, "diff": same, "missing": missing}))
    """
)


def test_pretrained_tag_loads_from_the_hf_cache_offline(tmp_path):
    ckpt = random_toy_checkpoint(tmp_path / "toy.safetensors", seed=8)
    hf_home = tmp_path / "hf"
    put_in_hf_cache(hf_home, "audit-test/toy-shapes-hub", ckpt)
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ckpt)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, **_offline_env(hf_home)},
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["key"] == "toy-shapes/hubtest" and out["pretrained"] == "hubtest"
    assert out["diff"] < 1e-6
    assert "--checkpoint" in out["missing"] and "HF_HOME" in out["missing"]


def test_missing_weights_exit_3_with_the_fix(tmp_path):
    audit.open(tmp_path / "idx", create=True)
    r = audit_subprocess("embed", "--index", str(tmp_path / "idx"), env=_offline_env(tmp_path / "empty-hf"))
    assert r.returncode == ExitCode.ENVIRONMENT, (r.returncode, r.stderr)
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("audit: error:") and "ViT-B-32/laion2b_s34b_b79k" in line
    assert "--checkpoint" in line and "HF_HOME" in line


@pytest.mark.slow
def test_default_model_loads_from_a_hub_laid_out_cache(tmp_path):
    """The real default (ViT-B-32 / laion2b_s34b_b79k) resolved through open_clip's tag table
    to laion/CLIP-ViT-B-32-laion2B-s34B-b79K, from a cache holding random fp16 weights."""
    import torch
    from safetensors.torch import save_file

    from audit.embed.openclip import _create
    from tests.embed_fixtures import toy_scene_archive

    model = _create("ViT-B-32", {}, 3)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(weights))
    hf_home = tmp_path / "hf"
    put_in_hf_cache(hf_home, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", weights)
    weights.unlink()
    toy_scene_archive(tmp_path / "src", 4, px=96)
    audit.open(tmp_path / "idx", create=True).crawl([str(tmp_path / "src")], workers=0)
    r = audit_subprocess(
        "embed", "--index", str(tmp_path / "idx"), "--workers", "0", "--json", "--quiet", env=_offline_env(hf_home)
    )
    assert r.returncode == ExitCode.OK, r.stderr
    out = json.loads(r.stdout)
    assert out["model_key"] == "ViT-B-32/laion2b_s34b_b79k" and out["images_embedded"] == 4 and out["dim"] == 512
