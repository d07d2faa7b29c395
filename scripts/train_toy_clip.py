#!/usr/bin/env python
"""Train the toy-world CLIP ``toy-shapes``; see ``audit/embed/train_toy.py``.

    python scripts/train_toy_clip.py --steps 6000 --batch-size 64 --warmup 100 --threads 1 --max-minutes 17 \
        --out audit/embed/weights/toy-shapes.safetensors --seed 0
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.embed.train_toy import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
