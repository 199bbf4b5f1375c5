"""``imgrec zoo``, ``imgrec datasets`` and ``imgrec summary``: what is here to work with.

``imgrec zoo`` answers from cached parameter counts without starting TensorFlow.
"""

from __future__ import annotations

import argparse

from imgrec.cli import flags
from imgrec.cli.shell import Command, print_json

# The zoo table: title, key in zoo_table()'s rows, format.
ZOO_COLUMNS = [
    ("Model", "model", "{}"),
    ("Size (MB)", "size_mb", "{:g}"),
    ("Top-1", "top1", "{:.1f}"),
    ("Top-5", "top5", "{:.1f}"),
    ("Parameters", "parameters", "{:,}"),
    ("Depth", "depth", "{}"),
    ("Input", "input_size", "{0}x{0}"),
    ("Weights now", "weights", "{}"),
]


def run_zoo(args: argparse.Namespace) -> int:
    """Print the zoo table, or its rows as JSON."""
    from imgrec.models.zoo import zoo_table

    rows = zoo_table(refresh=args.refresh)
    if args.json:
        return print_json(rows)
    cells = [
        [fmt.format(row[key]) if row[key] is not None else "-" for _, key, fmt in ZOO_COLUMNS]
        for row in rows
    ]
    titles = [title for title, _, _ in ZOO_COLUMNS]
    widths = [max(len(title), *(len(r[i]) for r in cells)) for i, title in enumerate(titles)]
    for line in [titles, *cells]:
        padded = [
            cell.ljust(w) if i in (0, len(line) - 1) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(padded).rstrip())
    if not args.quiet:
        _print_missing_weights(rows)
    return 0


def _print_missing_weights(rows: list[dict[str, object]]) -> None:
    """Say how to get the weights the table calls unavailable."""
    from imgrec.models.zoo import get_entry, torch_hub_instructions

    missing = [get_entry(row["name"]) for row in rows if row["weights"] == "unavailable"]
    if not missing:
        return
    print()
    if any(entry.keras_weights_file for entry in missing):
        print(
            "unavailable: no internet and no file in the Keras cache; "
            "'imgrec predict --model NAME' names the file to get."
        )
    for entry in missing:
        if entry.torch_hub:
            print(
                f"{entry.display_name} needs torchvision's weights: "
                f"{torch_hub_instructions(entry.torch_hub)}, or pass it with --weights FILE."
            )


def run_datasets(args: argparse.Namespace) -> int:
    """Print the built-in data sets: here (where) or missing (how to get them)."""
    from imgrec.datasets import list_datasets

    rows = list_datasets()
    if args.json:
        return print_json(rows)
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        state = f"here: {row['where']}" if row["present"] else f"missing: {row['how_to_get']}"
        print(f"{row['name']:<{width}}  {row['description']}\n{'':<{width}}  {state}")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    """Print Keras's summary of the model."""
    from imgrec.models.summaries import summary

    print(summary(args.model))
    return 0


ZOO = Command(
    "zoo",
    help="list the pretrained networks and where their weights would come from",
    description="The Keras Applications table: size, accuracy, parameters, depth, "
    "input size, and where each network's ImageNet weights would come from now.",
    flags=[
        flags.flag(
            "--refresh",
            action="store_true",
            help="count parameters again instead of using the cache",
        )
    ],
    run=run_zoo,
)

DATASETS = Command(
    "datasets",
    help="list the built-in data sets, whether each is here, and how to get it",
    run=run_datasets,
)

SUMMARY = Command(
    "summary",
    help="print Keras's summary of an architecture, a zoo network or a .keras file",
    flags=[flags.MODEL.but(metavar="ARCH|MODEL.keras", help=None)],
    run=run_summary,
)
