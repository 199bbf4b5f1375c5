"""The chapter's dogs-vs-cats CNN with data augmentation, in plain Keras.

Reproduces the chapter's dogs-vs-cats program: 128 x 128 photos, Conv2D 32, MaxPool,
Conv2D 64, MaxPool, Flatten, Dense 512, one sigmoid unit (29,511,617 parameters),
binary cross-entropy, and augmentation. The chapter's ``ImageDataGenerator`` becomes
Keras preprocessing layers at the front of the model: they change images in ``fit``
only. ``imgrec.load_dataset`` reads a folder or Kaggle's or Microsoft's zip as it is,
decodes each photo once, and skips (and lists) the broken JPEGs in Microsoft's zip.

    python examples/dogs_vs_cats.py kagglecatsanddogs_5340.zip --epochs 20
    python examples/dogs_vs_cats.py dogs-vs-cats/train --limit-per-class 1000 --epochs 5
"""

from __future__ import annotations

import argparse
import sys

import keras
from keras import layers

import imgrec
from imgrec.core.errors import ImgrecError


def build_model(size=128) -> keras.Model:
    # The same as imgrec.training.augment.augmentation_layer("flip,rotate=15,zoom=0.1,shift=0.1").
    augmentation = keras.Sequential(
        [
            layers.RandomFlip("horizontal"),  # horizontal_flip=True
            layers.RandomRotation(15 / 360, fill_mode="nearest"),  # rotation_range=15
            layers.RandomZoom(0.1, 0.1, fill_mode="nearest"),  # zoom_range=0.1
            layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),  # width/height_shift
        ],
        name="augmentation",
    )
    return keras.Sequential(
        [
            keras.Input(shape=(size, size, 3)),
            augmentation,
            layers.Rescaling(1 / 255),  # ImageDataGenerator(rescale=1/255)
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(1, activation="sigmoid"),
        ],
        name="dogs_vs_cats_cnn",
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder of cat.N.jpg/dog.N.jpg or Cat/ Dog/, or its zip")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=128, help="height and width")
    parser.add_argument("--limit-per-class", type=int, help="at most this many training images")
    parser.add_argument("--out", default="dogs_vs_cats.keras", help="the .keras file to write")
    args = parser.parse_args(argv)

    size = args.image_size
    try:
        data = imgrec.load_dataset(
            args.data, image_size=(size, size), val_split=0.2, limit_per_class=args.limit_per_class
        )
    except ImgrecError as err:
        sys.exit(f"dogs_vs_cats: {err}")
    print(data.summary())
    for skipped in data.skipped:  # Microsoft's zip has a few empty or damaged JPEGs
        print(f"  skipped {skipped.path}: {skipped.reason}")
    if len(data.class_names) != 2:
        sys.exit(f"dogs_vs_cats: expected 2 classes, found {', '.join(data.class_names)}")
    train, val = data.train, data.val
    test = data.test if data.test is not None else val

    model = build_model(size)
    model.summary()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(
        train.images,
        train.labels,
        batch_size=32,
        epochs=args.epochs,
        validation_data=(val.images, val.labels),
    )
    loss, accuracy = model.evaluate(test.images, test.labels, verbose=0)
    which = "test" if data.test is not None else "validation"
    print(f"{which} loss {loss:.4f}, {which} accuracy {accuracy:.4f}")
    model.save(args.out)
    print(f"saved {args.out} (output: P({data.class_names[1]}))")


if __name__ == "__main__":
    main()
