"""LaBraM-Base (``labram-base.pth``) as a :class:`Backbone`, in plain torch.

Re-written from LaBraM's ``modeling_finetune.NeuralTransformer`` (timm 0.4.12 style) with the official
attribute names, so ``state_dict()`` has the published keys and the checkpoint loads strictly; faithfulness
is proven against ``golden/labram`` (tests/models). braindecode's ``Labram`` was not used: its module names
differ from the checkpoint's, so loading would need a rename table that itself needs proving.

Architecture:

- input ``(B, N, A, 200)``: N channels, A one-second patches at 200 Hz, in units of 0.1 mV (µV / 100).
- ``patch_embed`` (TemporalConv) on ``(B, 1, N*A, 200)``: Conv2d(1,8,(1,15),stride (1,8),pad (0,7)) ->
  GroupNorm(4,8) -> GELU, then twice Conv2d(8,8,(1,3),pad (0,1)) -> GroupNorm(4,8) -> GELU; flattened
  as ``B NA (T C)`` (feature = t*8 + c): 200 features per patch.
- tokens: ``[CLS, channel-major patches]`` (1 + N*A); optional channel position embedding
  ``pos_embed[:, input_chans]`` (CLS gets entry 0, channel n entry n+1 on all its patches); then
  ``time_embed[:, :A]`` added to the patch tokens (not CLS).
- blocks (pre-LN with layer scale): ``x += gamma_1 * Attn(norm1(x)); x += gamma_2 * Mlp(norm2(x))``;
  LayerNorm eps 1e-6; q/k LayerNorm over the head dim; q scaled after its norm; qkv without bias.
- BioX pooling: mean over **all** tokens (CLS included) of the last block output, no ``fc_norm``
  (:meth:`Backbone.pool`). The official ``forward_features`` (fc_norm of the patch-token mean) is
  :meth:`Labram.official_forward_features`.

Defects of the BioX-Bridge setup, corrected by default (paper behaviour behind explicit options):

1. **time embedding resized.** BioX's ``NeuralTransformer`` declares ``time_embed`` twice, so it has 30
   entries while ``labram-base.pth`` has 16; BioX's loader only *prints* the size mismatch, so the pretrained
   time embedding is silently replaced by a random one. Here the default is ``time_embed_length=16`` (the
   checkpoint loads completely; windows up to 16 s), and a mismatch is an error unless the config says
   ``checkpoint_compat="biox"`` (BioX: random embedding, with a warning) or ``"interpolate_time"``
   (pretrained table linearly resampled to the model's length, e.g. for 30-s ISRUC epochs).
2. **channel position embedding dropped.** BioX uses ``use_abs_pos_emb=False`` and discards the pretrained
   ``pos_embed``. Here the default is ``use_abs_pos_emb=True`` with ``input_chans`` from the channel names
   (LaBraM's ``standard_1020`` order). ``use_abs_pos_emb=False`` reproduces the paper; loading
   ``labram-base.pth`` into such a model then needs ``checkpoint_compat="biox"`` (the drop is explicit).

The paper-compatible model is exactly ``schema.json: published_config`` (time_embed_length 30, no pos_embed)
plus ``checkpoint_compat="biox"``; see ``edge_bridge.models.presets``.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edge_bridge.models.backbone import Backbone, BackboneError
from edge_bridge.models.config import config_from_dict

logger = logging.getLogger(__name__)

KIND = "labram"
INPUT_RATE_HZ = 200.0
CHECKPOINT_COMPAT = ("strict", "biox", "interpolate_time")

# LaBraM utils.standard_1020: pos_embed entry = 1 + index (entry 0 is CLS)
STANDARD_1020 = (
    "FP1", "FPZ", "FP2",
    "AF9", "AF7", "AF5", "AF3", "AF1", "AFZ", "AF2", "AF4", "AF6", "AF8", "AF10",
    "F9", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8", "F10",
    "FT9", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "FT10",
    "T9", "T7", "C5", "C3", "C1", "CZ", "C2", "C4", "C6", "T8", "T10",
    "TP9", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6", "TP8", "TP10",
    "P9", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "P10",
    "PO9", "PO7", "PO5", "PO3", "PO1", "POZ", "PO2", "PO4", "PO6", "PO8", "PO10",
    "O1", "OZ", "O2", "O9", "CB1", "CB2",
    "IZ", "O10", "T3", "T5", "T4", "T6", "M1", "M2", "A1", "A2",
    "CFC1", "CFC2", "CFC3", "CFC4", "CFC5", "CFC6", "CFC7", "CFC8",
    "CCP1", "CCP2", "CCP3", "CCP4", "CCP5", "CCP6", "CCP7", "CCP8",
    "T1", "T2", "FTT9H", "TTP7H", "TPP9H", "FTT10H", "TPP8H", "TPP10H",
)
ISRUC_CHANNELS = ("F3", "C3", "O1", "F4", "C4", "O2")

# keys of labram-base.pth (after the "student." strip) that the fine-tuning network does not have:
# MEM pretraining only (mask token, final norm and tokenizer head)
PRETRAINING_ONLY_KEYS = ("mask_token", "norm.weight", "norm.bias", "lm_head.weight", "lm_head.bias")
# keys the fine-tuning network adds, absent from labram-base.pth (they keep their initialisation)
FINETUNE_ONLY_KEYS = ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")


@dataclass(frozen=True)
class LabramConfig:
    """Constructor arguments of LaBraM's ``NeuralTransformer`` plus edge-bridge's input description.

    Defaults are LaBraM-Base with the corrections described in the module docstring
    (``time_embed_length=16``, ``use_abs_pos_emb=True``).
    """

    patch_size: int = 200
    embed_dim: int = 200
    depth: int = 12
    num_heads: int = 10
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    qk_norm: bool = True
    qk_norm_eps: float = 1e-6
    norm_eps: float = 1e-6
    in_chans: int = 1
    out_chans: int = 8
    init_values: float = 0.1
    init_scale: float = 0.001
    use_mean_pooling: bool = True
    use_abs_pos_emb: bool = True
    pos_embed_length: int = 129
    time_embed_length: int = 16
    num_classes: int = 0  # official ``head``; 0 = none
    # edge-bridge: the window and the channel montage
    in_channels: int = 6
    input_samples: int = 0  # 0 = patch_size * min(time_embed_length, 30)
    input_scale: float = 0.01  # µV -> the 0.1 mV units LaBraM was trained on
    channels: tuple[str, ...] = ISRUC_CHANNELS
    input_chans: tuple[int, ...] = ()  # LaBraM's get_input_chans: (0, 1 + idx...); () = from ``channels``
    checkpoint_compat: str = "strict"  # how labram-base.pth fills the model: strict|biox|interpolate_time

    def __post_init__(self) -> None:
        if self.in_chans != 1:
            raise BackboneError(f"{KIND}: in_chans={self.in_chans} selects LaBraM's PatchEmbed path, which "
                                "the published model does not use; only in_chans=1 (TemporalConv) is "
                                "supported")
        if self.embed_dim % self.num_heads:
            raise BackboneError(f"{KIND}: embed_dim={self.embed_dim} must be divisible by "
                                f"num_heads={self.num_heads}")
        if self.patch_size // 8 * self.out_chans != self.embed_dim or self.patch_size % 8:
            raise BackboneError(f"{KIND}: TemporalConv turns a {self.patch_size}-sample patch into "
                                f"{self.patch_size // 8} x {self.out_chans} features, which must equal "
                                f"embed_dim={self.embed_dim}")
        if self.checkpoint_compat not in CHECKPOINT_COMPAT:
            raise BackboneError(f"{KIND}: checkpoint_compat must be one of {CHECKPOINT_COMPAT}, got "
                                f"{self.checkpoint_compat!r}")
        if self.input_samples % self.patch_size or self.input_samples < 0:
            raise BackboneError(f"{KIND}: input_samples={self.input_samples} must be a multiple of "
                                f"patch_size={self.patch_size} (1-s patches at 200 Hz)")
        if self.n_patches > self.time_embed_length:
            raise BackboneError(f"{KIND}: a {self.n_patches}-patch window needs time_embed_length >= "
                                f"{self.n_patches}, got {self.time_embed_length}; shorten the window or set "
                                "time_embed_length (with checkpoint_compat='interpolate_time' to keep the "
                                "pretrained table)")
        if self.use_abs_pos_emb:
            chans = self.resolved_input_chans
            if len(chans) != self.in_channels + 1:
                raise BackboneError(f"{KIND}: input_chans {list(chans)} must list CLS (0) plus one entry per "
                                    f"channel ({self.in_channels})")
            if max(chans) >= self.pos_embed_length or min(chans) < 0:
                raise BackboneError(f"{KIND}: input_chans {list(chans)} must lie in "
                                    f"0..{self.pos_embed_length - 1}")

    @property
    def n_patches(self) -> int:
        return self.window_samples // self.patch_size

    @property
    def window_samples(self) -> int:
        return self.input_samples or self.patch_size * min(self.time_embed_length, 30)

    @property
    def resolved_input_chans(self) -> tuple[int, ...]:
        """``input_chans`` as LaBraM's ``get_input_chans`` builds it: ``(0, 1 + standard_1020 index...)``."""
        if self.input_chans:
            return tuple(self.input_chans)
        return input_chans_for(self.channels)


