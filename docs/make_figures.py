"""Make every picture in docs/figures from real runs of imgrec.

    python docs/make_figures.py                          # all of them, into docs/figures
    python docs/make_figures.py --only cam --only zoo    # some of them
    python docs/make_figures.py --out /tmp/figures --list

Each entry of ``FIGURES`` runs imgrec's own API (the functions behind the command in
its ``command``) in a scratch folder and keeps the PNGs that imgrec drew: the CAM
overlay of ``imgrec explain``, the grid of ``imgrec augment``, the curves and the
confusion matrix that ``imgrec train`` and ``imgrec evaluate --report`` write, the
charts of ``imgrec compare``; the two charts made here call imgrec's own
``plot_bars``; the screenshots are taken by Playwright in Debian's Chromium
(/usr/bin/chromium) from a real ``imgrec serve``. No picture is drawn by hand.

Every PNG is made smaller for the docs (at most ``MAX_WIDTH`` pixels wide, and
quantized to 256 colours when it is still over ``MAX_BYTES``), written atomically, and
printed with its size and the command that made it. ``tests/test_figures.py`` checks
that every PNG in docs/figures is named in ``FIGURES``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "figures"
MAX_WIDTH = 1100  # pixels; wider pictures are scaled down
MAX_BYTES = 150_000  # above this a picture is quantized to 256 colours, then fewer
CHROMIUM = "/usr/bin/chromium"
AUGMENT_SPEC = "flip,rotate=15,zoom=0.1,brightness=0.2"
DIGITS_EPOCHS = 20
LAYER = "block_6_expand_relu"  # the layer whose feature maps the screenshot shows


@dataclass(frozen=True)
class Figure:
    """One entry: the PNGs it makes, the command a reader runs for the same, the maker.

    ``make(work)`` runs in the empty folder ``work`` and returns, for each name in
    ``files``, the PNG imgrec wrote for it there, and a line of what the run measured.
    """

    files: tuple[str, ...]
    command: str
    make: Callable[[Path], tuple[dict[str, Path], str]]
    needs: str = ""  # a system part without which the entry cannot run
    width: int = MAX_WIDTH  # wider PNGs are scaled down to this


def _chelsea() -> Path:
    from imgrec.core.samples import sample_path

    return sample_path("chelsea")


def make_cam(work: Path) -> tuple[dict[str, Path], str]:
    import imgrec

    result = imgrec.explain("mobilenet_v2", _chelsea(), method="gradcam", out=work / "cam.png")
    note = f"{result['class']} {result['probability']:.2%}, {result['method']} on {result['layer']}"
    return {"cam-chelsea.png": Path(result["overlay_png"])}, note


def make_augment(work: Path) -> tuple[dict[str, Path], str]:
    from imgrec.training.augment import augment_grid

    path = augment_grid(_chelsea(), AUGMENT_SPEC, work / "augment.png", count=8, seed=0)
    return {"augment-chelsea.png": path}, f"8 pictures, {AUGMENT_SPEC}, seed 0"


def make_training(work: Path) -> tuple[dict[str, Path], str]:
    import imgrec

    model = work / "digits.keras"
    trained = imgrec.train(
        "digits", "cifar-cnn", out=model, epochs=DIGITS_EPOCHS, patience=DIGITS_EPOCHS, verbose=0
    )
    report = imgrec.evaluate(model, "digits", report=work / "report")
    note = (
        f"{trained['epochs_done']} epochs, "
        f"test accuracy {report['accuracy']:.2%} on {report['images']} images"
    )
    return {
        "digits-curves.png": Path(trained["curves"]),
        "digits-confusion.png": work / "report" / "confusion_matrix.png",
    }, note


def _imgrec(work: Path, command: str) -> str:
    """Run ``imgrec`` (this interpreter's) in ``work`` with ``command``; return what it printed.

    Raises:
        RuntimeError: the command failed; its output is in the message.
    """
    result = subprocess.run(
        [sys.executable, "-m", "imgrec", *command.split()],
        cwd=work,
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"imgrec {command} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


COMPARE = (
    f"compare digits --cnn cifar-cnn --classic hog+svm --epochs {DIGITS_EPOCHS} --out cmp/ --quiet"
)
TRANSFER = (
    "train digits --arch mobilenet_v2 --transfer head --image-size 96 --epochs 10 "
    "--patience 10 --out digits-head.keras"
)


def make_compare(work: Path) -> tuple[dict[str, Path], str]:
    printed = _imgrec(work, COMPARE)
    return {
        "compare-accuracy.png": work / "cmp" / "accuracy.png",
        "compare-training-time.png": work / "cmp" / "training_time.png",
        "compare-inference-speed.png": work / "cmp" / "inference_speed.png",
    }, "imgrec printed:\n" + printed


def make_transfer(work: Path) -> tuple[dict[str, Path], str]:
    printed = _imgrec(work, TRANSFER + " --quiet")
    evaluated = _imgrec(work, "evaluate digits-head.keras digits --quiet")
    return {"digits-transfer-curves.png": work / "digits-head.curves.png"}, (
        "imgrec printed:\n" + printed + evaluated
    )


def make_zoo(work: Path) -> tuple[dict[str, Path], str]:
    from imgrec.core.plots import plot_bars
    from imgrec.models.zoo import ZOO

    labels = [f"{entry.display_name} ({entry.size_mb} MB)" for entry in ZOO]
    values = [float(entry.top1) for entry in ZOO]
    path = plot_bars(
        labels,
        values,
        work / "zoo.png",
        xlabel="ImageNet top-1 accuracy (%), published",
        title="Keras Applications: top-1 accuracy and size",
    )
    return {"zoo-top1.png": path}, f"{len(ZOO)} networks"


def make_example1(work: Path) -> tuple[dict[str, Path], str]:
    import imgrec
    from imgrec.core.plots import plot_bars

    result = imgrec.predict(_chelsea(), model="mobilenet_v2", top=5)[0]
    top = result["top"]
    path = plot_bars(
        [row["class"] for row in top],
        [100 * row["probability"] for row in top],
        work / "top5.png",
        xlabel="probability (%)",
        title="MobileNetV2 on chelsea.png: top 5",
    )
    return {"example1-top5.png": path}, ", ".join(
        f"{row['class']} {row['probability']:.2%}" for row in top
    )


def make_screenshots(work: Path) -> tuple[dict[str, Path], str]:
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen(
        [sys.executable, "-m", "imgrec", "serve", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        url = json.loads(server.stdout.readline())["url"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                page.wait_for_selector("#model:not([disabled])", timeout=300_000)
                page.click('#samples button[data-sample="chelsea"]')
                page.wait_for_selector('#main[data-analysis="done"]', timeout=300_000)
                classes = page.locator("#top li .name").all_text_contents()
                page.screenshot(path=work / "page.png", full_page=False)

                row = page.locator(f'#layers tbody tr.spatial[data-layer="{LAYER}"]')
                layer = row.get_attribute("data-layer")
                row.click()
                page.mouse.move(0, 0)  # no row highlighted by the pointer
                page.wait_for_selector("#activations img", timeout=300_000)
                page.wait_for_function(
                    "() => Array.from(document.querySelectorAll('#activations img'))"
                    ".every(img => img.complete)",
                    timeout=60_000,
                )
                page.locator("#layer-panel").screenshot(path=work / "layers.png")
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {
        "page-imagenet.png": work / "page.png",
        "page-layers.png": work / "layers.png",
    }, f"top class {classes[0]}; feature maps of {layer}"


FIGURES: dict[str, Figure] = {
    "cam": Figure(
        ("cam-chelsea.png",),
        "imgrec explain mobilenet_v2 chelsea.png --out cam.png",
        make_cam,
    ),
    "augment": Figure(
        ("augment-chelsea.png",),
        f"imgrec augment chelsea.png --augment {AUGMENT_SPEC} --count 8 --out augment.png",
        make_augment,
        width=640,
    ),
    "training": Figure(
        ("digits-curves.png", "digits-confusion.png"),
        f"imgrec train digits --arch cifar-cnn --epochs {DIGITS_EPOCHS} "
        f"--patience {DIGITS_EPOCHS} --out digits.keras; "
        "imgrec evaluate digits.keras digits --report report/",
        make_training,
    ),
    "compare": Figure(
        ("compare-accuracy.png", "compare-training-time.png", "compare-inference-speed.png"),
        f"imgrec {COMPARE}",
        make_compare,
    ),
    "transfer": Figure(
        ("digits-transfer-curves.png",),
        f"imgrec {TRANSFER}; imgrec evaluate digits-head.keras digits",
        make_transfer,
    ),
    "zoo": Figure(
        ("zoo-top1.png",),
        "imgrec zoo (its Size and Top-1 columns, drawn with imgrec.core.plots.plot_bars)",
        make_zoo,
    ),
    "example1": Figure(
        ("example1-top5.png",),
        "imgrec predict chelsea.png --top 5 (drawn with imgrec.core.plots.plot_bars)",
        make_example1,
    ),
    "screenshots": Figure(
        ("page-imagenet.png", "page-layers.png"),
        f"imgrec serve, then Playwright in Chromium: the chelsea sample, then the row of {LAYER}",
        make_screenshots,
        needs=CHROMIUM,
    ),
}


def all_files() -> dict[str, str]:
    """Every PNG the script makes -> the entry that makes it."""
    return {name: key for key, figure in FIGURES.items() for name in figure.files}


def compact_png(data: bytes, width: int = MAX_WIDTH) -> bytes:
    """The PNG at most ``width`` wide; quantized (256, 128, then 64 colours) while large."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA")
    if image.width > width:
        height = round(image.height * width / image.width)
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    if image.mode == "RGBA":  # matplotlib and Chromium draw opaque pictures
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    for colours in (256, 128, 64):
        if buffer.tell() <= MAX_BYTES or image.mode == "L":
            break
        buffer = io.BytesIO()
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(
            buffer, format="PNG", optimize=True
        )
    return buffer.getvalue()


