"""ImageNet weights of the 2D EfficientNets, kept in the torch hub cache and fetched where there is internet.

MONAI's ``EfficientNetBN(pretrained=True)`` downloads the lukemelas/EfficientNet-PyTorch release
files of its ``url_map`` with ``torch.utils.model_zoo.load_url`` into ``torch.hub.get_dir()/
checkpoints`` (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``).
This module uses that same map, function and folder, so a file cached by MONAI, by the command
below or copied there by hand is one and the same. Compute nodes are often offline: when the
file is neither cached nor downloadable, the error names the command and the cache folder.

    python -m idhhpc.weights fetch b7 [b0 ...]   # on a login node with internet, same TORCH_HOME as the jobs
    python -m idhhpc.weights path b7             # where the file is, or would be, cached
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import socket
import sys
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from monai.networks.nets.efficientnet import url_map
from torch.utils import model_zoo

DOWNLOAD_TIMEOUT_S = 60.0
"""Per socket operation: a node behind a firewall that drops packets fails in a minute, not never."""
FETCH_COMMAND = "python -m idhhpc.weights fetch {variant}"


class WeightsUnavailable(RuntimeError):
    """The ImageNet weights are not in the cache and cannot be downloaded; the message says what to do."""


def short_variant(variant: str) -> str:
    """``b7`` for ``b7`` or ``efficientnet-b7``, checked against MONAI's URL map."""
    short = variant.strip().lower().removeprefix("efficientnet-")
    if f"efficientnet-{short}" not in url_map:
        known = sorted(k.removeprefix("efficientnet-") for k in url_map if k.startswith("efficientnet-"))
        raise ValueError(f"no ImageNet weights for EfficientNet variant {variant!r}; known: {', '.join(known)}")
    return short


def imagenet_url(variant: str) -> str:
    return url_map[f"efficientnet-{short_variant(variant)}"]


def hub_checkpoints() -> Path:
    """Where ``model_zoo.load_url`` keeps its files (follows ``TORCH_HOME`` at call time)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(variant: str) -> Path:
    """The cache file of ``variant``'s ImageNet weights, whether or not it is there yet."""
    return hub_checkpoints() / Path(urlparse(imagenet_url(variant)).path).name


def fetch(variant: str, progress: bool = True) -> Path:
    """The cached file of ``variant``, downloaded first through MONAI's URL and torch's cache if missing.

    The download is checked against the hash in the file name and lands in the cache by rename,
    so an interrupted one leaves nothing half-written behind.
    """
    path = cached_path(variant)
    if path.is_file():
        return path
    url = imagenet_url(variant)
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            model_zoo.load_url(url, model_dir=str(path.parent), progress=progress, check_hash=True,
                               weights_only=True)
    except (OSError, http.client.HTTPException, RuntimeError) as err:
        raise WeightsUnavailable(unavailable_message(variant, f"{type(err).__name__}: {err}")) from None
    return path


def unavailable_message(variant: str, reason: str) -> str:
    short, path = short_variant(variant), cached_path(variant)
    torch_home = os.environ.get("TORCH_HOME")
    return (f"ImageNet weights of efficientnet-{short} are not in the torch hub cache ({path}) and could not be "
            f"downloaded from {imagenet_url(variant)} ({reason}). Compute nodes are often offline: on a login node "
            f"with internet run `{FETCH_COMMAND.format(variant=short)}` with the same TORCH_HOME as the jobs "
            f"(here {'TORCH_HOME=' + torch_home if torch_home else 'TORCH_HOME is unset, so ~/.cache/torch'}), "
            "or set model.pretrained to a local 2D state dict, or model.pretrained_fallback=scratch to train "
            "every stage from random weights")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m idhhpc.weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="download ImageNet weights into the torch hub cache")
    fetch_cmd.add_argument("variants", nargs="+", metavar="VARIANT", help="b0 ... b7")
    path_cmd = commands.add_parser("path", help="print where a variant's weights are cached")
    path_cmd.add_argument("variants", nargs="+", metavar="VARIANT")
    args = parser.parse_args(argv)
    try:
        for variant in args.variants:
            if args.command == "path":
                print(cached_path(variant))
                continue
            was_cached = cached_path(variant).is_file()
            path = fetch(variant)
            state = "already cached" if was_cached else "downloaded"
            print(f"efficientnet-{short_variant(variant)}: {state}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    except (ValueError, WeightsUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
