"""``vizkit`` command line: one module per subcommand (its parser and one call into its scenario),
the shared flags in :mod:`vizkit.cli.common`. ``vizkit <command> --help`` lists each one's flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import clip_gradcam, detector_attention, detector_gradcam, evaluate, run, vlm_video

__all__ = ["build_parser", "main", "version", "SUBCOMMANDS"]

#: the subcommand modules, in the order ``vizkit --help`` lists them
SUBCOMMANDS = (clip_gradcam, detector_attention, detector_gradcam, evaluate, run, vlm_video)


def version() -> str:
    """The installed distribution's version, else ``vizkit.__version__``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("vizkit")
    except PackageNotFoundError:
        import vizkit

        return getattr(vizkit, "__version__", "unknown")


def build_parser() -> argparse.ArgumentParser:
    """The ``vizkit`` parser: ``--version`` and one subcommand per module of :mod:`vizkit.cli`."""
    parser = argparse.ArgumentParser(prog="vizkit", description="vizkit: explain vision models")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vizkit`` with ``argv`` (None: the command line); a :class:`~vizkit.errors.VizkitError` is
    printed as one line and returns exit status 2. Returns the subcommand's exit status."""
    from ..errors import VizkitError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except VizkitError as err:
        print(f"vizkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # finished chunks / runs are kept: rerun the same command to resume
        print(f"vizkit {args.command}: interrupted", file=sys.stderr)
        return 130
