"""Alignment module: one subject feature -> K conditioning tokens for Stable Diffusion's decoupled
cross-attention (IP-Adapter), laid out exactly as diffusers' plain IP-Adapter so that
``pipe.load_ip_adapter`` reads the exported file as it is.

Parameters (``module.state_dict()`` keys are the exported file's keys)::

    image_proj.proj.weight (K*C, D), image_proj.proj.bias (K*C,)   linear: subject feature -> K*C
    image_proj.norm.weight (C,), image_proj.norm.bias (C,)         LayerNorm over each of the K tokens
    ip_adapter.{1,3,5,...}.to_k_ip.weight (H, C)                   key / value of the image tokens in the
    ip_adapter.{1,3,5,...}.to_v_ip.weight (H, C)                   i-th cross-attention layer (no bias)

D is the subject feature length, C the UNet's ``cross_attention_dim``, H the width of that attention
layer. Cross-attention layers are taken in ``unet.attn_processors`` order, skipping the self-attention
``attn1`` layers, and numbered 1, 3, 5, ... as diffusers' loader (``_convert_ip_adapter_attn_to_diffusers``)
numbers them. diffusers 0.42 reads a plain projection as 4 tokens (C = rows of ``proj.weight`` // 4), so
only K = 4 can be exported; other K train but ``export_ip_adapter`` refuses them.

Files are safetensors only (no pickle): tensors in float32 plus string metadata (format tag, D, K, C,
the backbone identity, the base pipeline identity, the layer names).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spotdiff.errors import InputError, MissingInputError

FORMAT = "spotdiff-ip-adapter-v1"
"""Value of the ``format`` metadata key of every exported adapter file."""
DIFFUSERS_PLAIN_TOKENS = 4
"""Tokens diffusers' ``load_ip_adapter`` assumes for a plain (``image_proj.proj``) projection."""


