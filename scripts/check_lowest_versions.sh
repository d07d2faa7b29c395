#!/usr/bin/env bash
# Install audit with every direct dependency at its floor (constraints/lowest.txt) in a fresh
# virtual environment, then import it and run a few test files that touch each dependency.
# Usage: scripts/check_lowest_versions.sh [--floors-only] [VENV_DIR]   (default: a new temporary folder)
# --floors-only: only check that constraints/lowest.txt states pyproject.toml's floors (CI runs this;
# the full install downloads torch 2.4, several GB, so it runs by hand before a release).
# Needs a Python 3.11 on PATH as python3.11 (or $PYTHON) and the network to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
FLOORS_ONLY=0
if [ "${1:-}" = "--floors-only" ]; then FLOORS_ONLY=1; shift; fi
VENV=${1:-$(mktemp -d /tmp/audit-lowest.XXXXXX)}
start=$(date +%s)

# The constraints must say exactly the floors of pyproject.toml, or this proves nothing.
"$PY" - <<'PYCODE'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
def release(v):  # "2.0.0" and "2.0" are the same floor
    parts = v.split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)
floors = {}
for d in deps:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([^,;\s]+)", d.split(";")[0].strip())
    if not m:
        sys.exit(f"dependency without a plain floor: {d!r}")
    floors[re.sub(r"[-_.]+", "-", m[1]).lower()] = release(m[2])
pins = {}
for line in open("constraints/lowest.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        pins[re.sub(r"[-_.]+", "-", name).lower()] = release(version.strip())
if floors != pins:
    diff = sorted(set(floors.items()) ^ set(pins.items()))
    sys.exit(f"constraints/lowest.txt and pyproject.toml floors differ: {diff}")
print(f"{len(pins)} floors agree with constraints/lowest.txt")
PYCODE
[ "$FLOORS_ONLY" = 1 ] && exit 0

"$PY" -m venv "$VENV"
# PIP_CONSTRAINT replaces any machine-wide constraint file with ours.
export PIP_CONSTRAINT="$PWD/constraints/lowest.txt"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e . "pytest>=8" "pytest-timeout>=2.2" "psutil>=5.9"
"$VENV/bin/python" -m pip check
"$VENV/bin/python" - <<'PYCODE'
import importlib.metadata as md
for name in ["numpy", "scipy", "torch", "faiss-cpu", "polars", "pyarrow", "open_clip_torch", "pdqhash"]:
    print(f"{name}=={md.version(name)}")
import audit, audit.cli.app, faiss, numpy, open_clip, polars, scipy.sparse, torch  # noqa: E401,F401
print("audit", audit.__version__, "imports with the lowest versions")
PYCODE
"$VENV/bin/python" -m pytest -q -x -p no:cacheprovider \
    tests/test_cluster.py tests/test_policy_rules.py tests/test_frames.py tests/test_index_build.py \
    tests/test_toy_model.py tests/test_crawl.py tests/test_embed.py tests/test_search.py tests/test_report.py \
    tests/test_policy_loader.py tests/test_cli_options.py tests/test_cli_help.py -k "not browser"
echo "lowest versions: installed and tested in $(( $(date +%s) - start )) s ($VENV)"
