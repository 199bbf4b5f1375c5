"""``imgrec serve``: the web page and its JSON API, until Ctrl-C."""

from __future__ import annotations

import argparse
import json

from imgrec.cli import flags
from imgrec.cli.shell import Command
from imgrec.core.errors import ImgrecError


def run_serve(args: argparse.Namespace) -> int:
    """Serve; print the address once the server listens (as JSON with --json)."""
    from imgrec.web.server import serve

    if args.upload_limit <= 0:
        raise ImgrecError(f"--upload-limit must be above 0, got {args.upload_limit}")

    def announce(url: str) -> None:
        line = json.dumps({"url": url}) if args.json else f"imgrec: serving {url} (Ctrl-C stops)"
        print(line, flush=True)

    # The flags are in the units a person types (MiB, one --allow-host each): spelled out.
    serve(
        args.host,
        args.port,
        models_dir=args.models,
        upload_limit=round(args.upload_limit * 2**20),
        allow_hosts=args.allow_host,
        cache_size=args.cache_size,
        runtime=args.runtime,
        log_level="warning" if args.quiet or args.json else "info",
        on_ready=announce,
        projects_dir=args.projects,
    )
    return 0


SERVE = Command(
    "serve",
    help="serve the web page: classify, explain and look inside photos in a browser",
    description="Serve the page and its JSON API (/api/..., documented at /docs) until "
    "Ctrl-C. The page offers the zoo networks with weights on this machine and the "
    ".keras files in --models.",
    flags=[
        flags.flag(
            "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
        ),
        flags.flag("--port", type=int, default=8000, help="TCP port, 0 for a free one"),
        flags.flag("--models", metavar="DIR", help="a folder of .keras models to offer"),
        flags.flag(
            "--projects",
            metavar="DIR",
            help="the Teach demo's projects, one class folder each (default: IMGREC_HOME/projects)",
        ),
        flags.flag(
            "--allow-host",
            action="append",
            default=[],
            metavar="HOST",
            help="a host, address or network (10.0.0.0/8) that image URLs may reach although "
            "it is not public; repeat for more (default: none)",
        ),
        flags.flag(
            "--upload-limit",
            type=float,
            default=10,
            metavar="MB",
            help="largest upload or image URL body, in MiB (default 10)",
        ),
        flags.flag(
            "--cache-size",
            type=flags.positive_int,
            default=4,
            metavar="N",
            help="models kept loaded",
        ),
        flags.RUNTIME.but(
            help=flags.RUNTIME_HELP + "; class activation maps and feature maps always run on keras"
        ),
    ],
    run=run_serve,
)