class TokenProjection(nn.Module):
    """Subject feature (N, D) -> tokens (N, K, C): linear, reshape, LayerNorm. The same computation as
    diffusers' ``ImageProjection`` (whose ``image_embeds`` layer is this ``proj``)."""

    def __init__(self, feature_dim: int, num_tokens: int, cross_attention_dim: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.proj = nn.Linear(feature_dim, num_tokens * cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.proj(feats.to(self.proj.weight.dtype))
        return self.norm(x.reshape(feats.shape[0], self.num_tokens, -1))


class ImageKeyValue(nn.Module):
    """The key and value projections of the image tokens in one cross-attention layer: C -> H, no bias
    (as the layer's own text ``to_k``/``to_v``)."""

    def __init__(self, cross_attention_dim: int, hidden_size: int):
        super().__init__()
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)


def cross_attention_layers(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """(processor name, attention module) of every cross-attention layer of ``unet``, in the order and
    by the rule diffusers' IP-Adapter loader uses: every processor not named ``...attn1.processor``
    (and not in a motion module). ValueError when a layer does not read ``cross_attention_dim`` inputs."""
    cross_dim = unet.config.cross_attention_dim
    if not isinstance(cross_dim, int):
        raise ValueError(f"UNet cross_attention_dim is {cross_dim!r}; the alignment module needs one int "
                         "(per-block cross-attention widths are not supported)")
    layers = []
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        if attn.to_k.in_features != cross_dim:
            raise ValueError(f"UNet layer {name}: its to_k reads {attn.to_k.in_features} channels, not the "
                             f"UNet's cross_attention_dim {cross_dim}")
        layers.append((name, attn))
    if not layers:
        raise ValueError("the UNet has no cross-attention layers to attach an alignment module to")
    return layers


class AlignmentModule(nn.Module):
    """Subject feature (N, D) float32 -> K conditioning tokens (N, K, C), plus the image key/value
    projections of every cross-attention layer of the UNet it was built for.

    ``layers``: (processor name, hidden size H) of each cross-attention layer in ``unet.attn_processors``
    order (``cross_attention_layers``). Use ``from_unet`` to build one for a given UNet.
    """

    def __init__(self, feature_dim: int, num_tokens: int, cross_attention_dim: int,
                 layers: Sequence[tuple[str, int]]):
        super().__init__()
        for what, value in (("feature_dim", feature_dim), ("num_tokens", num_tokens),
                            ("cross_attention_dim", cross_attention_dim)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{what} must be a positive int, got {value!r}")
        if not layers:
            raise ValueError("layers is empty: an alignment module needs at least one cross-attention layer")
        self.feature_dim = int(feature_dim)
        self.num_tokens = int(num_tokens)
        self.cross_attention_dim = int(cross_attention_dim)
        self.layer_names: tuple[str, ...] = tuple(name for name, _ in layers)
        self.image_proj = TokenProjection(self.feature_dim, self.num_tokens, self.cross_attention_dim)
        self.ip_adapter = nn.ModuleDict({layer_key(i): ImageKeyValue(self.cross_attention_dim, int(h))
                                         for i, (_, h) in enumerate(layers)})

    @classmethod
    def from_unet(cls, unet: nn.Module, feature_dim: int, num_tokens: int = DIFFUSERS_PLAIN_TOKENS, *,
                  seed: int = 0) -> AlignmentModule:
        """A module for ``unet``: C from its config, one key/value pair per cross-attention layer with
        that layer's width. ``proj`` starts from torch's default init drawn with ``seed``;
        ``to_k_ip``/``to_v_ip`` start as copies of the layer's own text ``to_k``/``to_v`` (as IP-Adapter
        does), so the image tokens are first attended like text tokens."""
        layers = cross_attention_layers(unet)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = cls(feature_dim, num_tokens, int(unet.config.cross_attention_dim),
                         [(name, attn.to_k.out_features) for name, attn in layers])
        with torch.no_grad():
            for i, (_, attn) in enumerate(layers):
                kv = module.ip_adapter[layer_key(i)]
                kv.to_k_ip.weight.copy_(attn.to_k.weight.float())
                kv.to_v_ip.weight.copy_(attn.to_v.weight.float())
        return module

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Subject features (N, D) -> tokens (N, K, C)."""
        if feats.ndim != 2 or feats.shape[1] != self.feature_dim:
            raise ValueError(f"subject features must be (N, {self.feature_dim}), got {tuple(feats.shape)}")
        return self.image_proj(feats)


def layer_key(i: int) -> str:
    """Key of the ``i``-th cross-attention layer (0-based) in the ``ip_adapter.*`` namespace: 2i + 1."""
    return str(2 * i + 1)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class AdapterMeta:
    """What an exported adapter file says about itself."""

    feature_dim: int
    """D: length of the subject feature it reads."""
    num_tokens: int
    """K: conditioning tokens per subject feature."""
    cross_attention_dim: int
    """C: the UNet's text-token width the tokens share."""
    backbone: str
    """Identity of the image backbone (and subject encoder) whose features it was trained on."""
    base_model: str
    """Identity of the Stable Diffusion pipeline it was trained with ('' when not given)."""
    layers: tuple[str, ...]
    """Processor names of the cross-attention layers, in ``ip_adapter.1, 3, ...`` order."""


def export_ip_adapter(module: AlignmentModule, path: str | Path, *, backbone: str, base_model: str = "") -> Path:
    """Write ``module`` to ``path`` (must end in ``.safetensors``: diffusers picks the reader by suffix)
    as one safetensors file with flat ``image_proj.*`` / ``ip_adapter.N.*`` float32 tensors and metadata
    (format, D, K, C, ``backbone``, ``base_model``, layer names). Atomic: a crash leaves no partial file.
    ValueError for K != 4 (diffusers could not load it) or a wrong suffix. Returns the path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"adapter path {path} must end in .safetensors (diffusers' load_ip_adapter reads "
                         "other suffixes with torch.load)")
    if module.num_tokens != DIFFUSERS_PLAIN_TOKENS:
        raise ValueError(f"alignment module has {module.num_tokens} tokens; diffusers' load_ip_adapter reads a "
                         f"plain IP-Adapter projection as {DIFFUSERS_PLAIN_TOKENS} tokens, so only "
                         f"{DIFFUSERS_PLAIN_TOKENS} can be exported (train.stage2.tokens)")
    from spotdiff.model.checkpoint import save_stable

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    metadata = {"format": FORMAT, "feature_dim": str(module.feature_dim), "num_tokens": str(module.num_tokens),
                "cross_attention_dim": str(module.cross_attention_dim), "backbone": str(backbone),
                "base_model": str(base_model), "layers": json.dumps(list(module.layer_names))}
    # Sorted header: safetensors orders metadata keys at random, and the adapter ships in releases.
    save_stable(tensors, path, metadata)
    return path


def read_adapter_meta(path: str | Path) -> AdapterMeta:
    """The metadata of the adapter file at ``path`` (reads the header only). FileNotFoundError naming the
    path when it is missing; ValueError naming it when it is not a SpotDiff adapter file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"adapter file {path} not found (write one with export_ip_adapter after stage 2)")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # noqa: BLE001 -- safetensors raises its own error type for any bad header
        raise InputError(f"adapter file {path} is not a safetensors file ({type(err).__name__}: {err})") from err
    if meta.get("format") != FORMAT:
        raise InputError(f"adapter file {path}: format {meta.get('format')!r}, expected {FORMAT!r} "
                         "(written by spotdiff.model.adapter.export_ip_adapter)")
    try:
        return AdapterMeta(int(meta["feature_dim"]), int(meta["num_tokens"]), int(meta["cross_attention_dim"]),
                           meta["backbone"], meta.get("base_model", ""), tuple(json.loads(meta["layers"])))
    except (KeyError, ValueError) as err:
        raise InputError(f"adapter file {path}: damaged metadata ({type(err).__name__}: {err})") from err


def load_alignment(path: str | Path) -> tuple[AlignmentModule, AdapterMeta]:
    """(module, metadata) from a file written by ``export_ip_adapter``: the module's state dict equals
    the file's tensors exactly. Errors as ``read_adapter_meta``, plus ValueError when the tensors do not
    match the metadata's layout."""
    from safetensors.torch import load_file

    meta = read_adapter_meta(path)
    tensors = load_file(str(path))
    hidden = []
    for i in range(len(meta.layers)):
        weight = tensors.get(f"ip_adapter.{layer_key(i)}.to_k_ip.weight")
        if weight is None:
            raise InputError(f"adapter file {path}: no ip_adapter.{layer_key(i)}.to_k_ip.weight for layer "
                             f"{meta.layers[i]}")
        hidden.append(int(weight.shape[0]))
    module = AlignmentModule(meta.feature_dim, meta.num_tokens, meta.cross_attention_dim,
                             list(zip(meta.layers, hidden)))
    want, have = set(module.state_dict()), set(tensors)
    if want != have:
        raise InputError(f"adapter file {path}: missing keys {sorted(want - have)[:5]}, unexpected keys "
                         f"{sorted(have - want)[:5]}")
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise InputError(f"adapter file {path}: tensors do not match its metadata ({err})") from err
    return module, meta


# --------------------------------------------------------------------------- attaching to a UNet


def check_compatible(layers: Sequence[str], cross_attention_dim: int, unet: nn.Module, where: str) -> None:
    """ValueError naming ``where`` when an adapter with these ``layers`` and C does not fit ``unet``."""
    have = [name for name, _ in cross_attention_layers(unet)]
    if int(unet.config.cross_attention_dim) != cross_attention_dim:
        raise InputError(f"{where}: made for cross_attention_dim {cross_attention_dim}, but the UNet has "
                         f"{unet.config.cross_attention_dim} (a different Stable Diffusion family)")
    if list(layers) != have:
        raise InputError(f"{where}: made for a UNet with {len(layers)} cross-attention layers, this one has "
                         f"{len(have)} (or they are named differently): a different architecture")


@contextmanager
def attached(unet: nn.Module, module: AlignmentModule, scale: float = 1.0) -> Iterator[nn.Module]:
    """Within the block, ``unet`` runs with ``module`` as its IP-Adapter, exactly as after
    ``load_ip_adapter`` of the exported file: diffusers' ``IPAdapterAttnProcessor2_0`` on every
    cross-attention layer, holding the module's own ``to_k_ip``/``to_v_ip`` layers (shared, not copied,
    so gradients reach the module), and ``module.image_proj`` as the UNet's ``encoder_hid_proj``. Call the
    UNet with ``added_cond_kwargs={"image_embeds": [feats[:, None, :]]}``. The UNet's processors and
    projection are restored on exit, also after an error. ValueError when the module does not fit the
    UNet or the UNet already carries an IP-Adapter."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    check_compatible(module.layer_names, module.cross_attention_dim, unet, "alignment module")
    if unet.encoder_hid_proj is not None or unet.config.encoder_hid_dim_type is not None:
        raise ValueError(f"the UNet already has an encoder_hid_proj ({unet.config.encoder_hid_dim_type!r}); "
                         "unload the IP-Adapter loaded into it first (pipe.unload_ip_adapter())")
    saved = dict(unet.attn_processors)
    procs: dict[str, Any] = dict(saved)
    with torch.random.fork_rng(devices=[]):  # the processors' own throw-away init must not move the global RNG
        for i, name in enumerate(module.layer_names):
            kv = module.ip_adapter[layer_key(i)]
            proc = IPAdapterAttnProcessor2_0(hidden_size=kv.to_k_ip.out_features,
                                             cross_attention_dim=module.cross_attention_dim,
                                             num_tokens=(module.num_tokens,), scale=float(scale))
            proc.to_k_ip = nn.ModuleList([kv.to_k_ip])
            proc.to_v_ip = nn.ModuleList([kv.to_v_ip])
            procs[name] = proc
    unet.set_attn_processor(procs)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([module.image_proj])
    unet.config.encoder_hid_dim_type = "ip_image_proj"  # what diffusers' own loader sets
    try:
        yield unet
    finally:
        unet.set_attn_processor(saved)
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None
