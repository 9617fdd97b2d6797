"""NormWear (``normwear_last_checkpoint-15470-correct.pth``): a multichannel ViT over per-channel CWT images.

Re-implemented from the architecture facts in ``shared/golden/normwear/schema.json`` (official code:
``NormWear_anonymous/modules/normwear.py`` with timm 0.4.12 ``Block``; wrapper ``main_model.py``) and proven
against the golden tensors made by running that code (``tests/models/test_normwear.py``). Attribute names
follow the official ``NormWear`` class, so :meth:`state_dict` has exactly the published, backbone-relative
keys, including the MAE decoder that the checkpoint carries but embeddings never use.

Input and preprocessing
    The model reads a CWT, not raw samples: ``(B, nvar, 3, L, 65)``, per channel the Ricker scalograms of
    (signal, 1st difference, 2nd difference) at 65 scales. :func:`normwear_cwt` computes it with NumPy
    only (self-contained, so the device can run it without torch between
    ``edge_bridge.signals.process_window`` and the ``target_front`` graph), in both published variants:
    ``"scipy"`` (SciPy <= 1.14 ``cwt`` + ``ricker``, which BioX-Bridge's FOG data used; length
    ``L_raw - 2``) and ``"optimized"`` (NormWearModel's torch
    ``calc_cwt``, which the golden ``io.npz`` used; length ``L_raw - 1``). They differ strongly at small
    scales; pick the one the model was fitted on. :func:`preprocessing` gives the raw-signal spec.

Backbone view
    ``embed``: patch embedding (Conv2d (9, 5), stride (9, 5)) of each channel's CWT image, time-major
    tokens (``t * 13 + f``), plus the fixed 2-D sin-cos position table, plus a CLS token:
    ``(B, nvar, 3, L, 65)`` -> ``(B * nvar, 1 + 43 * 13, E)`` (rows ``b * nvar + v``).
    ``blocks``: ``encoder_blocks``; each runs a timm Block per channel, and even layers also fuse the
    channels' CLS tokens with a second Block (attention across channels).
    Pooling (BioX-Bridge's rule, golden ``final_biox_pooled``): the last block output *before*
    ``norm``, averaged over channels and tokens -> ``(B, E)``.

Native vs canonical layout: a native boundary is ``(B * nvar, P, E)``; the canonical ``(batch, tokens,
features)`` view a bridge speaks is ``(B, nvar * P, E)`` (channel-major tokens), which is how BioX-Bridge
sizes the bridge output for NormWear. :class:`~edge_bridge.models.Boundary` reports the canonical sizes.
The number of channels is therefore fixed when the backbone is built (``in_channels``, default 3 for
the FOG EMG); the constructor's ``nvar`` only sizes the pretraining decoder, as in the official code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_bridge.models.backbone import Backbone, BackboneError, Boundary
from edge_bridge.models.config import config_from_dict

logger = logging.getLogger(__name__)

KIND = "normwear"
LAYER_NORM = "nn.LayerNorm (eps 1e-5)"
CWT_METHODS = ("optimized", "scipy")
# the constructor arguments a "-correct" checkpoint's NormWearModel does not pass to NormWear
_WRAPPER_KEYS = ("optimized_cwt", "use_cwt")


@dataclass(frozen=True)
class NormWearConfig:
    """``NormWear(**backbone_args)`` arguments (defaults: the published model) plus the input geometry.

    ``in_channels`` (number of signal channels the backbone is built for), ``input_samples`` (time length
    of the CWT image) and ``n_classes`` (an optional edge-bridge task head) are edge-bridge's; the rest are
    the official names. Pretraining-only arguments (masking) are accepted and kept for the record.
    """

    img_size: tuple[int, ...] = (387, 65)
    patch_size: tuple[int, ...] = (9, 5)
    in_chans: int = 3
    target_len: int = 388
    nvar: int = 4
    embed_dim: int = 768
    decoder_embed_dim: int = 512
    depth: int = 12
    num_heads: int = 12
    decoder_depth: int = 2
    mlp_ratio: float = 4.0
    norm_layer: str = LAYER_NORM
    fuse_freq: int = 2
    is_pretrain: bool = True
    mask_t_prob: float = 0.6
    mask_f_prob: float = 0.5
    mask_prob: float = 0.8
    mask_scheme: str = "random"
    use_cwt: bool = True
    attn_score: bool = False
    comb_freq: bool = False
    no_fusion: bool = False
    mean_fuse: bool = False
    in_channels: int = 3  # FOG: 3 EMG channels (the official code takes nvar from the input at run time)
    input_samples: int = 389  # CWT length: 389 = 390 raw samples via "optimized", 388 via "scipy"
    n_classes: int = 0  # edge-bridge task head on the pooled features; 0 = none
    # edge-bridge: take raw windows (batch, in_channels, input_samples + 1) and compute the "optimized" CWT
    # inside the model (a fixed conv1d filter bank, not in the state_dict), so the run pipeline, the bridge
    # and the exported target_front graph all start from raw samples; the device then needs no CWT code.
    raw_input: bool = False

    def __post_init__(self) -> None:
        if len(self.img_size) != 2 or len(self.patch_size) != 2:
            raise BackboneError(f"normwear: img_size and patch_size must be [height, width] pairs, got "
                                f"{list(self.img_size)} and {list(self.patch_size)}")
        if not self.norm_layer.startswith("nn.LayerNorm") or "1e-5" not in self.norm_layer:
            raise BackboneError(f"normwear: only norm_layer {LAYER_NORM!r} (the published one) is supported, "
                                f"got {self.norm_layer!r}")
        if not self.use_cwt:
            raise BackboneError("normwear: use_cwt=false (the raw-series patch embedding) is not part of the "
                                "published model and is not implemented; use use_cwt=true")
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise BackboneError(f"normwear: embed_dim={self.embed_dim} must be divisible by num_heads="
                                f"{self.num_heads} and by 4 (2-D sin-cos positions)")
        if self.is_pretrain and self.decoder_embed_dim % 8:
            raise BackboneError(f"normwear: decoder_embed_dim={self.decoder_embed_dim} must be divisible by "
                                "the decoder's 8 heads")
        small = {k: getattr(self, k) for k in ("in_chans", "nvar", "depth", "fuse_freq", "in_channels")
                 if getattr(self, k) < 1}
        if small:
            raise BackboneError(f"normwear: these config values must be positive, got {small}")
        if self.input_samples < self.patch_size[0]:
            raise BackboneError(f"normwear: input_samples={self.input_samples} is shorter than one patch "
                                f"({self.patch_size[0]}); the CWT of a 3 s window at 130 Hz has 388-389")


def normalise_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Accept the published nested config as well as the flat one, and return the flat one.

    ``schema.json: published_config`` is ``{"NormWearModel": {...}, "backbone_args": {...},
    "backbone_defaults_used": {...}}``; ``small.json: config`` is flat. The nested form is merged as
    defaults <- backbone_args <- any flat keys. ``NormWearModel``'s own keys (``optimized_cwt``,
    ``use_cwt``) choose the wrapper's CWT and do not change the network; ``use_cwt`` must agree.
    """
    cfg = dict(config or {})
    wrapper = cfg.pop("NormWearModel", None) or {}
    flat: dict[str, Any] = {}
    for section in ("backbone_defaults_used", "backbone_args"):
        part = cfg.pop(section, None) or {}
        if not isinstance(part, dict):
            raise BackboneError(f"normwear: config section {section!r} must be a mapping, got {part!r}")
        flat.update(part)
    flat.update(cfg)
    if not isinstance(wrapper, dict):
        raise BackboneError(f"normwear: config section 'NormWearModel' must be a mapping, got {wrapper!r}")
    unknown = sorted(set(wrapper) - set(_WRAPPER_KEYS))
    if unknown:
        raise BackboneError(f"normwear: unknown NormWearModel keys {unknown}; expected {list(_WRAPPER_KEYS)}")
    if "use_cwt" in wrapper and flat.get("use_cwt", wrapper["use_cwt"]) != wrapper["use_cwt"]:
        raise BackboneError("normwear: NormWearModel.use_cwt and backbone_args.use_cwt disagree")
    for key in ("img_size", "patch_size"):
        if isinstance(flat.get(key), int):
            flat[key] = [flat[key], flat[key]]  # timm's to_2tuple
    return flat