def input_chans_for(channels: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """LaBraM ``utils.get_input_chans``: CLS (0) then ``1 + standard_1020.index(name)`` per channel."""
    out = [0]
    for name in channels:
        key = name.upper().split("-")[0].strip()  # "F3-A2" (ISRUC derivation) -> "F3"
        if key not in STANDARD_1020:
            raise BackboneError(f"{KIND}: channel {name!r} is not in LaBraM's 10-20 list; rename it (e.g. "
                                "'C3') or pass input_chans explicitly")
        out.append(1 + STANDARD_1020.index(key))
    return tuple(out)


def _parse_norm(value: Any, what: str) -> tuple[bool, float | None]:
    """``"partial(nn.LayerNorm, eps=1e-6)"``, ``"LayerNorm(eps=1e-6)"``, None, bool or eps -> (on, eps)."""
    if value is None or value is False:
        return False, None
    if value is True:
        return True, None
    if isinstance(value, int | float):
        return True, float(value)
    text = str(value).replace(" ", "")
    if "LayerNorm" not in text:
        raise BackboneError(f"{KIND}: {what}={value!r}: only LayerNorm is supported")
    if "eps=" in text:
        return True, float(text.split("eps=")[1].split(")")[0].split(",")[0])
    return True, 1e-5  # nn.LayerNorm's default


# training-only or unsupported-when-set arguments (checked in normalise_config), accepted and dropped
_IGNORED_KEYS = frozenset({"pretrained", "drop_rate", "drop_path_rate", "attn_drop_rate", "drop_block_rate",
                           "use_rel_pos_bias", "use_shared_rel_pos_bias", "qk_scale", "EEG_size",
                           "vocab_size"})
_NESTED_SECTIONS = ("factory_fixed_args", "biox_create_model_kwargs", "other_defaults")


def normalise_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Accept ``small.json: config`` or the nested ``schema.json: published_config`` (both spellings)."""
    flat: dict[str, Any] = {}
    for key, value in dict(config or {}).items():
        if isinstance(value, dict) and key in _NESTED_SECTIONS:
            flat.update(value)
        else:
            flat[key] = value
    if "pos_embed_length_if_enabled" in flat:
        flat["pos_embed_length"] = flat.pop("pos_embed_length_if_enabled")
    if "qk_norm" in flat:
        on, eps = _parse_norm(flat["qk_norm"], "qk_norm")
        flat["qk_norm"] = on
        if eps is not None:
            flat.setdefault("qk_norm_eps", eps)
    if "norm_layer" in flat:
        _, eps = _parse_norm(flat.pop("norm_layer"), "norm_layer")
        if eps is not None:
            flat.setdefault("norm_eps", eps)
    if flat.get("use_rel_pos_bias") or flat.get("use_shared_rel_pos_bias"):
        raise BackboneError(f"{KIND}: relative position bias is not supported (LaBraM-Base does not use it)")
    if flat.get("qk_scale") is not None:
        raise BackboneError(f"{KIND}: qk_scale must be None (head_dim ** -0.5), got {flat['qk_scale']!r}")
    if "mlp_ratio" in flat:
        flat["mlp_ratio"] = float(flat["mlp_ratio"])
    if isinstance(flat.get("input_chans"), list | tuple):
        flat["input_chans"] = tuple(int(c) for c in flat["input_chans"])
    if flat.get("input_chans") is None:
        flat.pop("input_chans", None)
    return {k: v for k, v in flat.items() if k not in _IGNORED_KEYS}


# --- the official modules --------------------------------------------------------------------------------
class TemporalConv(nn.Module):
    """LaBraM's patch embedding: three (1, k) convolutions over each 1-s patch, 200 samples -> 25 x 8."""

    def __init__(self, in_chans: int = 1, out_chans: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, kernel_size=(1, 15), stride=(1, 8), padding=(0, 7))
        self.norm1 = nn.GroupNorm(4, out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, kernel_size=(1, 3), padding=(0, 1))
        self.norm2 = nn.GroupNorm(4, out_chans)
        self.conv3 = nn.Conv2d(out_chans, out_chans, kernel_size=(1, 3), padding=(0, 1))
        self.norm3 = nn.GroupNorm(4, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, a, t = x.shape
        h = x.reshape(b, 1, n * a, t)  # (B, 1, NA, T)
        h = F.gelu(self.norm1(self.conv1(h)))  # (B, C, NA, T/8)
        h = F.gelu(self.norm2(self.conv2(h)))
        h = F.gelu(self.norm3(self.conv3(h)))
        return h.permute(0, 2, 3, 1).reshape(b, n * a, -1)  # (B, NA, (T/8) * C), feature = t * C + c


class Attention(nn.Module):
    """qkv (no bias unless ``qkv_bias``: then q_bias and v_bias, k gets zeros) -> q/k LayerNorm -> softmax."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool, qk_norm_eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        if qk_norm:
            self.q_norm = nn.LayerNorm(head_dim, eps=qk_norm_eps)
            self.k_norm = nn.LayerNorm(head_dim, eps=qk_norm_eps)
        else:
            self.q_norm = None
            self.k_norm = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None and self.v_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, nh, N, hd)
        if self.q_norm is not None and self.k_norm is not None:
            q = self.q_norm(q)
            k = self.k_norm(k)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # (B, nh, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))  # (B, N, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN block with layer scale (``gamma_1``/``gamma_2``) when ``init_values > 0``."""

    def __init__(self, cfg: LabramConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.qk_norm, cfg.qk_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        if cfg.init_values > 0:
            self.gamma_1 = nn.Parameter(cfg.init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(cfg.init_values * torch.ones(dim))
        else:
            self.gamma_1 = None
            self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None or self.gamma_2 is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma_1 * self.attn(self.norm1(x))  # (B, N, D)
        return x + self.gamma_2 * self.mlp(self.norm2(x))  # (B, N, D)


class Labram(Backbone):
    """LaBraM as a :class:`Backbone`; see the module docstring and :class:`LabramConfig`.

    Top-level attributes follow ``NeuralTransformer`` (``cls_token``, ``pos_embed``, ``time_embed``,
    ``patch_embed``, ``blocks``, ``norm``, ``fc_norm``, ``head``), so ``state_dict()`` has the official keys.
    """

    kind = KIND

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        cfg = config_from_dict(LabramConfig, normalise_config(config), what=KIND)
        if not cfg.input_samples:
            cfg = LabramConfig(**{**asdict(cfg), "input_samples": cfg.window_samples})
        super().__init__(asdict(cfg))
        self.config["channels"] = list(cfg.channels)
        self.config["input_chans"] = list(cfg.input_chans)
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = TemporalConv(cfg.in_chans, cfg.out_chans)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = (nn.Parameter(torch.zeros(1, cfg.pos_embed_length, dim)) if cfg.use_abs_pos_emb
                          else None)
        self.time_embed = nn.Parameter(torch.zeros(1, cfg.time_embed_length, dim))
        chans = cfg.resolved_input_chans if cfg.use_abs_pos_emb else ()
        self.register_buffer("_input_chans", torch.tensor(chans, dtype=torch.long), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm: nn.Module = nn.Identity() if cfg.use_mean_pooling else nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.fc_norm = nn.LayerNorm(dim, eps=cfg.norm_eps) if cfg.use_mean_pooling else None
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes else None
        self._init_weights()
        self._finish_init()
        self.eval()

    def _init_weights(self) -> None:
        # NeuralTransformer: trunc_normal(.02) embeddings and linears, rescaled residual projections,
        # head scaled by init_scale, so a model built without weights behaves like the official one
        for p in (self.cls_token, self.pos_embed, self.time_embed):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_((2.0 * layer_id) ** 0.5)
                block.mlp.fc2.weight.div_((2.0 * layer_id) ** 0.5)
            if self.head is not None:
                self.head.weight.mul_(self.cfg.init_scale)
                self.head.bias.mul_(self.cfg.init_scale)

    # --- Backbone parts -------------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        return "btd"

    def to_official_input(self, x: torch.Tensor) -> torch.Tensor:
        """Window ``(B, N, A * 200)`` in µV -> official input ``(B, N, A, 200)``, times ``input_scale``."""
        b, n, length = x.shape
        return (x * self.cfg.input_scale).reshape(b, n, length // self.cfg.patch_size, self.cfg.patch_size)

    def embed_official(self, x: torch.Tensor) -> torch.Tensor:
        """Official input ``(B, N, A, 200)`` -> tokens entering ``blocks[0]`` ``(B, 1 + N*A, D)``."""
        if x.ndim != 4 or x.shape[3] != self.cfg.patch_size:
            raise BackboneError(f"{KIND}: the official input is (batch, channels, seconds, "
                                f"{self.cfg.patch_size}), got shape {tuple(x.shape)}")
        b, n, a, _ = x.shape
        if a > self.time_embed.shape[1]:
            raise BackboneError(f"{KIND}: {a} one-second patches exceed the time embedding "
                                f"({self.time_embed.shape[1]} entries); use windows of at most "
                                f"{self.time_embed.shape[1]} s")
        h = torch.cat((self.cls_token.expand(b, -1, -1), self.patch_embed(x)), dim=1)  # (B, 1 + NA, D)
        if self.pos_embed is not None:
            pos = self.pos_embed[:, self._input_chans] if self._input_chans.numel() else self.pos_embed
            if pos.shape[1] != n + 1:
                raise BackboneError(f"{KIND}: the channel position embedding covers {pos.shape[1] - 1} "
                                    f"channels but the input has {n}; set channels/input_chans")
            per_patch = pos[:, 1:, :].unsqueeze(2).expand(b, -1, a, -1).flatten(1, 2)  # (B, NA, D)
            h = h + torch.cat((pos[:, :1, :].expand(b, -1, -1), per_patch), dim=1)
        time = self.time_embed[:, :a, :].unsqueeze(1).expand(b, n, -1, -1).flatten(1, 2)  # (B, NA, D)
        return torch.cat((h[:, :1], h[:, 1:] + time), dim=1)  # (B, 1 + NA, D)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Window ``(B, N, A * 200)`` in µV -> input of block 0 ``(B, 1 + N*A, D)``."""
        return self.embed_official(self.to_official_input(x))

    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        """Embed this backbone's window ``(B, N, A * 200)`` in µV or the official ``(B, N, A, 200)``.

        The official input is already divided by 100 (what ``golden/labram/io.npz: input`` holds), so
        :meth:`block_outputs` (one output ``(B, 1 + N*A, D)`` per ``blocks[k]``, CLS first) reads it directly.
        """
        if x.ndim == 3:
            return super().embed_input(x)
        return self.embed_official(x)

    def set_head(self, n_classes: int) -> None:
        """Replace the task head (the official ``head``, reading the BioX-pooled features); 0 removes it.

        Recorded as the official ``num_classes`` so a saved backbone rebuilds with the same head.
        """
        super().set_head(n_classes)
        self.config.pop("n_classes", None)
        self.config["num_classes"] = n_classes
        self.cfg = LabramConfig(**{**asdict(self.cfg), "num_classes": n_classes})

    def official_forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``NeuralTransformer.forward_features`` (official input): fc_norm(patch-token mean), ``(B, D)``."""
        y = self.norm(self.block_outputs(x)[-1])
        if self.fc_norm is None:
            return y[:, 0]
        return self.fc_norm(y[:, 1:].mean(dim=1))

    # --- loading --------------------------------------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike[str]) -> Labram:
        """Load ``labram-base.pth`` (pretraining layout) or a checkpoint/safetensors of this model, strictly.

        Pretraining layout (keys under ``"model"`` or ``"module"``, prefixed ``student.``): the prefix is
        stripped and other keys are dropped, as LaBraM/BioX do; the documented pretraining-only keys
        (``mask_token``, ``norm.*``, ``lm_head.*``) are ignored and the fine-tuning-only keys (``fc_norm.*``,
        ``head.*``) keep their initialisation. ``pos_embed`` and ``time_embed`` must fit the model unless
        ``checkpoint_compat`` says otherwise (``"biox"``: drop ``pos_embed`` when ``use_abs_pos_emb=False``
        and keep the model's random ``time_embed`` on a length mismatch, both with a warning;
        ``"interpolate_time"``: resample the pretrained ``time_embed``). Everything else must match exactly.

        Raises
        ------
        CheckpointError
            If the file cannot be read safely or anything else is missing, unexpected or mis-shaped.
        """
        from edge_bridge.models import checkpoints

        tensors = checkpoints.load_state_dict_file(
            path, container_keys=("model", "module", "model_state_dict", "state_dict"))
        tensors = checkpoints.strip_common_prefix(tensors, ("module.",))
        own = self.state_dict()
        hint = ""
        if any(k.startswith("student.") for k in tensors):  # labram-base.pth: NeuralTransformerForMEM
            tensors = checkpoints.strip_prefix(tensors, "student.", only_prefixed=True)
            dropped = sorted(k for k in tensors if k in PRETRAINING_ONLY_KEYS)
            for k in dropped:
                tensors.pop(k)
            kept = [k for k in FINETUNE_ONLY_KEYS if k in own and k not in tensors]
            for k in kept:
                tensors[k] = own[k]
            logger.info("%s: pretraining checkpoint: ignored %s, kept initialisation of %s", path, dropped,
                        kept)
            if "pos_embed" in tensors and "pos_embed" not in own:
                if self.cfg.checkpoint_compat == "biox":  # BioX-Bridge: channel embedding switched off
                    warnings.warn(f"{path}: dropping the pretrained channel position embedding (pos_embed) "
                                  "because use_abs_pos_emb=False (BioX-Bridge behaviour)", stacklevel=2)
                    tensors.pop("pos_embed")
                else:
                    hint = ("labram-base.pth has a channel position embedding; build with "
                            "use_abs_pos_emb=True (default) or, to reproduce BioX-Bridge, "
                            "checkpoint_compat='biox'. ")
        self._fit_time_embed(tensors, str(path))
        checkpoints.load_strict(self, tensors, str(path), hint=hint + (
            "LaBraM-Base needs depth 12, embed_dim 200, 10 heads, qkv_bias False; compare the config with "
            "the checkpoint"))
        return self.eval()

    def _fit_time_embed(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Apply ``checkpoint_compat`` when the file's time embedding length differs from the model's."""
        got = tensors.get("time_embed")
        want = self.time_embed.shape
        if got is None or tuple(got.shape) == tuple(want) or got.ndim != 3 or got.shape[2] != want[2]:
            return
        policy = self.cfg.checkpoint_compat
        if policy == "biox":
            warnings.warn(f"{source}: time_embed has {got.shape[1]} entries, the model {want[1]}; keeping "
                          "the model's initialised time embedding (BioX-Bridge behaviour: the pretrained one "
                          "is not used)", stacklevel=3)
            tensors["time_embed"] = self.time_embed.detach().clone()
        elif policy == "interpolate_time":
            logger.info("%s: time_embed resampled from %d to %d entries", source, got.shape[1], want[1])
            tensors["time_embed"] = F.interpolate(got.transpose(1, 2), size=want[1], mode="linear",
                                                  align_corners=True).transpose(1, 2).contiguous()
        else:
            from edge_bridge.models.io import CheckpointError

            raise CheckpointError(
                f"{source}: time_embed has {got.shape[1]} entries but the model {want[1]} (BioX-Bridge's "
                f"resized embedding). Build with time_embed_length={got.shape[1]} (windows up to "
                f"{got.shape[1]} s), or "
                "set checkpoint_compat='interpolate_time' (resample the pretrained table) or 'biox' "
                "(BioX-Bridge: random time embedding)")


def preprocessing(channels: tuple[str, ...] = ISRUC_CHANNELS, input_rate: float = INPUT_RATE_HZ,
                  window_s: float = 30.0, hop_s: float = 30.0, bandpass: tuple[float, float] | None = None,
                  notch: float | None = None) -> Any:
    """The :class:`~edge_bridge.signals.Preprocessing` spec that feeds LaBraM as BioX-Bridge does.

    BioX: EEG in µV at 200 Hz, no filtering for ISRUC (FOG: linear resampling 500 -> 200 Hz), no
    normalisation; the division by 100 is inside the backbone (``input_scale``), so the spec keeps µV and
    ``normalise="none"``. LaBraM's own recommendation is ``bandpass=(0.1, 75.0)`` and ``notch=50.0`` (or 60).
    ISRUC: 30-s epochs; FOG: ``window_s=3``.
    """
    from edge_bridge.signals import Preprocessing

    return Preprocessing(modality="eeg", channels=tuple(channels), input_rate=input_rate,
                         output_rate=INPUT_RATE_HZ, window_s=window_s, hop_s=hop_s, bandpass=bandpass,
                         notch=notch, normalise="none")


def build_labram(config: dict[str, Any]) -> Backbone:
    return Labram(config)
