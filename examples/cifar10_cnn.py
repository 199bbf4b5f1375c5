"""The chapter's CIFAR-10 CNN in plain Keras: build, train, evaluate, save, reload, predict.

Reproduces the chapter's CIFAR-10 program: two convolutions and a Dense 80 layer
(453,786 parameters) trained on 32 x 32 colour photos in 10 classes. Keras's
``keras.datasets.cifar10.load_data()`` needs the internet; ``imgrec.load_dataset``
reads the CIFAR-10 "python version" tarball (or its folder) offline, without
unpickling anything that could run code, and finds it in ``~/.keras/datasets`` by name.

    python examples/cifar10_cnn.py                       # ~/.keras/datasets/cifar-10-...
    python examples/cifar10_cnn.py cifar-10-python.tar.gz --epochs 10
    python examples/cifar10_cnn.py --limit-per-class 500 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import sys

import keras
from keras import layers

import imgrec
from imgrec.core.errors import ImgrecError


def build_model(input_shape=(32, 32, 3), num_classes=10) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Rescaling(1 / 255),  # the chapter divides x_train by 255 instead
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(80, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="cifar10_cnn",
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data", nargs="?", default="cifar10", help="'cifar10', or the tarball or its folder"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit-per-class", type=int, help="at most this many training images")
    parser.add_argument("--out", default="cifar10_cnn.keras", help="the .keras file to write")
    args = parser.parse_args(argv)

    try:  # uint8 arrays: x (N, 32, 32, 3) and integer labels y (N,)
        data = imgrec.load_dataset(args.data, val_split=0.1, limit_per_class=args.limit_per_class)
    except ImgrecError as err:
        sys.exit(f"cifar10_cnn: {err}")
    print(data.summary())
    train, val = data.train, data.val
    test = data.test if data.test is not None else val

    model = build_model(train.images.shape[1:], len(data.class_names))
    model.summary()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        train.images,
        train.labels,
        batch_size=64,
        epochs=args.epochs,
        validation_data=(val.images, val.labels) if val is not None else None,
    )
    loss, accuracy = model.evaluate(test.images, test.labels, verbose=0)
    print(f"test loss {loss:.4f}, test accuracy {accuracy:.4f}")
    model.save(args.out)
    print(f"saved {args.out}")

    # Load it back as anyone would (safe_mode refuses Lambda layers' code) and predict.
    restored = keras.saving.load_model(args.out, safe_mode=True)
    probabilities = restored.predict(test.images[:5], verbose=0)
    for truth, p in zip(test.labels[:5], probabilities, strict=True):
        guess = data.class_names[p.argmax()]
        print(f"  predicted {guess:<12} {p.max():6.1%}   true {data.class_names[truth]}")


if __name__ == "__main__":
    main()
