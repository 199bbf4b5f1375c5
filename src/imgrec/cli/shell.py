"""What every verb is made of: a :class:`Command` in the table, and how it calls the API.

A verb is a :class:`Command`: its name, its help, the flags it takes (from
:mod:`imgrec.cli.flags`) and a ``run(args) -> exit code`` function. ``run`` imports its
API function inside (so that ``imgrec --help`` imports no TensorFlow), calls it with
:func:`api_arguments`, and prints the result: JSON with ``--json``, else for people.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from imgrec.cli.flags import Flag

# Flags that shape what the shell prints, and the parser's own entries: never passed on.
SHELL_ONLY = frozenset({"json", "quiet", "library_logs", "run", "verb", "classic_verb"})


class Command(NamedTuple):
    """One verb of ``imgrec``, or a group of verbs (``imgrec classic train``).

    Attributes:
        name: the verb as typed.
        help: one line for ``imgrec --help``.
        flags: the verb's arguments in the order ``--help`` lists them.
        run: called with the parsed arguments; returns the exit code.
        description: the paragraph of ``imgrec VERB --help`` (default: none).
        verbs: for a group, its verbs (then ``flags`` and ``run`` are unused).
    """

    name: str
    help: str
    flags: Sequence[Flag] = ()
    run: Callable[[argparse.Namespace], int] | None = None
    description: str | None = None
    verbs: Sequence[Command] = ()


def api_arguments(
    args: argparse.Namespace,
    *,
    rename: Mapping[str, str] | None = None,
    leave_out: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """The verb's flags as the keyword arguments of its API function.

    Every flag's ``dest`` is the name of the API parameter it sets, so the verb passes
    its flags on without naming each one again. A flag left without a parameter fails
    loudly: the call raises ``TypeError`` (each verb's tests catch that).

    Args:
        args: the parsed command line.
        rename: flag ``dest`` -> parameter name, where they differ (``{"top": "top_k"}``).
        leave_out: flags the shell handles itself (``csv``: the CLI writes the CSV).
        extra: arguments that no flag sets, such as ``verbose`` (they win over flags).

    Returns:
        ``{parameter: value}`` for every flag of the verb but ``--json``, ``--quiet`` and
        ``--verbose``.
    """
    rename = rename or {}
    passed = {
        rename.get(dest, dest): value
        for dest, value in vars(args).items()
        if dest not in SHELL_ONLY and dest not in leave_out
    }
    return passed | extra


def print_json(result: Any) -> int:
    """Print ``result`` as indented JSON (``--json``); return the exit code 0."""
    print(json.dumps(result, indent=2))
    return 0


def progress_level(args: argparse.Namespace) -> int:
    """Keras's ``verbose``: 1 (a progress bar), or 0 with ``--quiet`` or ``--json``."""
    return 0 if args.quiet or args.json else 1
