"""Time to accuracy: how soon each recipe's validation accuracy passes 90, 92, 93, 94 %.

Usage: python bench/time_to_accuracy.py [DATASET] [--recipes cifar-cnn,vgg-bn,fast-cnn]
           [--budget MINUTES] [--seed 0] [--limit-per-class N] [--epochs N] [--json FILE]

Each recipe trains in this process, one after another, as its README command does
(`imgrec train fashion-mnist --arch ARCH`, with `--batch-size 128 --augment flip` for
`vgg-bn`), with the same seed and so the same validation split: 10 % of the training
images (`fast-cnn`, which by default trains on all of them where there is a test split,
holds out the same 10 % here, so that its times can be measured). After each epoch a
callback notes the wall time since the first step (validation included) and the
validation accuracy. A recipe still training after --budget minutes (default 15) stops
at the end of that epoch, and the table says so. The best model (lowest validation loss)
is then evaluated on the data set's own test split with `imgrec.evaluate`, which applies
the test-time augmentation the model records.

The first recipe is the baseline: the last column is its time to the highest threshold
both reached, over the recipe's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

THRESHOLDS = (0.90, 0.92, 0.93, 0.94)
# Every recipe holds out this much of the training images, to time validation accuracy.
VAL_SPLIT = 0.1
# What the README's command for each recipe adds to `imgrec train DATASET --arch ARCH`.
RECIPES = {
    "cifar-cnn": {},
    "vgg-bn": {"batch_size": 128, "augment": "flip"},
    "fast-cnn": {},
}


def epoch_clock(budget_seconds: float):
    """A Keras callback: each epoch's (seconds since the first step, validation accuracy)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[tuple[float, float]] = []

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            self.epochs.append((seconds, float(logs["val_accuracy"])))
            if seconds >= budget_seconds:
                self.model.stop_training = True

    return EpochClock()


def time_to(epochs: list[tuple[float, float]], threshold: float) -> float | None:
    """The seconds at the end of the first epoch whose accuracy reached ``threshold``."""
    return next((seconds for seconds, accuracy in epochs if accuracy >= threshold), None)


def run_recipe(arch: str, args: argparse.Namespace, folder: Path) -> dict:
    import imgrec

    clock = epoch_clock(args.budget * 60)
    options = RECIPES.get(arch, {}) | ({"epochs": args.epochs} if args.epochs else {})
    result = imgrec.train(
        args.dataset, arch, out=folder / f"{arch}.keras", seed=args.seed, val_split=VAL_SPLIT,
        limit_per_class=args.limit_per_class, patience=0, verbose=0, callbacks=[clock],
        **options,
    )  # fmt: skip
    test = imgrec.evaluate(result["model"], args.dataset)
    return {
        "recipe": arch,
        "options": options,
        "epochs_done": result["epochs_done"],
        "epochs_asked": result["epochs_asked"],
        "stopped_by_budget": result["epochs_done"] < result["epochs_asked"],
        "epochs": clock.epochs,
        "time_to": {f"{t:.0%}": time_to(clock.epochs, t) for t in THRESHOLDS},
        "best_val_accuracy": result["best_val_accuracy"],
        "test_accuracy": test["accuracy"],
        "test_split": test["split"],
        "train_seconds": result["seconds"],
        "precision": result["precision"],
    }


def speed_up(baseline: dict, row: dict) -> str:
    """Baseline's time to the highest threshold both reached, over the row's."""
    for key in reversed(list(baseline["time_to"])):
        if baseline["time_to"][key] is not None and row["time_to"][key] is not None:
            return f"{baseline['time_to'][key] / row['time_to'][key]:.1f}x at {key}"
    return "-"


def table(rows: list[dict]) -> str:
    heads = [f"to {t:.0%}" for t in THRESHOLDS]
    lines = [
        "| recipe | " + " | ".join(heads) + " | epochs | test accuracy | vs first |",
        "| --- | " + " | ".join("---:" for _ in heads) + " | ---: | ---: | ---: |",
    ]
    for row in rows:
        times = ["-" if s is None else f"{s / 60:.1f} min" for s in row["time_to"].values()]
        epochs = f"{row['epochs_done']}/{row['epochs_asked']}"
        epochs += " (budget)" if row["stopped_by_budget"] else ""
        arithmetic = ", bfloat16" if row.get("precision") == "bfloat16" else ""
        lines.append(
            f"| `{row['recipe']}`{arithmetic} | " + " | ".join(times)
            + f" | {epochs} | {row['test_accuracy']:.2%} | {speed_up(rows[0], row)} |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="fashion-mnist")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--budget", type=float, default=15.0, help="minutes per recipe")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-per-class", type=int, help="for a quick smoke run")
    parser.add_argument("--epochs", type=int, help="instead of each recipe's own")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    print(f"{args.dataset}, seed {args.seed}, budget {args.budget:g} min; {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for arch in args.recipes.split(","):
            rows.append(run_recipe(arch, args, Path(folder)))
            print(f"{arch}: {rows[-1]['test_accuracy']:.2%} test", flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