# --- fixed sin-cos position table (MAE's get_2d_sincos_pos_embed_flexible) ----------------------------
def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """``[sin(pos * omega_i), cos(pos * omega_i)]`` with ``omega_i = 10000 ** (-i / (dim / 2))``."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))  # (dim/2,)
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)  # (M, dim/2)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, dim)


def sincos_pos_embed_2d(dim: int, grid_hw: tuple[int, int], cls_token: bool = True) -> np.ndarray:
    """The fixed table NormWear stores as ``pos_embed``: ``(1 + h * w, dim)``, row 0 (CLS) all zeros.

    For the patch at time ``t`` and frequency ``f`` (row ``1 + t * w + f``) the first ``dim/2`` columns
    encode ``f`` and the last ``dim/2`` encode ``t``: MAE's flexible variant builds ``meshgrid(w, h)`` and
    feeds grid[0] (the width/frequency index) to the first half.
    """
    h, w = grid_hw
    gw, gh = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))  # (h, w) each
    emb = np.concatenate([_sincos_1d(dim // 2, gw), _sincos_1d(dim // 2, gh)], axis=1)  # (h*w, dim)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb.astype(np.float32)


# --- timm 0.4.12 ViT block, re-implemented ------------------------------------------------------------
class Attention(nn.Module):
    """timm 0.4.12 ``Attention``: fused qkv, scaled dot product with scale ``head_dim ** -0.5``, proj.

    Written with explicit matmul + softmax (not ``scaled_dot_product_attention``) so the ONNX graph is
    plain MatMul/Softmax that every runtime and the INT8 quantizer handle.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, heads, N, N)
        out = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """timm ``Mlp``: fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """timm 0.4.12 ``Block``: pre-LN, ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``; LayerNorm eps 1e-5."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, C)
        return x + self.mlp(self.norm2(x))


