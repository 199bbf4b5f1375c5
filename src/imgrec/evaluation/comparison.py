"""A CNN and a traditional pipeline, trained and tested on the same split, side by side.

``compare`` loads the data set once and gives the same ``Dataset`` (same split, same
seed) to ``imgrec.train`` and to ``classic_train``, then measures both models on the
same held-out images: the test split, or the validation split when there is none.
It writes the numbers as JSON and as a Markdown table, and bar charts as PNGs.

What is measured, for each model:

- accuracy and macro F1 on the held-out images (``classification_metrics``, as
  ``imgrec evaluate`` computes them);
- training time: the wall-clock time of the training call, which includes what each
  method needs to train (the CNN's epochs with their validation passes and
  checkpoints; the pipeline's feature extraction, fit, validation and saving);
- inference speed: held-out images per second, from uint8 images in memory to class
  scores (the pipeline's features included), after one warm-up batch, which for the
  CNN compiles the forward pass. The CNN runs on Keras, where it was trained.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgrec.classic.pipeline import classic_train, load_classic
from imgrec.classic.spec import PipelineSpec, parse_spec
from imgrec.core.errors import DatasetError, ImgrecError
from imgrec.core.plots import plot_bars
from imgrec.core.storage import write_bytes_atomic
from imgrec.datasets import Dataset, Split, evaluation_split, load_dataset
from imgrec.evaluation.report import classification_metrics, predict_probabilities

WARM_UP_IMAGES = 32
INFERENCE_BATCH = 256


def compare(
    dataset: str | os.PathLike | Dataset,
    *,
    cnn: str = "cifar-cnn",
    classic: str = "hog+svm",
    out: str | os.PathLike = "compare",
    epochs: int | None = None,
    batch_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    val_split: float | None = None,
    limit_per_class: int | None = None,
    seed: int | None = None,
    jobs: int | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Train ``cnn`` and the ``classic`` pipeline on one split of ``dataset``; compare them.

    Args:
        dataset: a data set name or path (see ``imgrec datasets``), or a loaded one.
        cnn: what ``imgrec.train`` trains: one of the chapter's networks (``cifar-cnn``,
            ``mnist-cnn``, ``vgg-bn``...) or a zoo network for transfer learning.
        classic: a pipeline spec, ``FEATURES+CLASSIFIER`` or
            ``FEATURES+SELECTION+CLASSIFIER``, such as ``hog+svm`` or
            ``hog,lbp+pca:100+svm:C=10`` (see ``imgrec.classic.spec``).
        out: the folder for ``cnn.keras``, ``classic.joblib``, ``compare.json``,
            ``compare.md`` and the charts ``accuracy.png``, ``training_time.png`` and
            ``inference_speed.png``.
        epochs: for the CNN (default: its recipe).
        batch_size: for the CNN (default 64).
        image_size: (height, width) for photos (default: the CNN's input size); array
            data sets keep their own size unless this is given.
        val_split: the fraction held out for validation, as for ``imgrec.train``
            (default 0.1).
        limit_per_class: keep at most this many training images per class (default:
            all).
        seed: seeds the split (default 0).
        jobs: processes for the pipeline's feature extraction (default: one per core).
        verbose: 0 silent; 1 progress bars and Keras's per-epoch output.

    Returns:
        ``dataset`` (summary), ``split`` and ``images`` (what both were tested on),
        ``rows`` (one per model: ``model``, ``kind``, ``accuracy``, ``macro_f1``,
        ``train_seconds``, ``images_per_second``, ``file``), and the paths written.

    Raises:
        SpecError: a bad ``classic`` spec (checked before anything is trained).
        DatasetError: the data set cannot be read, or has no held-out images.
        ModelError: an unknown ``cnn``.
    """
    from imgrec.training.fit import train

    spec = parse_spec(classic)
    out = Path(out)
    split = {
        "val_split": 0.1 if val_split is None else val_split,
        "limit_per_class": limit_per_class,
        "seed": seed or 0,
    }
    if not isinstance(dataset, Dataset):
        size = _cnn_input_size(cnn)
        dataset = load_dataset(
            dataset, image_size=image_size, default_image_size=size, progress=verbose > 0, **split
        )
    split_name, held_out = _held_out(dataset)
    recipe = {"epochs": epochs, "batch_size": batch_size, "image_size": image_size}
    start = time.perf_counter()
    trained = train(dataset, cnn, out=out / "cnn.keras", verbose=verbose, **recipe, **split)
    cnn_seconds = time.perf_counter() - start
    if trained["model"] is None:
        raise ImgrecError(f"{cnn}: training stopped before its first epoch; nothing to compare")
    start = time.perf_counter()
    _train_classic(dataset, spec, out / "classic.joblib", jobs=jobs, verbose=verbose, **split)
    classic_seconds = time.perf_counter() - start
    models = [
        (cnn, "cnn", trained["model"], cnn_seconds),
        (classic, "classic", str(out / "classic.joblib"), classic_seconds),
    ]
    result = {"dataset": dataset.summary(), "split": split_name, "images": len(held_out)}
    result["rows"] = _measure_all(models, held_out, dataset.class_names, jobs=jobs)
    return result | _write(out, result)


