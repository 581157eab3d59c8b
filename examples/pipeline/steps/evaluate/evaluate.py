"""Evaluate: the model's accuracy on the test rows, printed and logged as `accuracy`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sortie import Run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    args = ap.parse_args()
    rows = json.loads((args.data / "test.json").read_text())
    centroids = json.loads((args.model / "centroids.json").read_text())

    def predict(x: float, y: float) -> int:
        return int(
            min(centroids, key=lambda k: (centroids[k][0] - x) ** 2 + (centroids[k][1] - y) ** 2)
        )

    right = sum(predict(x, y) == label for x, y, label in rows)
    accuracy = right / len(rows)
    Run.get_context().log("accuracy", accuracy)
    print(f"accuracy {accuracy:.3f} on {len(rows)} test rows")


if __name__ == "__main__":
    main()