class EncoderLayer(nn.Module):
    """One NormWear layer: a Block per channel, then (even layers) a Block across the channels' CLS tokens.

    ``nvar`` is the number of channels folded into the batch (rows ``b * nvar + v``); the official code
    sets it from the input before every call, here it is fixed when the backbone is built.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float, nvar: int, fuse_frequency: int,
                 curr_layer: int, no_fusion: bool = False, mean_fuse: bool = False) -> None:
        super().__init__()
        self.nvar = nvar
        self.fuse = curr_layer % fuse_frequency == 0
        self.no_fusion = no_fusion
        self.mean_fuse = mean_fuse
        self.variate_encoder = Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True)
        if self.fuse:
            self.cls_fusion = Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, e = x.shape  # (B * nvar, N, E)
        x = self.variate_encoder(x)
        if not self.fuse or self.no_fusion:
            return x
        z = x.reshape(-1, self.nvar, n, e)  # (B, nvar, N, E)
        cls = z.mean(dim=2) if self.mean_fuse else z[:, :, 0, :]  # (B, nvar, E)
        cls = self.cls_fusion(cls).unsqueeze(2)  # (B, nvar, 1, E): attention across channels
        return torch.cat((cls, z[:, :, 1:, :]), dim=2).reshape(-1, n, e)  # (B * nvar, N, E)


class PatchEmbed(nn.Module):
    """NormWear's ``PatchEmbed_new``: non-overlapping Conv2d patches, flattened time-major."""

    def __init__(self, patch_size: tuple[int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patches along time and frequency for a ``height x width`` image (floor, like the conv)."""
        ph, pw = self.patch_size
        return (height - ph) // ph + 1, (width - pw) // pw + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, C, L, F) -> (N, h * w, E)


class SpatialRecon(nn.Module):
    """The pretraining decoder's ``Spatial_recon`` (kept so the checkpoint loads; never run here)."""

    def __init__(self, nvar: int, embed_dim: int, inter_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(nvar * embed_dim)
        self.conv1 = nn.Conv1d(nvar * embed_dim, inter_dim, kernel_size=1)
        self.conv2 = nn.Conv1d(inter_dim, nvar, kernel_size=1)
        self.gelu = nn.GELU()


class NormWear(Backbone):
    """NormWear as a :class:`Backbone`; see the module docstring and :class:`NormWearConfig`."""

    kind = KIND

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        cfg = config_from_dict(NormWearConfig, normalise_config(config), what=KIND)
        super().__init__(asdict(cfg))
        self.cfg = cfg
        e = cfg.embed_dim
        patch = (int(cfg.patch_size[0]), int(cfg.patch_size[1]))
        # creation order follows the official NormWear.__init__, so state_dict() lists the published keys
        self.patch_embed = PatchEmbed(patch, cfg.in_chans, e)
        self.grid_hw = self.patch_embed.grid(int(cfg.img_size[0]), int(cfg.img_size[1]))  # (43, 13)
        n_pos = self.grid_hw[0] * self.grid_hw[1] + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, e), requires_grad=False)  # fixed sin-cos
        self.encoder_blocks = nn.ModuleList([
            EncoderLayer(e, cfg.num_heads, cfg.mlp_ratio, cfg.in_channels, cfg.fuse_freq, i,
                         no_fusion=cfg.no_fusion, mean_fuse=cfg.mean_fuse)
            for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(e, eps=1e-5)  # official final norm: in get_embedding, not in BioX pooling
        if cfg.is_pretrain:  # the MAE decoder: in the checkpoint, unused for embeddings
            d = cfg.decoder_embed_dim
            self.decoder_embed = nn.Linear(e, d)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
            self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n_pos, d), requires_grad=False)
            self.decoder_blocks = nn.ModuleList([Block(d, 8, cfg.mlp_ratio, qkv_bias=False)
                                                 for _ in range(cfg.decoder_depth)])
            self.temporal_recon = nn.Linear(n_pos, cfg.target_len)
            self.spatial_recon = SpatialRecon(cfg.nvar, d, e // 2)
            self.decoder_norm = nn.LayerNorm(d, eps=1e-5)
        self.head = nn.Linear(e, cfg.n_classes) if cfg.n_classes else None
        if cfg.raw_input:  # the Ricker bank of normwear_cwt("optimized") for raw windows of this length
            kernels, lefts, out_len = _optimized_bank(cfg.input_samples + 1 - 2)
            if out_len != cfg.input_samples:
                raise BackboneError(f"normwear: raw_input needs an input_samples the optimized CWT can "
                                    f"produce (got {cfg.input_samples}, a raw window gives {out_len})")
            bank = torch.tensor(np.stack(kernels), dtype=torch.float32)[:, None, :]  # (65, 1, wl)
            self.register_buffer("cwt_bank", bank, persistent=False)
            self._cwt_pad = lefts[0]
        self._init_weights()
        self._finish_init()
        self.eval()

    def _init_weights(self) -> None:
        """The official initialisation (sin-cos tables, xavier Linear, N(0, 0.02) tokens), for random use."""
        with torch.no_grad():
            self.pos_embed.copy_(torch.from_numpy(sincos_pos_embed_2d(self.cfg.embed_dim, self.grid_hw)))
            nn.init.normal_(self.cls_token, std=0.02)
            if self.cfg.is_pretrain:
                self.decoder_pos_embed.copy_(torch.from_numpy(
                    sincos_pos_embed_2d(self.cfg.decoder_embed_dim, self.grid_hw)))
                nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _finish_init(self) -> None:
        """Measure the boundaries from the embedding alone: every block keeps ``(B * nvar, P, E)``.

        A dry run through all blocks of the published model costs ~10 s of CPU (3 x 560 tokens, 12 layers of
        width 768); the blocks are shape-preserving by construction, and the tests check the measured
        shapes of a full pass on the reduced model.
        """
        with torch.no_grad():
            h = self.embed(torch.zeros(1, *self.input_shape))  # (nvar, P, E)
        self._boundaries = [self._measure(h)] * (len(self.encoder_blocks) + 1)

    # --- Backbone parts -------------------------------------------------------------------------------
    @property  # type: ignore[override]
    def blocks(self) -> nn.ModuleList:
        """The official ``encoder_blocks`` (one module, one set of state_dict keys)."""
        return self.encoder_blocks

    @property
    def layout(self) -> str:
        return "btd"

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """``(channels, 3, L, 65)``: one window's CWT image per channel (signal, 1st and 2nd difference).

        With ``raw_input`` it is the raw window ``(channels, L + 1)`` instead.
        """
        if self.cfg.raw_input:
            return (self.cfg.in_channels, self.cfg.input_samples + 1)
        return (self.cfg.in_channels, self.cfg.in_chans, self.cfg.input_samples, int(self.cfg.img_size[1]))

    def cwt(self, x: torch.Tensor) -> torch.Tensor:
        """Raw ``(B, nvar, L)`` -> CWT image ``(B, nvar, 3, L - 1, 65)``: :func:`normwear_cwt` in torch."""
        b, nvar, length = x.shape
        xf = x.reshape(b * nvar, length)
        d1 = xf[:, 1:] - xf[:, :-1]  # (S, L-1)
        d2 = d1[:, 1:] - d1[:, :-1]  # (S, L-2)
        series = torch.stack([xf[:, 2:], d1[:, 1:], d2], dim=1).reshape(-1, 1, length - 2)  # (S*3, 1, L-2)
        res = F.conv1d(series, self.cwt_bank, padding=self._cwt_pad)  # (S*3, 65, L')
        return res.transpose(1, 2).reshape(b, nvar, 3, res.shape[-1], res.shape[1])  # (B, nvar, 3, L', 65)

    @property
    def block_paths(self) -> list[str]:
        return [f"encoder_blocks.{k}" for k in range(self.n_blocks)]

    def _check_input(self, x: torch.Tensor) -> None:
        if self.cfg.raw_input:
            if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
                raise BackboneError(f"normwear (raw_input): expected raw windows of shape (batch, "
                                    f"{self.input_shape[0]}, {self.input_shape[1]}), got {tuple(x.shape)}")
            return
        nvar, ch, length, width = self.input_shape
        ok = x.ndim == 5 and tuple(x.shape[1:3]) == (nvar, ch) and int(x.shape[4]) == width
        if ok:
            ok = self.patch_embed.grid(int(x.shape[3]), width) == self.patch_embed.grid(length, width)
        if not ok:
            n_time = self.patch_embed.grid(length, width)[0]
            raise BackboneError(
                f"normwear: expected a CWT input of shape (batch, {nvar}, {ch}, {length}, {width}) (any "
                f"length giving the same {n_time} time patches is accepted), got "
                f"{tuple(x.shape)}; compute it with edge_bridge.models.normwear.normwear_cwt from "
                f"(batch, {nvar}, samples) and build the backbone with in_channels = the number of channels")

    def _pos_embed(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """``pos_adjust``: the stored table, resized bicubically if the patch grid is not the trained one."""
        if grid_hw == self.grid_hw:
            return self.pos_embed
        e = self.pos_embed.shape[-1]
        tokens = self.pos_embed[:, 1:].reshape(1, *self.grid_hw, e).permute(0, 3, 1, 2)  # (1, E, h0, w0)
        tokens = F.interpolate(tokens, size=grid_hw, mode="bicubic", align_corners=False)
        return torch.cat((self.pos_embed[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """CWT ``(B, nvar, 3, L, F)`` (or, with ``raw_input``, raw ``(B, nvar, L + 1)``) -> tokens entering
        block 0 ``(B * nvar, 1 + h * w, E)``."""
        if self.cfg.raw_input and x.ndim == 3:
            x = self.cwt(x)
        _, _, ch, length, width = x.shape
        pos = self._pos_embed(self.patch_embed.grid(int(length), int(width)))  # (1, 1 + P, E)
        h = self.patch_embed(x.reshape(-1, ch, length, width)) + pos[:, 1:, :]  # (B * nvar, P, E)
        cls = (self.cls_token + pos[:, :1, :]).expand(h.shape[0], -1, -1)  # (B * nvar, 1, E)
        return torch.cat((cls, h), dim=1)

    # --- layouts: native (B * nvar, P, E) <-> canonical (B, nvar * P, E) ------------------------------
    def _measure(self, h: torch.Tensor) -> Boundary:
        if h.ndim != 3:
            raise BackboneError(f"{self.kind}: block boundaries must be 3-D tensors, got {tuple(h.shape)}")
        return Boundary(self.cfg.in_channels * int(h.shape[1]), int(h.shape[2]), "btd")

    def to_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """``(B * nvar, P, E)`` -> ``(B, nvar * P, E)``, channel-major tokens."""
        return h.reshape(-1, self.cfg.in_channels * h.shape[1], h.shape[2])

    def from_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, nvar * P, E)`` -> ``(B * nvar, P, E)``."""
        return z.reshape(-1, z.shape[1] // self.cfg.in_channels, z.shape[2])

    def pool(self, h: torch.Tensor) -> torch.Tensor:
        """BioX-Bridge's rule: mean over channels and tokens (CLS included) -> ``(B, E)``."""
        return self.to_tokens(h).mean(dim=1)

    def head_forward(self, y: torch.Tensor) -> torch.Tensor:
        """Last-block output -> BioX pooling (before ``norm``) -> head, or the pooled features."""
        feats = self.pool(y)  # (B, E)
        return feats if self.head is None else self.head(feats)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``final_biox_pooled``: last block output averaged over channels and tokens, ``(B, E)``."""
        self._check_input(x)
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.pool(h)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """``NormWearModel.get_embedding`` on a CWT: ``norm(last block)`` as ``(B, nvar, P, E)``."""
        h = self.block_outputs(x)[-1]
        z = self.norm(h).reshape(-1, self.cfg.in_channels, h.shape[1], h.shape[2])  # (B, nvar, P, E)
        if self.cfg.comb_freq:  # sum the frequency patches of each time step (CLS kept)
            b, v, _, e = z.shape
            w = self.grid_hw[1]
            z = torch.cat((z[:, :, :1], z[:, :, 1:].reshape(b, v, -1, w, e).sum(dim=3)), dim=2)
        return z

    # --- loading --------------------------------------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike[str]) -> NormWear:
        """Load the published ``.pth`` (``{'model': state_dict}``) or a safetensors file, strictly.

        Keys may be backbone-relative (the "-correct" file) or carry ``backbone.`` / ``module.`` prefixes
        (other NormWear checkpoints); any missing, unexpected or mis-shaped key is an error listing them.
        The official loader's bare ``try/except`` that only prints is deliberately not reproduced.
        """
        from edge_bridge.models import checkpoints

        # MAE-style training checkpoints also pickle the run's argparse Namespace: read as an inert stub
        tensors = checkpoints.load_state_dict_file(path, container_keys=("model",),
                                                   stub_classes=("Namespace",))
        for prefix in ("module.", "backbone."):
            tensors = checkpoints.strip_prefix(tensors, prefix)
        checkpoints.load_strict(self, tensors, source=str(path))
        return self


# --- the CWT, in NumPy (device-side, torch-free) ------------------------------------------------------
def ricker(points: float, a: float) -> np.ndarray:
    """SciPy <= 1.14 ``signal.ricker``: ``A (1 - t^2/a^2) exp(-t^2 / (2 a^2))``, ``A = 2/(sqrt(3a) pi^1/4)``.

    ``points`` may be fractional, as ``cwt`` passes ``min(10 * width, len)``: ``np.arange(0, points)`` then
    has ``ceil(points)`` samples centred on ``(points - 1) / 2``, which is what SciPy did (and what the
    reference data reproduce), even where that is off-centre by a hair.
    """
    amp = 2 / (np.sqrt(3 * a) * (np.pi ** 0.25))
    vec = np.arange(0, points) - (points - 1.0) / 2
    xsq = vec ** 2
    return amp * (1 - xsq / a ** 2) * np.exp(-xsq / (2 * a ** 2))


def _correlate_bank(x: np.ndarray, kernels: list[np.ndarray], lefts: list[int], out_len: int,
                    chunk: int = 64) -> np.ndarray:
    """Correlate every row with every kernel: ``out[s, t, c] = sum_k x_c[s, t + k - lefts[c]] kernels[c][k]``.

    ``x`` is zero outside ``0..n-1`` (each kernel has its own left padding ``lefts[c]``). The kernels are
    placed in one zero-padded bank, offset so that a single common left padding serves all of them; then
    the whole filter bank is one sliding-window matmul per chunk of rows: ``(S, n)`` -> ``(S, out_len, C)``.
    """
    l0 = max(lefts)
    total = max(l0 - left + len(k) for k, left in zip(kernels, lefts, strict=True))
    bank = np.zeros((total, len(kernels)), dtype=np.float64)  # (total, C)
    for c, (k, left) in enumerate(zip(kernels, lefts, strict=True)):
        bank[l0 - left:l0 - left + len(k), c] = k
    n = x.shape[1]
    xp = np.pad(x, ((0, 0), (l0, max(0, out_len + total - 1 - l0 - n))))
    out = np.empty((x.shape[0], out_len, len(kernels)), dtype=np.float64)
    for s in range(0, x.shape[0], chunk):  # bounded memory: the windows are copied for the matmul
        windows = np.lib.stride_tricks.sliding_window_view(xp[s:s + chunk], total, axis=1)[:, :out_len]
        out[s:s + chunk] = windows @ bank  # (rows, out_len, total) @ (total, C)
    return out


def _scipy_bank(n: int, widths: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """SciPy's per-width wavelets as correlation kernels, with the left padding of ``convolve(mode='same')``.

    Per width: ``N = min(10 * width, n)``, ``wavelet_data = ricker(N, width)[::-1]``; convolving with it is
    correlating with ``wavelet_data[::-1]``, and 'same' keeps the full output from ``(m - 1) // 2`` on, i.e.
    ``m - 1 - (m - 1) // 2`` zeros on the left.
    """
    kernels, lefts = [], []
    for width in widths:
        wavelet_data = ricker(min(10 * width, n), width)[::-1]
        m = len(wavelet_data)
        kernels.append(wavelet_data[::-1])
        lefts.append(m - 1 - (m - 1) // 2)
    return kernels, lefts


def cwt_scipy(data: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """SciPy <= 1.14 ``signal.cwt(data, signal.ricker, widths)`` for each row: ``(S, n)`` -> ``(S, W, n)``.

    ``scipy.signal.cwt`` was removed in SciPy 1.15, so this re-implements it (float64) instead of importing
    it; see :func:`_scipy_bank` for the per-width kernels.
    """
    x = np.atleast_2d(np.asarray(data, dtype=np.float64))
    kernels, lefts = _scipy_bank(x.shape[1], np.asarray(widths))
    return _correlate_bank(x, kernels, lefts, x.shape[1]).transpose(0, 2, 1)


def _optimized_bank(n: int, lowest: float = 0.1, largest: float = 64.0, step: float = 1.0
                    ) -> tuple[list[np.ndarray], list[int], int]:
    """NormWear's torch ``cwt_ricker``: one wavelet length ``min(10 * largest, n)`` for all scales.

    ``conv1d`` is a correlation with ``len // 2`` zeros on each side, so the output has
    ``n + 2 * (len // 2) - len + 1`` samples (``n + 1`` for an even ``len``). The scales are float32 like
    ``torch.arange(0.1, 65, 1)``. Returns ``(kernels, lefts, out_len)``.
    """
    scales = np.arange(lowest, largest + step, step, dtype=np.float32).astype(np.float64)
    wl = int(min(10 * largest, n))
    pad = wl // 2
    return [ricker(wl, scale) for scale in scales], [pad] * len(scales), n + 2 * pad - wl + 1


def normwear_cwt(x: np.ndarray, method: str = "optimized") -> np.ndarray:
    """Raw windows ``(B, nvar, L)`` -> NormWear's input ``(B, nvar, 3, L', 65)`` float32, NumPy only.

    Per channel the three series ``x[2:]``, ``diff(x)[1:]``, ``diff(diff(x))`` (each ``L - 2`` long) are
    transformed with Ricker wavelets at 65 scales 0.1, 1.1, ..., 64.1 and stacked as a 3-channel image
    (time, scale). Two published variants, which differ strongly at small scales:

    ``"optimized"``
        ``NormWearModel.calc_cwt`` with ``optimized_cwt=True`` (torch ``cwt_wrap``): ``L' = L - 1``. This is
        what the golden ``io.npz`` input was made with, and what ``NormWearModel.get_embedding`` does.
    ``"scipy"``
        ``scipy.signal.cwt(ts, ricker, np.arange(0.1, 65))`` as in BioX-Bridge's ``make_FOG.py`` (the FOG
        data the published bridge used): ``L' = L - 2``.

    On the device this runs after ``edge_bridge.signals.process_window`` (resample + z-score) and before
    the ``target_front`` graph, so the graph itself starts at the CWT image. It and its helpers use only
    NumPy (one filter-bank matmul, ~50 ms per 3-channel window on one core), but this module imports torch:
    the device must take them from a torch-free module (they are self-contained for that move).
    """
    if method not in CWT_METHODS:
        raise BackboneError(f"normwear: CWT method must be one of {CWT_METHODS}, got {method!r}")
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] < 4:
        raise BackboneError(f"normwear: expected raw windows (batch, channels, samples >= 4), got {x.shape}")
    b, nvar, length = x.shape
    xf = x.astype(np.float32).astype(np.float64).reshape(b * nvar, length)
    d1 = np.diff(xf, axis=1)  # (S, L-1)
    d2 = np.diff(d1, axis=1)  # (S, L-2)
    series = np.stack([xf[:, 2:], d1[:, 1:], d2], axis=1).reshape(b * nvar * 3, length - 2)  # (S*3, L-2)
    n = length - 2
    if method == "scipy":
        kernels, lefts = _scipy_bank(n, np.arange(0.1, 65))  # widths 0.1, 1.1, ..., 64.1
        out_len = n
    else:
        kernels, lefts, out_len = _optimized_bank(n)
    res = _correlate_bank(series, kernels, lefts, out_len)  # (S*3, L', 65): already (time, scale)
    return res.reshape(b, nvar, 3, out_len, len(kernels)).astype(np.float32)  # (B, nvar, 3, L', 65)


def cwt_length(raw_samples: int, method: str = "optimized") -> int:
    """Time length of :func:`normwear_cwt`'s output for ``raw_samples`` raw samples."""
    if method == "scipy":
        return raw_samples - 2
    n = raw_samples - 2
    wl = int(min(640, n))
    return n + 2 * (wl // 2) - wl + 1


def preprocessing(input_rate: float = 500.0, channels: tuple[str, ...] = ("emg1", "emg2", "emg3"),
                  window_s: float = 3.0, hop_s: float = 0.3) -> Any:
    """The raw-signal :class:`~edge_bridge.signals.Preprocessing` that feeds :func:`normwear_cwt` (FOG EMG).

    BioX-Bridge: EMG at 500 Hz, resampled to 130 Hz by linear interpolation, each channel mean-removed and
    divided by its std, cut into 3 s windows with a 0.3 s hop (390 samples), then CWT. The spec keeps the
    rates, window, hop and z-score; it resamples with ``resample_poly`` (anti-aliased, unlike linear
    interpolation) and z-scores per window rather than per recording (a streaming device never sees the
    recording). NormWear's nominal 65 Hz rate is not used by its embedding code. The CWT
    (:func:`normwear_cwt`) is model-specific and comes after this spec.
    """
    from edge_bridge.signals import Preprocessing

    return Preprocessing(modality="emg", channels=tuple(channels), input_rate=input_rate, output_rate=130.0,
                         window_s=window_s, hop_s=hop_s, bandpass=None, normalise="zscore")


def build_normwear(config: dict[str, Any]) -> Backbone:
    return NormWear(config)


__all__ = ["NormWear", "NormWearConfig", "cwt_length", "cwt_scipy", "normwear_cwt", "preprocessing", "ricker",
           "sincos_pos_embed_2d"]
