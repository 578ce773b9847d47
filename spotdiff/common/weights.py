"""Where real model weights come from: local folders or the local Hugging Face cache, never the network.

Shared by every real backend (CLIP features, Stable Diffusion, SAM) so they resolve devices
and cached hub ids the same way and fail with the same kind of message.
"""

from __future__ import annotations

import os
from pathlib import Path

from spotdiff.common.paths import portable
from spotdiff.config import ConfigError


def resolve_device(device: str, key: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``. ``cuda`` without a GPU, or any other
    value, is a ConfigError naming the params ``key``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} = 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"{key} = {device!r}: expected 'auto', 'cpu' or 'cuda'")
    return device


def cached_snapshot(value: str) -> Path | None | bool:
    """The local Hugging Face cache folder of hub id ``value`` (main revision); None when it is a
    valid hub id that is not cached; False when it cannot be a hub id at all (e.g. ``./models/x``).
    Reads the cache only: no network, no retries."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub first reads its settings
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(value, local_files_only=True))
    except HFValidationError:
        return False
    except LocalEntryNotFoundError:
        return None


def locate_folder(value: str, key: str, expected: str, how_to_get: str) -> tuple[Path, str]:
    """Folder named by ``value`` -- a local directory or a hub id already in the local cache -- and
    the identity naming it (``hub_id@commit``, or the folder as artifacts record paths: relative to the
    repository, or ``<external>/name`` outside it, never this machine's absolute path --
    ``spotdiff.common.paths.portable``; backends that must tell two local folders of one name apart
    add a digest of the weights, as ``embed`` does). ConfigError naming the params ``key`` when there is
    none; ``expected`` describes the folder, ``how_to_get`` the fix."""
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{key} = {value!r}: is a file; expected {expected}; {how_to_get}")
        return path.resolve(), portable(path)
    snapshot = cached_snapshot(value)
    if not snapshot:
        from huggingface_hub import constants

        also = "" if snapshot is False else (f", and no model of that id in the local Hugging Face cache "
                                             f"({constants.HF_HUB_CACHE})")
        raise ConfigError(f"{key} = {value!r}: no such folder{also}; {how_to_get}")
    return snapshot, f"{value}@{snapshot.name}"