def make(key: str, out: Path) -> list[Path]:
    """Run the entry ``key`` and write its PNGs into ``out``; return their paths."""
    from imgrec.core.storage import write_bytes_atomic

    figure = FIGURES[key]
    with tempfile.TemporaryDirectory(prefix=f"figure-{key}-") as scratch:
        start = time.perf_counter()
        made, note = figure.make(Path(scratch))
        seconds = time.perf_counter() - start
        if sorted(made) != sorted(figure.files):
            raise RuntimeError(f"{key} made {sorted(made)}, expected {sorted(figure.files)}")
        written = []
        for name in figure.files:
            target = out / name
            write_bytes_atomic(target, compact_png(made[name].read_bytes(), figure.width))
            written.append(target)
            print(f"wrote {target} ({target.stat().st_size / 1000:.0f} kB)")
    print(f"  {key}: {note} [{seconds:.0f} s]")
    print(f"  made by: {figure.command}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs")
    parser.add_argument(
        "--only", action="append", choices=sorted(FIGURES), help="an entry to make (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the entries and stop")
    args = parser.parse_args(argv)
    if args.list:
        for key, figure in FIGURES.items():
            print(f"{key}: {', '.join(figure.files)}\n  {figure.command}")
        return 0
    keys = args.only or list(FIGURES)
    missing = [k for k in keys if FIGURES[k].needs and not Path(FIGURES[k].needs).exists()]
    if missing:
        print(f"error: {', '.join(missing)} need {CHROMIUM} (apt-get install chromium)")
        return 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    failed = []
    for key in keys:
        try:
            make(key, args.out)
        except Exception as error:  # one entry's failure must not stop the others
            print(f"error: {key}: {type(error).__name__}: {error}", file=sys.stderr)
            failed.append(key)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
