"""What the subcommands share: the ``--layout``, ``--num-heads``, ``--cpu`` and Dask cluster flags,
and the values read from them (the device, the cluster options) -- one helper each."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..distributed.chunks import ClusterOptions

__all__ = [
    "layout_argument",
    "num_heads_argument",
    "cpu_argument",
    "cluster_flags",
    "device",
    "cluster_options",
    "parameters",
    "say",
]


def layout_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--layout`` (the activation layout of the explained layers) to the subcommand ``p``."""
    p.add_argument(
        "--layout",
        default=None,
        choices=["nchw", "nhwc", "tokens"],
        help="where the target layers' channels are: nchw [B, C, h, w], nhwc [B, h, w, C] (Swin) or "
        "tokens [B, N, C] (default: decided per layer; an ambiguous layer asks for this flag)",
    )


def num_heads_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--num-heads`` (attention heads of a checkpoint whose width does not tell them) to ``p``."""
    p.add_argument(
        "--num-heads",
        "--num_heads",
        type=int,
        default=None,
        help="attention heads per layer of a CLIP detector whose width is not a known CLIP tower (a state "
        "dict does not record it; default: the YAML's num_heads, else the CLIP tower of that width)",
    )


def cpu_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--cpu`` (run on the CPU even when CUDA is present) to ``p``."""
    p.add_argument("--cpu", action="store_true", help="force the CPU")


def cluster_flags(p: argparse.ArgumentParser, *, retries: bool = False) -> None:
    """The shared ``--workers N | --scheduler ADDRESS`` (and ``--retries K``) of the batch commands."""
    from ..distributed.cluster import add_cluster_flags

    add_cluster_flags(p, retries=retries)


def device(args: argparse.Namespace) -> "torch.device":
    """The device of ``--cpu`` (else CUDA when available), by :func:`vizkit.state.resolve_device`."""
    from ..state import resolve_device

    return resolve_device("cpu" if getattr(args, "cpu", False) else "auto")


def cluster_options(args: argparse.Namespace) -> "ClusterOptions | None":
    """Where ``--workers/--scheduler`` say the work runs: None (this process) or the cluster."""
    from ..distributed.chunks import ClusterOptions
    from ..distributed.cluster import cluster_requested

    return ClusterOptions(args.workers, args.scheduler) if cluster_requested(args) else None


def parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The command's arguments as a report's parameter table shows them."""
    return {k: v for k, v in vars(args).items() if k not in ("run", "command")}


def say(args: argparse.Namespace, message: str) -> None:
    """A note or a skipped input on stderr, prefixed ``vizkit <command>:``."""
    print(f"vizkit {args.command}: {message}", file=sys.stderr)
