"""Checkpoints as safetensors only: model weights, optimiser state and run metadata, no pickle.

``save`` flattens ``optimizer.state_dict()``: every per-parameter state tensor becomes
``optim.<param index>.<name>`` and the hyper-parameters of the param groups go to the JSON metadata,
so ``load`` rebuilds the exact state dict torch's optimisers accept. Nothing is ever read with
``torch.load``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spotdiff.common.outputs import atomic_write
from spotdiff.errors import MissingInputError


def save(path: str | Path, *, model: dict[str, torch.Tensor], optimizer: dict[str, Any] | None = None,
         meta: dict[str, Any] | None = None) -> None:
    """Write ``model`` (a state dict) as ``model.<name>``, ``optimizer`` (a state dict) as ``optim.*``, and
    ``meta`` (JSON-serialisable) atomically to ``path``."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.items()}
    header: dict[str, Any] = {"meta": meta or {}}
    if optimizer is not None:
        for idx, state in optimizer["state"].items():
            for name, value in state.items():
                if not torch.is_tensor(value):  # e.g. a python-number step in some optimisers
                    value = torch.tensor(value)
                tensors[f"optim.{idx}.{name}"] = value.detach().contiguous().cpu()
        header["param_groups"] = optimizer["param_groups"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"spotdiff": json.dumps(header, sort_keys=True)})


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """(model state dict, optimizer state dict or None, meta) from a file written by ``save``."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} not found")
    model: dict[str, torch.Tensor] = {}
    state: dict[int, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as f:
        header = json.loads((f.metadata() or {}).get("spotdiff", "{}"))
        for key in f.keys():
            kind, _, rest = key.partition(".")
            if kind == "model":
                model[rest] = f.get_tensor(key)
            elif kind == "optim":
                idx, _, name = rest.partition(".")
                state.setdefault(int(idx), {})[name] = f.get_tensor(key)
    optimizer = None
    if "param_groups" in header:
        optimizer = {"state": state, "param_groups": header["param_groups"]}
    return model, optimizer, header.get("meta", {})


def stable_bytes(data: bytes) -> bytes:
    """A safetensors file's bytes with its JSON header re-written in sorted key order.

    safetensors (0.8) writes the ``__metadata__`` entries in a random order on every save, so two saves
    of the same tensors and metadata differ. Tensor offsets are relative to the end of the header, so
    the header can be re-serialised freely (padded with spaces to 8 bytes, as the format requires)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def save_stable(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with byte-identical output for identical input, written atomically."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_bytes(stable_bytes(save(tensors, metadata=metadata)))
