"""Train an SVM on scikit-learn's bundled digits dataset (no download) and log its accuracy.

Runs the same under Sortie and with plain ``python train.py``:

    python train.py --C 10 --gamma 0.001
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from sortie import Run


def gamma_value(text: str) -> float | str:
    """``--gamma`` takes 'scale', 'auto' or a positive number."""
    if text in ("scale", "auto"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"gamma must be 'scale', 'auto' or a number, not {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("gamma must be positive")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=float, default=1.0, help="SVM regularisation (default 1.0)")
    parser.add_argument("--gamma", type=gamma_value, default="scale", help="RBF kernel gamma")
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    run = Run.get_context()
    outputs = Path(run.outputs_dir)  # "outputs", or where the agent collects artifacts
    outputs.mkdir(parents=True, exist_ok=True)

    print(f"loading digits dataset (C={args.C}, gamma={args.gamma})", flush=True)
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data,
        digits.target,
        test_size=args.test_size,
        random_state=args.seed,
        stratify=digits.target,
    )
    print(f"training on {len(x_train)} images, testing on {len(x_test)}", flush=True)

    started = time.perf_counter()
    model = SVC(C=args.C, gamma=args.gamma)
    model.fit(x_train, y_train)
    train_s = time.perf_counter() - started
    accuracy = float(accuracy_score(y_test, model.predict(x_test)))
    print(f"trained in {train_s:.2f}s; test accuracy {accuracy:.4f}", flush=True)

    run.log("C", args.C)
    run.log("gamma", str(args.gamma))
    run.log("n_train", len(x_train))
    run.log("train_seconds", round(train_s, 3))
    run.log("accuracy", accuracy)

    with open(outputs / "model.pkl", "wb") as fh:
        pickle.dump(model, fh)
    metrics = {
        "accuracy": accuracy,
        "C": args.C,
        "gamma": args.gamma,
        "n_train": len(x_train),
        "n_test": len(x_test),
        "train_seconds": round(train_s, 3),
    }
    (outputs / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {outputs / 'model.pkl'} and {outputs / 'metrics.json'}", flush=True)


if __name__ == "__main__":
    main()
