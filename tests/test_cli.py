"""The command line as a shell: each verb hands its flags to its API function, the
choices it offers are the library's, ``--help`` starts no TensorFlow, and the command
printed after an interrupted ``imgrec train`` continues that run.

The API functions are replaced by stand-ins that check the call against the real
signature and stop there: these tests are about the shell, not the work.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from imgrec.cli import COMMANDS, build_parser, main
from imgrec.core import choices


class Called(Exception):
    """Raised by a stand-in API function once it has recorded its arguments."""


def stand_in(monkeypatch: pytest.MonkeyPatch, module: str, name: str, real=None) -> dict:
    """Replace ``module.name`` with a function that binds its arguments to the signature
    of the real one (a TypeError for a flag with no parameter), records them and raises
    Called. ``real``: the real function, where ``module.name`` is patched already."""
    target = importlib.import_module(module)
    signature = inspect.signature(real or getattr(target, name))
    recorded: dict = {}

    def fake(*args, **kwargs):
        recorded.update(signature.bind(*args, **kwargs).arguments)
        raise Called

    monkeypatch.setattr(target, name, fake)
    return recorded


# argv, the API function the verb calls, the parameters it must pass (all the others
# keep the API's defaults), space-separated.
VERB_CALLS = [
    (
        shlex.split("predict a.jpg b.jpg --top 3 --csv x.csv --batch-size 4 --tta flip"),
        ("imgrec.prediction", "predict_many"),
        "images model top weights runtime batch_size verbose tta",
    ),
    (
        ["augment", "a.jpg", "--augment", "flip", "--count", "4"],
        ("imgrec.training.augment", "augment_grid"),
        "image spec out count seed",
    ),
    (
        ["train", "data", "--epochs", "3", "--transfer", "finetune", "--freeze", "10"],
        ("imgrec.training.fit", "train"),
        (
            "dataset arch out epochs batch_size lr image_size augment resume "
            "class_weight val_split limit_per_class seed patience verbose transfer "
            "freeze unfreeze_from devices coordinator num_processes process_id"
        ),
    ),
    (
        ["evaluate", "m.keras", "data", "--top", "2", "--runtime", "keras", "--tta", "flip,shift"],
        ("imgrec.evaluation.report", "evaluate"),
        "model dataset report top_k runtime tta",
    ),
    (
        ["serve", "--port", "0", "--allow-host", "10.0.0.0/8", "--upload-limit", "2"],
        ("imgrec.web.server", "serve"),
        "host port models_dir upload_limit allow_hosts cache_size runtime log_level on_ready "
        "projects_dir",
    ),
    (
        ["explain", "m.keras", "a.jpg", "--out", "x.png", "--method", "cam", "--class", "3"],
        ("imgrec.explanation.cam", "explain"),
        "model image method layer class_index colormap alpha out",
    ),
    (
        ["layers", "m.keras", "a.jpg", "--out", "dir", "--channels", "4"],
        ("imgrec.explanation.layer_view", "layers_report"),
        "model image out channels",
    ),
    (
        ["localize", "m.keras", "a.jpg", "--out", "dir", "--threshold", "0.3"],
        ("imgrec.explanation.localization", "localize"),
        "model image method threshold class_index out",
    ),
    (
        ["classic", "train", "data", "--features", "hog,lbp", "--jobs", "1"],
        ("imgrec.classic.pipeline", "classic_train"),
        (
            "dataset features select classifier out image_size val_split "
            "limit_per_class seed jobs progress"
        ),
    ),
    (
        ["compare", "data", "--cnn", "mnist-cnn", "--epochs", "1", "--image-size", "28"],
        ("imgrec.evaluation.comparison", "compare"),
        (
            "dataset cnn classic out epochs batch_size image_size val_split "
            "limit_per_class seed jobs verbose"
        ),
    ),
    (
        ["detect", "a.jpg", "--detector", "eyes", "--scale-factor", "1.2"],
        ("imgrec.classic.detection", "detect"),
        "image detector out scale_factor min_neighbors",
    ),
    (
        ["export", "m.keras", "--out", "m.onnx", "--quantize", "int8", "--val", "data"],
        ("imgrec.deploy.exporter", "export"),
        "model out format quantize val weights",
    ),
]


@pytest.mark.parametrize(("argv", "api", "passed"), VERB_CALLS, ids=lambda v: str(v)[:30])
def test_each_verb_passes_its_flags_to_its_api_function(monkeypatch, argv, api, passed):
    """Every flag reaches the parameter of its name, and the values arrive as typed."""
    recorded = stand_in(monkeypatch, *api)
    with pytest.raises(Called):
        main(argv)
    assert set(recorded) == set(passed.split())
    args = build_parser().parse_args(argv)
    for dest, value in vars(args).items():
        if dest in recorded and dest != "upload_limit":  # MiB to bytes: checked below
            assert recorded[dest] == value, dest


def test_typed_values_arrive_converted(monkeypatch):
    """--image-size 28 is (28, 28), --upload-limit is in MiB, --quiet silences Keras."""
    recorded = stand_in(monkeypatch, "imgrec.training.fit", "train")
    with pytest.raises(Called):
        main(["train", "data", "--image-size", "28x32", "--quiet"])
    assert recorded["image_size"] == (28, 32)
    assert recorded["verbose"] == 0
    recorded = stand_in(monkeypatch, "imgrec.web.server", "serve")
    with pytest.raises(Called):
        main(["serve", "--upload-limit", "2", "--allow-host", "a", "--allow-host", "b",
              "--projects", "teach"])  # fmt: skip
    assert recorded["upload_limit"] == 2 * 2**20
    assert recorded["allow_hosts"] == ["a", "b"]
    assert recorded["projects_dir"] == "teach"
    recorded = stand_in(monkeypatch, "imgrec.evaluation.report", "evaluate")
    with pytest.raises(Called):
        main(["evaluate", "m.keras", "data", "--top", "3"])
    assert recorded["top_k"] == 3


def test_the_choices_offered_are_the_librarys():
    """The CLI offers core.choices' names, and the modules that implement them agree."""
    from imgrec.classic import detection
    from imgrec.deploy import exporter
    from imgrec.explanation import cam
    from imgrec.training import augment, transfer

    assert cam.METHODS == choices.CAM_METHODS
    assert cam.COLORMAPS == choices.COLORMAPS
    assert tuple(detection.DETECTORS) == choices.DETECTORS
    assert exporter.FORMATS == choices.EXPORT_FORMATS
    assert augment.NAMES == choices.AUGMENTATIONS
    assert transfer.STRATEGIES == choices.TRANSFER_STRATEGIES

    offered = {}
    for argv, option in [
        (["predict", "x"], "--runtime"),
        (["evaluate", "m", "d"], "--runtime"),
        (["serve"], "--runtime"),
        (["export", "m", "--out", "o"], "--format"),
        (["export", "m", "--out", "o"], "--quantize"),
        (["explain", "m", "i", "--out", "o"], "--method"),
        (["localize", "m", "i", "--out", "o"], "--method"),
        (["detect", "i"], "--detector"),
        (["train", "d"], "--transfer"),
        (["train", "d"], "--class-weight"),
    ]:
        offered[(argv[0], option)] = tuple(_action(argv, option).choices)
    assert offered == {
        ("predict", "--runtime"): choices.RUNTIMES,
        ("evaluate", "--runtime"): choices.RUNTIMES,
        ("serve", "--runtime"): choices.RUNTIMES,
        ("export", "--format"): choices.EXPORT_FORMATS,
        ("export", "--quantize"): choices.QUANTIZATIONS,
        ("explain", "--method"): choices.CAM_METHODS,
        ("localize", "--method"): choices.CAM_METHODS,
        ("detect", "--detector"): choices.DETECTORS,
        ("train", "--transfer"): choices.TRANSFER_STRATEGIES,
        ("train", "--class-weight"): choices.CLASS_WEIGHTS,
    }


