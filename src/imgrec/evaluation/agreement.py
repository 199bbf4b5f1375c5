"""How well a class-conditioned generator obeys: a trained classifier's verdict per class.

An AC-GAN is asked for a "7"; does it draw one? The measure the AC-GAN paper uses
is a classifier trained on the real data (the chapter's ``mnist-cnn``): generate
``per_class`` images of every class from fresh noise, classify them, and count how
often the classifier names the class that was asked for. Per class, the report
also names the class the others were most often taken for.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import keras

from imgrec.core.errors import ModelError
from imgrec.deploy.export_cache import load_runtime
from imgrec.deploy.runtime import Runtime, predict_probabilities
from imgrec.models import acgan

DEFAULT_PER_CLASS = 100


def generator_agreement(
    generator: str | os.PathLike | keras.Model,
    classifier: str | os.PathLike | keras.Model | Runtime,
    *,
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    runtime: str = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Generate ``per_class`` images of each class and let ``classifier`` name them.

    Args:
        generator: an AC-GAN generator's ``.keras`` file, or the loaded generator.
        classifier: a classifier of the same classes (matched by class name), at the
            generator's image size: a ``.keras`` file, a loaded model, an ``.onnx``
            export or a ``Runtime``.
        per_class: images generated for every class.
        seed: seeds the noise (class ``c`` draws with ``seed + c``).
        runtime: what runs the classifier (see ``imgrec.deploy.export_cache.load_runtime``).
        batch_size: images per forward pass of the classifier.

    Returns:
        ``agreement`` (the fraction of all images classified as asked), ``images``,
        ``per_class`` (per class name: ``asked``, ``agreed``, ``agreement``, and
        ``taken_for``: the class most often named instead, or None), ``seed``.

    Raises:
        ModelError: ``generator`` is not an AC-GAN generator, or the classifier does not
            know one of its classes or takes another image size.
    """
    if per_class < 1:
        raise ModelError(f"per_class={per_class}: at least one image per class")
    generator = acgan.load_generator(generator)
    names = acgan.class_names(generator)
    network = load_runtime(classifier, runtime)
    known = list(network.info.class_names)
    missing = [name for name in names if name not in known]
    if missing:
        raise ModelError(
            f"the classifier knows no class {', '.join(missing)} (its classes: "
            f"{', '.join(known[:12])}{' ...' if len(known) > 12 else ''})"
        )
    if tuple(network.input_shape[-3:]) != acgan.IMAGE_SHAPE:
        raise ModelError(
            f"the classifier takes {network.input_shape[-3:]} images; the generator draws "
            f"{acgan.IMAGE_SHAPE}"
        )
    table: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(names):
        images = acgan.generate(generator, index, per_class, seed=seed + index)
        answers = predict_probabilities(network, images, batch_size).argmax(axis=1)
        said = [known[i] for i in answers]
        others = Counter(answer for answer in said if answer != name).most_common(1)
        agreed = said.count(name)
        table[name] = {
            "asked": per_class,
            "agreed": agreed,
            "agreement": agreed / per_class,
            "taken_for": others[0][0] if others else None,
        }
    total = sum(row["agreed"] for row in table.values())
    images = per_class * len(names)
    return {"agreement": total / images, "images": images, "per_class": table, "seed": seed}


def agreement_table(result: dict[str, Any]) -> str:
    """``generator_agreement``'s result as a Markdown table (one row per class, then all)."""
    lines = ["| class | asked | classified as asked | agreement | most often taken for |",
             "|---|---:|---:|---:|---|"]  # fmt: skip
    for name, row in result["per_class"].items():
        lines.append(
            f"| {name} | {row['asked']} | {row['agreed']} | {row['agreement']:.1%} | "
            f"{row['taken_for'] or '-'} |"
        )
    total = sum(row["agreed"] for row in result["per_class"].values())
    lines.append(f"| all | {result['images']} | {total} | {result['agreement']:.1%} | |")
    return "\n".join(lines)
