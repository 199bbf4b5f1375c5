"""The fast-cnn recipe in a pure JAX loop: the data on the device, one jitted call an epoch.

Usage (a machine with JAX; imgrec and its pure-Python needs on the path, Keras on JAX):

    KERAS_BACKEND=jax python bench/gpu_fast_cnn.py /path/to/fashion-mnist \\
        [--epochs N] [--batch-size 256] [--seed 0] [--target 0.94] [--widths 32,64,128]

The folder holds Fashion-MNIST's four IDX files (train/t10k images and labels, gzipped
or not); all 60,000 training images train (no validation split). The network is
`create_model("fast-cnn")` with its whitening set by the recipe's `prepare`; the optimizer,
schedule and loss are the ones `compile_classifier` gives the recipe (Keras's SGD with
Nesterov momentum and decoupled weight decay, driven through `stateless_apply`). The
training images and labels go to the device once; each epoch is one call of one compiled
function that shuffles (`jax.random.permutation`), augments each batch on the device (the
recipe's alternating horizontal flip, as `imgrec.training.flips` makes it: each image
mirrored at random in the first epoch and the other way round in every epoch after;
zero-filled shifts when `--augment` asks) and runs every step in `jax.lax.scan`,
BatchNorm's statistics threaded through: no host work between steps. `--widths` and the
ablation flags (`--whiten off`, `--label-smoothing`, `--bn-momentum`, `--logit-scale`,
`--augment`, `--flips random`) change one thing of the recipe each.
The function is compiled ahead of time (`jax.jit(...).lower(...).compile()`), timed apart
as `compile_s`, so every epoch's seconds are training steps only. After each epoch,
untimed, the test set is classified on the device, plain and with flip TTA (mean of the
softmax of each image and its mirror). Progress goes to stderr; one JSON line at the end
goes to stdout: the device, per-epoch seconds, images per second and test accuracy, the
training seconds to the first epoch at or above --target with TTA (null if none), and the
final accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

ARCH = "fast-cnn"
# Test images classified per step of the on-device evaluation.
EVAL_BATCH = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fashion_mnist", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit-per-class", type=int, help="training images a class, for a tiny run"
    )
    parser.add_argument("--test-limit", type=int, help="classify only the first N test images")
    parser.add_argument("--target", type=float, default=0.94, help="TTA test accuracy to time")
    parser.add_argument(
        "--widths",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        help="the three blocks' filters, e.g. 32,64,128 (default: the recipe's 64,128,256)",
    )
    parser.add_argument(
        "--unroll",
        type=int,
        default=1,
        help="steps unrolled in the scan's body (default 1); on CPU, the steps of an epoch: "
        "XLA:CPU runs convolutions in a loop body many times slower (jax-ml/jax#12868)",
    )
    ablation = parser.add_argument_group("ablation: one of the recipe's tricks changed")
    ablation.add_argument(
        "--whiten",
        choices=("frozen", "off"),
        default="frozen",
        help="off: the first convolution is a plain trainable one (Glorot), not set from the "
        "data's patch covariance",
    )
    ablation.add_argument("--label-smoothing", type=float, help="default: the recipe's 0.2")
    ablation.add_argument(
        "--bn-momentum", type=float, help="BatchNorm's momentum (recipe 0.6; Keras 0.99)"
    )
    ablation.add_argument("--logit-scale", type=float, help="recipe 1/8; 1 for none")
    ablation.add_argument(
        "--augment", help="training augmentation spec, e.g. none, flip (default: the recipe's)"
    )
    ablation.add_argument(
        "--flips",
        choices=("alternate", "random"),
        help="random: each image mirrored at random in every epoch (default: the recipe's, "
        "alternate)",
    )
    return parser.parse_args(argv)


def ablate(model: Any, architecture: Any, args: argparse.Namespace) -> Any:
    """Apply the ablation flags to ``model`` (before compiling); return the recipe to use."""
    import dataclasses

    from keras import layers

    changes = {
        key: value
        for key, value in (("label_smoothing", args.label_smoothing), ("augment", args.augment))
        if value is not None
    }
    if args.flips is not None:
        changes["alternate_flips"] = args.flips == "alternate"
    if args.whiten == "off":
        model.get_layer("whiten").trainable = True
        changes["prepare"] = None
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization) and args.bn_momentum is not None:
            layer.momentum = args.bn_momentum
    if args.logit_scale is not None:
        model.get_layer("logit_scale").scale = args.logit_scale
    return dataclasses.replace(architecture, **changes)


def recipe_optimizer(model: Any, architecture: Any, steps_per_epoch: int, epochs: int):
    """Compile ``model`` as ``imgrec train`` does for the recipe; return (optimizer, loss).

    The same ``compile_classifier`` call as ``train_chapter_network``, so the optimizer,
    its schedule (warm-up, cosine) and the loss (label smoothing) are the recipe's. The
    optimizer comes back built for the model's trainable variables.
    """
    import keras

    from imgrec.training.loop import compile_classifier

    compile_classifier(
        model,
        architecture.learning_rate,
        schedule=architecture.lr_schedule,
        weight_decay=architecture.weight_decay,
        total_steps=epochs * steps_per_epoch,
        optimizer=architecture.optimizer,
        warmup_steps=round(architecture.warmup_epochs * steps_per_epoch),
        label_smoothing=architecture.label_smoothing,
    )
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    return optimizer, keras.losses.get(model.loss)


def augmenter(spec: dict[str, Any], image_shape: tuple[int, int, int]):
    """``augment(key, batch, mirrored=None)``: the recipe's flip and shift on a float batch.

    ``mirrored`` says which images of the batch to mirror (alternating flips); without it
    each is mirrored at random.

    ``shift=F`` moves each image by a whole number of pixels up to ``round(F * side)``
    (2 for 0.07 on 28 x 28) in each direction, filling with zeros.

    Raises:
        SystemExit: the spec asks for more than flip and shift.
    """
    import jax
    import jax.numpy as jnp

    unknown = sorted(set(spec) - {"flip", "shift"})
    if unknown:
        sys.exit(f"{ARCH}: this bench does flip and shift on the device, not {unknown}")
    height, width, channels = image_shape
    flip = bool(spec.get("flip"))
    shift = round(spec.get("shift", 0.0) * min(height, width))

    def crop(image, top, left):
        return jax.lax.dynamic_slice(image, (top, left, 0), (height, width, channels))

    def augment(key, x, mirrored=None):
        flip_key, rows_key, columns_key = jax.random.split(key, 3)
        if flip:
            if mirrored is None:
                mirrored = jax.random.bernoulli(flip_key, 0.5, (x.shape[0],))
            x = jnp.where(mirrored[:, None, None, None], x[:, :, ::-1, :], x)
        if shift:
            padded = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
            tops = jax.random.randint(rows_key, (x.shape[0],), 0, 2 * shift + 1)
            lefts = jax.random.randint(columns_key, (x.shape[0],), 0, 2 * shift + 1)
            x = jax.vmap(crop)(padded, tops, lefts)
        return x

    return augment


def make_train_step(model: Any, optimizer: Any, loss_fn: Any, num_classes: int, one_hot: bool):
    """``step(state, (x, labels)) -> (state, loss)``: one SGD step, as Keras's ``fit`` does.

    ``state`` is (trainable, non-trainable, optimizer variables) as lists of arrays; ``x``
    float pixels 0-255, ``labels`` integer classes.
    """
    import jax

    def loss_and_updates(trainable, non_trainable, x, targets):
        probs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(targets, probs).mean(), non_trainable  # a Loss, or a bare function

    gradient = jax.value_and_grad(loss_and_updates, has_aux=True)

    def step(state, batch):
        trainable, non_trainable, optimizer_variables = state
        x, labels = batch
        targets = jax.nn.one_hot(labels, num_classes) if one_hot else labels
        (loss, non_trainable), grads = gradient(trainable, non_trainable, x, targets)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        return (trainable, non_trainable, optimizer_variables), loss

    return step


def alternating_flips(seed: int, count: int, number):
    """Which of ``count`` images epoch ``number`` (from 0) mirrors, alternating.

    The first epoch's flips are drawn from ``seed``'s key folded with 0, a stream of its
    own (``run`` folds in the epochs' numbers from 1); every later epoch mirrors exactly
    the images the epoch before did not (``imgrec.training.flips``, on the device).
    """
    import jax

    first = jax.random.bernoulli(jax.random.fold_in(jax.random.PRNGKey(seed), 0), 0.5, (count,))
    return first ^ (number % 2 == 1)


def make_epoch(
    step,
    batch_size: int,
    steps: int,
    augment=None,
    shuffle: bool = True,
    unroll: int = 1,
    flip_seed: int | None = None,
):
    """``epoch(state, key, images, labels, number=0) -> (state, mean loss)``: a scan of steps.

    Each epoch draws a permutation of the training images (or keeps their order without
    ``shuffle``); when ``steps * batch_size`` is more than the images, the last batch is
    filled up from the start of the same permutation, so every step has ``batch_size``
    images and an epoch has Keras's ``ceil(images / batch_size)`` steps. With a
    ``flip_seed`` the flips alternate (``alternating_flips`` of epoch ``number``, from 0);
    without, ``augment`` mirrors at random.
    """
    import jax
    import jax.numpy as jnp

    def epoch(state, key, images, labels, number=0):
        count = images.shape[0]
        order_key, augment_key = jax.random.split(key)
        order = jax.random.permutation(order_key, count) if shuffle else jnp.arange(count)
        order = jnp.resize(order, (steps * batch_size,)).reshape(steps, batch_size)
        keys = jax.random.split(augment_key, steps)
        flips = None if flip_seed is None else alternating_flips(flip_seed, count, number)

        def body(state, inputs):
            indices, step_key = inputs
            x = images[indices].astype("float32")
            if augment is not None:
                x = augment(step_key, x, None if flips is None else flips[indices])
            return step(state, (x, labels[indices]))

        state, losses = jax.lax.scan(body, state, (order, keys), unroll=unroll)
        return state, losses.mean()

    return epoch


def make_evaluate(model: Any, count: int):
    """``evaluate(trainable, non_trainable, images, labels) -> (correct, correct with TTA)``.

    ``count`` test images, classified ``EVAL_BATCH`` at a time in ``jax.lax.map``; TTA is
    the mean of the softmax of each image and its mirror.
    """
    import jax
    import jax.numpy as jnp

    batch = min(EVAL_BATCH, count)
    batches = -(-count // batch)

    def evaluate(trainable, non_trainable, images, labels):
        padded = jnp.resize(images, (batches * batch, *images.shape[1:]))
        valid = (jnp.arange(batches * batch) < count).reshape(batches, batch)
        truth = jnp.resize(labels, (batches * batch,)).reshape(batches, batch)

        def classify(x):
            x = x.astype("float32")
            plain, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            mirror, _ = model.stateless_call(
                trainable, non_trainable, x[:, :, ::-1, :], training=False
            )
            return plain.argmax(-1), (plain + mirror).argmax(-1)

        plain, tta = jax.lax.map(classify, padded.reshape(batches, batch, *images.shape[1:]))
        return ((plain == truth) & valid).sum(), ((tta == truth) & valid).sum()

    return evaluate


def _state(model: Any, optimizer: Any) -> tuple[list, list, list]:
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )


def _device() -> str:
    import jax

    devices = jax.devices()
    return f"{devices[0].device_kind} ({devices[0]}, 1 of {len(devices)})"


def _relative_change(before: list, after: list) -> float:
    import numpy as np

    pairs = zip(after, before, strict=True)
    moved = sum(float(np.sum((np.asarray(a) - np.asarray(b)) ** 2)) for a, b in pairs)
    size = sum(float(np.sum(np.asarray(b) ** 2)) for b in before)
    return math.sqrt(moved / size)


def setup(args: argparse.Namespace) -> dict[str, Any]:
    """Load the data, build and prepare the network, make the recipe's optimizer."""
    import keras

    from imgrec.datasets import load_dataset
    from imgrec.models.chapter import FAST_CNN_WIDTHS, fast_cnn
    from imgrec.models.registry import create_model, get_model_entry
    from imgrec.training.augment import parse_augment
    from imgrec.training.loop import wants_one_hot
    from imgrec.training.record import steps_per_epoch

    architecture = get_model_entry(ARCH).chapter
    data = load_dataset(
        args.fashion_mnist,
        val_split=0,
        limit_per_class=args.limit_per_class,
        seed=args.seed,
        progress=False,
    )
    keras.utils.set_random_seed(args.seed)
    images = data.train.images
    shape, classes = images.shape[1:], len(data.class_names)
    if args.widths:  # the recipe's network, wider: built by the builder create_model calls
        model = fast_cnn(input_shape=shape, num_classes=classes, widths=args.widths)
    else:
        model = create_model(ARCH, input_shape=shape, num_classes=classes)
    architecture = ablate(model, architecture, args)
    if architecture.prepare is not None:
        architecture.prepare(model, images)
    epochs = args.epochs or architecture.epochs
    batch_size = args.batch_size or architecture.batch_size
    steps = steps_per_epoch(len(images), batch_size)
    optimizer, loss_fn = recipe_optimizer(model, architecture, steps, epochs)
    step = make_train_step(
        model, optimizer, loss_fn, len(data.class_names), one_hot=wants_one_hot(model)
    )
    spec = parse_augment(architecture.augment)
    augment = augmenter(spec, images.shape[1:])
    flip_seed = args.seed if architecture.alternate_flips and spec.get("flip") else None
    test = data.test
    test_count = min(args.test_limit or len(test.labels), len(test.labels))
    return {
        "architecture": architecture,
        "widths": list(args.widths or FAST_CNN_WIDTHS),
        "data": data,
        "model": model,
        "optimizer": optimizer,
        "epochs": epochs,
        "batch_size": batch_size,
        "steps": steps,
        "epoch": make_epoch(
            step, batch_size, steps, augment, unroll=args.unroll, flip_seed=flip_seed
        ),
        "flips": "random" if flip_seed is None else "alternate",
        "evaluate": make_evaluate(model, test_count),
        "test": (test.images[:test_count], test.labels[:test_count]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate as the module's docstring says; return the report."""
    import jax
    import numpy as np

    run_ = setup(args)
    model, data = run_["model"], run_["data"]
    train_x = jax.device_put(np.asarray(data.train.images))
    train_y = jax.device_put(np.asarray(data.train.labels, dtype=np.int32))
    test_x = jax.device_put(np.asarray(run_["test"][0]))
    test_y = jax.device_put(np.asarray(run_["test"][1], dtype=np.int32))
    state = _state(model, run_["optimizer"])
    initial = [np.asarray(v) for v in state[0]]
    key = jax.random.PRNGKey(args.seed)

    started = time.perf_counter()
    number = np.int32(0)  # the epoch's number from 0, traced: one compiled epoch for all
    epoch = jax.jit(run_["epoch"]).lower(state, key, train_x, train_y, number).compile()
    evaluate = jax.jit(run_["evaluate"]).lower(state[0], state[1], test_x, test_y).compile()
    compile_s = time.perf_counter() - started

    count, test_count = len(data.train.labels), len(run_["test"][1])
    epochs, trained_s, time_to_target = [], 0.0, None
    for number in range(1, run_["epochs"] + 1):
        started = time.perf_counter()
        state, loss = epoch(
            state, jax.random.fold_in(key, number), train_x, train_y, np.int32(number - 1)
        )
        loss = float(jax.block_until_ready(loss))
        seconds = time.perf_counter() - started
        trained_s += seconds
        plain, tta = (int(c) / test_count for c in evaluate(state[0], state[1], test_x, test_y))
        if time_to_target is None and tta >= args.target:
            time_to_target = trained_s
        epochs.append(
            {
                "epoch": number,
                "train_s": round(seconds, 4),
                "images_per_s": round(count / seconds, 1),
                "loss": round(loss, 5),
                "test_accuracy": plain,
                "test_accuracy_tta": tta,
            }
        )
        print(json.dumps(epochs[-1]), file=sys.stderr, flush=True)
    return {
        "backend": "jax",
        "device": _device(),
        "arch": ARCH,
        "widths": run_["widths"],
        "ablation": {
            key: getattr(args, key)
            for key in ("whiten", "label_smoothing", "bn_momentum", "logit_scale", "augment")
        },
        "flips": run_["flips"],
        "epochs": run_["epochs"],
        "batch_size": run_["batch_size"],
        "steps_per_epoch": run_["steps"],
        "seed": args.seed,
        "train_images": count,
        "test_images": test_count,
        "compile": "AOT: jax.jit(...).lower(...).compile(), epoch and evaluation",
        "compile_s": round(compile_s, 3),
        "unroll": args.unroll,
        "per_epoch": epochs,
        "train_s": round(trained_s, 4),
        "train_images_per_s": round(count * len(epochs) / trained_s, 1),
        "target": args.target,
        "time_to_target_s": None if time_to_target is None else round(time_to_target, 4),
        "test_accuracy": epochs[-1]["test_accuracy"],
        "test_accuracy_tta": epochs[-1]["test_accuracy_tta"],
        "trainable_change": _relative_change(initial, state[0]),
    }


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv))))


if __name__ == "__main__":
    main()