def _action(argv: list[str], option: str):
    """The argparse action of ``option`` in the sub-parser that ``argv`` selects."""
    parser = build_parser()
    words = list(argv)
    while True:
        verbs = next((a for a in parser._actions if a.choices and a.dest.endswith("verb")), None)
        if verbs is None or not words or words[0] not in verbs.choices:
            break
        parser = verbs.choices[words.pop(0)]
    return next(a for a in parser._actions if option in a.option_strings)


def test_no_verbs_help_imports_tensorflow():
    """``imgrec VERB --help`` for every verb answers without TensorFlow or Keras."""
    helps = [[c.name, *(v.name for v in c.verbs[:1]), "--help"] for c in COMMANDS]
    code = "\n".join(
        [
            "import json, sys",
            "from imgrec.cli import main",
            f"for argv in {helps!r}:",
            "    try:",
            "        main(argv)",
            "    except SystemExit:",
            "        pass",
            "print(json.dumps(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f"usage: imgrec {command.name}" in result.stdout
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_python_m_imgrec_cli_still_runs():
    """``python -m imgrec.cli`` worked when the CLI was one module; it still does."""
    result = subprocess.run(
        [sys.executable, "-m", "imgrec.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imgrec ")


# --- The resume hint ---------------------------------------------------------------------


def test_resume_hint_continues_the_same_run(monkeypatch, capsys, tmp_path):
    """The command printed after Ctrl-C, run as printed, resumes from <out>.last.keras and
    writes to the same --out with the options a resumed run cannot read from its file."""
    monkeypatch.chdir(tmp_path)  # relative paths, some starting with "-", some quotes
    dataset = Path("-my photos") / "it's here"
    out = Path("runs; rm -rf ~") / "$HOME's best.keras"
    last = Path("-interrupted.last.keras")

    def interrupted_train(dataset, arch="cifar-cnn", **kwargs):
        return {
            "skipped": [],
            "interrupted": True,
            "epochs_done": 2,
            "epochs_asked": 30,
            "last": str(last),
            "best_val_accuracy": 0.5,
            "seconds": 3.0,
            "model": str(kwargs["out"]),
            "history": "h.json",
            "curves": "c.png",
        }

    from imgrec.training.fit import train

    monkeypatch.setattr("imgrec.training.fit.train", interrupted_train)
    first = [
        "train", str(dataset), "--out", str(out), "--epochs", "30", "--batch-size", "8",
        "--seed", "-3", "--val-split", "0.2", "--limit-per-class", "50",
        "--class-weight", "balanced", "--patience", "0", "--image-size", "32",
    ]  # fmt: skip
    assert main(first) == 0
    printed = capsys.readouterr().out
    hint = printed.split("continue with: ", 1)[1].splitlines()[0]
    words = shlex.split(hint)
    assert words[:2] == ["imgrec", "train"]

    recorded = stand_in(monkeypatch, "imgrec.training.fit", "train", real=train)
    with pytest.raises(Called):
        main(words[1:])
    assert Path(recorded["dataset"]) == dataset
    assert Path(recorded["resume"]) == last
    assert Path(recorded["out"]) == out
    assert recorded["epochs"] == 30
    assert recorded["batch_size"] == 8
    assert recorded["seed"] == -3
    assert recorded["val_split"] == 0.2
    assert recorded["limit_per_class"] == 50
    assert recorded["class_weight"] == "balanced"
    assert recorded["patience"] == 0


def test_resume_hint_is_short_for_a_plain_run(monkeypatch, capsys, tmp_path):
    """Options left at their defaults are not repeated; --out is always named."""
    out = tmp_path / "model.keras"

    def interrupted_train(dataset, arch="cifar-cnn", **kwargs):
        return {
            "skipped": [],
            "interrupted": True,
            "epochs_done": 1,
            "epochs_asked": 5,
            "last": str(out.with_name("model.last.keras")),
            "best_val_accuracy": None,
            "seconds": 1.0,
            "model": str(out),
            "history": "h.json",
            "curves": "c.png",
        }

    monkeypatch.setattr("imgrec.training.fit.train", interrupted_train)
    assert main(["train", "cifar10", "--out", str(out)]) == 0
    hint = capsys.readouterr().out.split("continue with: ", 1)[1].splitlines()[0]
    assert shlex.split(hint) == [
        "imgrec", "train", "cifar10", "--resume", str(out.with_name("model.last.keras")),
        "--out", str(out),
    ]  # fmt: skip


def test_the_old_module_level_names_still_answer_with_a_warning():
    """The constants the one-module CLI had are aliases of the one definition now."""
    import imgrec.cli

    with pytest.warns(DeprecationWarning, match="core.choices.RUNTIMES"):
        assert imgrec.cli.RUNTIME_CHOICES is choices.RUNTIMES
    with pytest.warns(DeprecationWarning):
        assert imgrec.cli.EXPORT_FORMATS is choices.EXPORT_FORMATS
    with pytest.warns(DeprecationWarning):
        assert imgrec.cli.EXPORT_QUANTIZATIONS is choices.QUANTIZATIONS
    with pytest.raises(AttributeError):
        imgrec.cli.NO_SUCH_NAME  # noqa: B018


def test_train_help_names_every_chapter_network(capsys):
    from imgrec.models.chapter import CHAPTER_ARCHITECTURES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.replace("-\n", "-").split()).replace("- ", "-")
    for name in CHAPTER_ARCHITECTURES:
        assert name in text, name