def _train_classic(
    dataset: Dataset,
    spec: PipelineSpec,
    out: Path,
    *,
    val_split: float,
    limit_per_class: int | None,
    seed: int,
    jobs: int | None,
    verbose: int,
) -> None:
    """Train the pipeline ``spec`` on ``dataset`` with ``classic_train``; save it to ``out``."""
    classic_train(
        dataset,
        features=",".join(str(part) for part in spec.features),
        select=str(spec.select),
        classifier=str(spec.classifier),
        out=out,
        val_split=val_split,
        limit_per_class=limit_per_class,
        seed=seed,
        jobs=jobs,
        progress=verbose > 0,
    )


def _measure_all(
    models: list[tuple[str, str, str, float]],
    held_out: Split,
    class_names: tuple[str, ...],
    *,
    jobs: int | None,
) -> list[dict[str, Any]]:
    """Load each trained model and measure it on ``held_out``: one row each.

    ``models`` holds (name, kind, file, training seconds), kind ``"cnn"`` or ``"classic"``.
    """
    rows = []
    for name, kind, file, train_seconds in models:
        scores = _scorer(kind, file, jobs)
        rows.append(_measure(name, kind, scores, held_out, class_names, train_seconds, file))
    return rows


def _scorer(kind: str, file: str, jobs: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """Class scores for uint8 images from the model in ``file`` (a CNN, or a pipeline)."""
    if kind == "classic":
        pipeline = load_classic(file)
        return lambda images: pipeline.predict_proba(images, jobs=jobs)
    from imgrec.models.loading import load_model

    network = load_model(file)
    return lambda images: predict_probabilities(network, images, INFERENCE_BATCH)


def _cnn_input_size(cnn: str) -> tuple[int, int]:
    from imgrec.models.registry import get_model_entry

    return get_model_entry(cnn).input_size


def _held_out(dataset: Dataset) -> tuple[str, Split]:
    """The split both models are tested on: the test split, else the validation split."""
    try:
        return evaluation_split(dataset)
    except DatasetError as err:
        raise DatasetError(
            f"{dataset.name}: no test or validation images to compare on; give a --val-split"
        ) from err


def _measure(
    name: str,
    kind: str,
    scores: Callable[[np.ndarray], np.ndarray],
    split: Split,
    class_names: tuple[str, ...],
    train_seconds: float,
    file: str,
) -> dict[str, Any]:
    images = np.asarray(split.images)
    scores(images[:WARM_UP_IMAGES])
    start = time.perf_counter()
    probabilities = scores(images)
    seconds = time.perf_counter() - start
    metrics = classification_metrics(split.labels, probabilities, class_names, top_k=1)
    return {
        "model": name,
        "kind": kind,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "train_seconds": train_seconds,
        "images_per_second": len(images) / seconds,
        "file": file,
    }


def _write(out: Path, result: dict[str, Any]) -> dict[str, str]:
    rows = result["rows"]
    names = [row["model"] for row in rows]
    held_out = f"{result['images']:,} {result['split']} images"
    paths = {
        "json": out / "compare.json",
        "markdown": out / "compare.md",
        "accuracy_png": out / "accuracy.png",
        "training_time_png": out / "training_time.png",
        "inference_speed_png": out / "inference_speed.png",
    }
    plot_bars(
        names,
        [100 * row["accuracy"] for row in rows],
        paths["accuracy_png"],
        xlabel="accuracy (%)",
        title=f"accuracy on {held_out}",
    )
    plot_bars(
        names,
        [row["train_seconds"] for row in rows],
        paths["training_time_png"],
        xlabel="seconds",
        title="training time",
    )
    plot_bars(
        names,
        [row["images_per_second"] for row in rows],
        paths["inference_speed_png"],
        xlabel="images per second",
        title="inference speed",
    )
    written = {key: str(path) for key, path in paths.items()}
    write_bytes_atomic(paths["markdown"], markdown_table(result).encode())
    write_bytes_atomic(paths["json"], json.dumps(result | written, indent=1).encode())
    return written


def markdown_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table, with a line saying what it was measured on."""
    lines = [
        f"Tested on {result['images']:,} {result['split']} images of "
        f"{result['dataset'].splitlines()[0]}.",
        "",
        "| model | kind | accuracy | macro F1 | training time (s) | inference (images/s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| `{row['model']}` | {row['kind']} | {row['accuracy']:.2%} | "
            f"{row['macro_f1']:.4f} | {row['train_seconds']:,.1f} | "
            f"{row['images_per_second']:,.0f} |"
        )
    return "\n".join(lines) + "\n"
