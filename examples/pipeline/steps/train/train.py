"""Train: a nearest-centroid model on the prepared training rows, written to --model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    args = ap.parse_args()
    rows = json.loads((args.data / "train.json").read_text())
    centroids = {}
    for label in sorted({r[2] for r in rows}):
        mine = [r for r in rows if r[2] == label]
        centroids[str(label)] = [sum(r[i] for r in mine) / len(mine) for i in (0, 1)]
    args.model.mkdir(parents=True, exist_ok=True)
    (args.model / "centroids.json").write_text(json.dumps(centroids))
    print(f"trained on {len(rows)} rows: {centroids}")


if __name__ == "__main__":
    main()
