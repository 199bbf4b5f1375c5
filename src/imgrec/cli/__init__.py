"""The ``imgrec`` command: one verb per task, the same flags across verbs.

A thin shell over the Python API: it parses arguments, calls one API function,
and prints the result for people (tables) or machines (``--json``). It imports
nothing heavy at start-up, so ``imgrec --help`` and ``imgrec zoo`` never load
TensorFlow.

The verbs are the :data:`COMMANDS` table, one module per verb or group of verbs
(:mod:`imgrec.cli.predict`, :mod:`imgrec.cli.train`, ...); the flags they share are
declared once in :mod:`imgrec.cli.flags`; :mod:`imgrec.cli.shell` says what a verb is
made of. To add a verb: write its ``run`` and its :class:`~imgrec.cli.shell.Command`
in a module, and list it here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from imgrec.cli import classic, evaluate, explain, export, generate, info, predict, serve, train
from imgrec.cli.flags import COMMON
from imgrec.cli.shell import Command
from imgrec.core import quiet
from imgrec.core.errors import ImgrecError

# In the order ``imgrec --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    predict.COMMAND,
    info.ZOO,
    info.DATASETS,
    info.SUMMARY,
    train.AUGMENT,
    train.TRAIN,
    evaluate.EVALUATE,
    serve.SERVE,
    explain.EXPLAIN,
    explain.LAYERS,
    explain.LOCALIZE,
    classic.CLASSIC,
    evaluate.COMPARE,
    classic.DETECT,
    export.EXPORT,
    generate.COMMAND,
)

__all__ = ["COMMANDS", "TOUR", "build_parser", "main"]

# What ``imgrec`` alone prints before the verbs: a few commands to start from.
TOUR = """\
imgrec: image recognition with Keras, offline. A few commands to start with:

  imgrec predict photo.jpg                  the top-5 ImageNet classes, with the time
  imgrec explain mobilenet_v2 photo.jpg --out cam.png
                                            where the network looked (class activation map)
  imgrec train digits --out digits.keras    train the chapter's CNN on a built-in data set
  imgrec serve                              the web page, on http://127.0.0.1:8000

`imgrec VERB --help` says what a verb takes.
"""

# Names the one-module CLI had, now defined once elsewhere: old name -> (module, name).
_MOVED = {
    "EXPORT_FORMATS": ("imgrec.core.choices", "EXPORT_FORMATS"),
    "EXPORT_QUANTIZATIONS": ("imgrec.core.choices", "QUANTIZATIONS"),
    "RUNTIME_CHOICES": ("imgrec.core.choices", "RUNTIMES"),
    "RUNTIME_HELP": ("imgrec.cli.flags", "RUNTIME_HELP"),
    "AUGMENT_HELP": ("imgrec.cli.flags", "AUGMENT_HELP"),
    "BAR_WIDTH": ("imgrec.cli.predict", "BAR_WIDTH"),
}


def __getattr__(name: str):
    """The old names of :data:`_MOVED`, for one release, with a DeprecationWarning."""
    if name not in _MOVED:
        raise AttributeError(f"module 'imgrec.cli' has no attribute {name!r}")
    module, new = _MOVED[name]
    warnings.warn(
        f"imgrec.cli.{name} moved to {module}.{new}; the old name will be removed in the "
        "next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), new)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, built from :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="imgrec",
        description="Image recognition with Keras: pretrained networks, training, CAM, export.",
    )
    parser.add_argument("--version", action="version", version=f"imgrec {_version()}")
    _add_verbs(parser, COMMANDS, dest="verb")
    return parser


def _add_verbs(parser: argparse.ArgumentParser, commands: Sequence[Command], dest: str) -> None:
    # `imgrec` alone prints the tour; a group without its verb (`imgrec classic`) is a usage
    # error that lists the group's verbs.
    verbs = parser.add_subparsers(dest=dest, required=dest != "verb", metavar="VERB")
    for command in commands:
        sub = verbs.add_parser(command.name, help=command.help, description=command.description)
        if command.verbs:  # a group: `imgrec classic train ...`
            _add_verbs(sub, command.verbs, dest=f"{command.name}_verb")
            continue
        for flag in (*COMMON, *command.flags):
            flag.add_to(sub)
        sub.set_defaults(run=command.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 1 failed, 2 bad usage).

    ``imgrec`` without a verb prints :data:`TOUR` and the verbs, and exits 0.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        print(TOUR)
        print(_verb_list())
        return 0
    quiet.set_verbose(args.library_logs)
    quiet.quiet_python_logs()
    try:
        return args.run(args)
    except ImgrecError as err:
        print(f"imgrec: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imgrec: interrupted", file=sys.stderr)
        return 130


def _verb_list() -> str:
    """The verbs of :data:`COMMANDS`, one line each with its help."""
    width = max(len(command.name) for command in COMMANDS)
    lines = [f"  {command.name:<{width}}  {command.help}" for command in COMMANDS]
    return "\n".join(["verbs:", *lines])


def _version() -> str:
    from imgrec import __version__

    return __version__
