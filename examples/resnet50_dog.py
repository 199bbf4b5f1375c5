"""The chapter's first program: recognise a photo with a pretrained ResNet50.

The chapter loads ``keras.applications.ResNet50(weights="imagenet")``, classifies a
dog photo and prints ``decode_predictions``'s top 5 and the inference time. Here
``imgrec.load_model("resnet50")`` finds Keras's weights (a file you name, Keras's
cache, or a download); offline without them it says which file to get and where to
put it, and falls back to MobileNetV2, whose weights come in an offline package.
``imgrec.predict`` preprocesses the photo the way the weights expect, and times the
network after one warm-up call.

    python examples/resnet50_dog.py dog.jpg
    python examples/resnet50_dog.py dog.jpg --weights resnet50_weights_tf_dim_ordering_tf_kernels.h5
    python examples/resnet50_dog.py          # no photo: scikit-image's cat, chelsea
"""

from __future__ import annotations

import argparse
import sys

import imgrec
from imgrec.core.errors import ImgrecError, WeightsError
from imgrec.core.samples import sample_path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="a photo (default: a sample photo of a cat)")
    parser.add_argument("--weights", help="ResNet50's Keras weights file (.h5), if you have it")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)

    image = args.image
    if image is None:
        image = sample_path("chelsea")
        print(f"No photo given: using {image}, a cat (the chapter's photo is a dog).")
    try:
        try:
            model = imgrec.load_model("resnet50", weights=args.weights)
        except WeightsError as err:
            print(f"ResNet50's ImageNet weights are absent here. imgrec says:\n  {err}")
            print("Using MobileNetV2 instead, with the weights of its offline package.")
            model = imgrec.load_model("mobilenet_v2")
        result = imgrec.predict(image, model, top=args.top)[0]
    except ImgrecError as err:
        sys.exit(f"resnet50_dog: {err}")
    if "error" in result:
        sys.exit(f"resnet50_dog: {result['error']}")

    print(f"{result['image']}\n  {result['model']} ({result['weights']})")
    print(f"  inference: {result['time_ms']:.1f} ms ({result['fps']:.1f} images/s)")
    for guess in result["top"]:
        print(f"  {guess['rank']}. {guess['class']:<24} {guess['probability']:7.2%}")


if __name__ == "__main__":
    main()
