"""Prepare: a small two-class dataset (seeded, so the same every time), split into train and
test, written as JSON into the --out directory (PipelineData: the next steps read it)."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows = [
        [rng.gauss(2.0 * label, 1.0), rng.gauss(-1.0 * label, 1.0), label]
        for label in (0, 1)
        for _ in range(200)
    ]
    rng.shuffle(rows)
    cut = int(len(rows) * (1 - args.holdout))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train.json").write_text(json.dumps(rows[:cut]))
    (args.out / "test.json").write_text(json.dumps(rows[cut:]))
    print(f"prepared {cut} training rows and {len(rows) - cut} test rows in {args.out}")


if __name__ == "__main__":
    main()
