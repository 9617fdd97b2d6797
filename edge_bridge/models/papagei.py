"""PaPaGei-S (``papagei_s.pt``): the PPG foundation model's 1-D ResNet with two mixture-of-experts heads.

Re-implemented from the architecture facts in ``shared/golden/papagei/schema.json`` (official class
``ResNet1DMoE`` in ``papagei_anonymous/models/resnet.py``) and proven against the golden tensors made by
running that code (``tests/models/test_papagei.py``). Module attribute names follow the official code, so
:meth:`state_dict` has exactly the published keys (``first_block_conv.conv.weight``,
``basicblock_list.3.bn1.running_var``, ``expert_layers_2.0.3.bias``, ...) and a published checkpoint loads
strictly, with or without the ``module.`` prefix that ``DataParallel`` writes.

Backbone view (layout ``"bcl"``: ``(batch, channels, length)``):

``embed``
    ``first_block_conv`` (SAME padding) -> ``first_block_bn`` -> ReLU: ``(B, 1, L)`` -> ``(B, 32, L)``.
``blocks``
    ``basicblock_list``: 18 pre-activation residual blocks; odd blocks halve the length (ceil), every 4th
    block doubles the channels (32 -> 512).
pooling
    mean over time of the last block output, *before* ``final_bn``/ReLU: what BioX-Bridge's probe and
    bridge read (``final_biox_pooled`` in the golden data). ``norm`` is therefore the identity.

The official heads (``final_bn``, ``dense``, the two MoE heads) stay in the module so the published
checkpoint loads strictly; :meth:`PaPaGei.official_forward` runs them and returns the official 4-tuple.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edge_bridge.models.backbone import Backbone, BackboneError
from edge_bridge.models.config import config_from_dict

logger = logging.getLogger(__name__)

KIND = "papagei"
INPUT_RATE_HZ = 125.0  # PaPaGei's sampling rate; BioX resamples WESAD BVP 64 -> 125 Hz


@dataclass(frozen=True)
class PaPaGeiConfig:
    """Constructor arguments of ``ResNet1DMoE`` (defaults: the published PaPaGei-S) plus the window length.

    ``n_classes`` is the official name of the ``dense`` layer's width (512 for PaPaGei-S), *not* a task
    head; a task head added with :meth:`PaPaGei.set_head` is recorded as ``head_classes``.
    """

    in_channels: int = 1
    base_filters: int = 32
    kernel_size: int = 3
    stride: int = 2
    groups: int = 1
    n_block: int = 18
    n_classes: int = 512
    n_experts: int = 3
    downsample_gap: int = 2
    increasefilter_gap: int = 4
    use_bn: bool = True
    use_do: bool = True
    verbose: bool = False
    use_projection: bool = False
    input_samples: int = 7500  # 60 s WESAD windows at 125 Hz (PaPaGei's own segments are 10 s = 1250)
    head_classes: int = 0  # edge-bridge task head on the pooled features; 0 = none

    def __post_init__(self) -> None:
        positive = ("in_channels", "base_filters", "kernel_size", "stride", "groups", "n_block", "n_classes",
                    "n_experts", "downsample_gap", "increasefilter_gap", "input_samples")
        bad = {k: getattr(self, k) for k in positive if getattr(self, k) < 1}
        if bad:
            raise BackboneError(f"papagei: these config values must be positive integers, got {bad}")
        if self.head_classes < 0:
            raise BackboneError(f"papagei: head_classes must be >= 0, got {self.head_classes}")
        if self.base_filters % self.groups:
            raise BackboneError(f"papagei: base_filters={self.base_filters} must be divisible by "
                                f"groups={self.groups} (grouped convolutions)")


def normalise_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Accept both spellings of the constructor arguments and return the plain one.

    ``schema.json: published_config`` writes the keyword arguments that have defaults with a ``default_``
    prefix (``default_downsample_gap``); ``small.json: config`` and :class:`PaPaGeiConfig` use the plain
    names. A key given in both spellings with different values is an error rather than a silent pick.
    """
    out: dict[str, Any] = {}
    for key, value in dict(config or {}).items():
        name = key[len("default_"):] if key.startswith("default_") else key
        if name in out and out[name] != value:
            raise BackboneError(f"papagei: config gives {name!r} twice with different values "
                                f"({out[name]!r} and {value!r} as {key!r}); keep one")
        out[name] = value
    return out


# --- the official building blocks, re-implemented ------------------------------------------------------
class Conv1dPadSame(nn.Module):
    """``Conv1d`` with TF-style SAME padding computed from the input length at run time.

    ``out = ceil(L / stride)``; ``p = max(0, (out - 1) * stride + k - L)`` zeros, ``p // 2`` on the left and
    the rest on the right (so an odd ``p`` puts the extra zero on the right), as ``MyConv1dPadSame`` does.
    The wrapped layer is called ``conv`` to keep the official key names.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int = 1) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = int(x.shape[-1])
        out = (length + self.stride - 1) // self.stride
        p = max(0, (out - 1) * self.stride + self.kernel_size - length)
        return self.conv(F.pad(x, (p // 2, p - p // 2)))  # (B, C_out, ceil(L / stride))


def _maxpool_pad_same(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """``MyMaxPool1dPadSame(kernel)``: SAME padding computed for stride 1, then ``MaxPool1d(kernel)``.

    For kernel 2 that is one zero on the right, then pairs: length ``ceil(L / 2)``, matching the strided
    conv. The padded zero can win the max when the last sample is negative; that is the official behaviour.
    """
    p = kernel - 1
    x = F.pad(x, (p // 2, p - p // 2))
    return F.max_pool1d(x, kernel_size=kernel, stride=kernel)


class BasicBlock(nn.Module):
    """Pre-activation residual block of ``ResNet1DMoE`` (the official ``BasicBlock``).

    ``out = conv2(drop(relu(bn2(conv1(drop(relu(bn1(x))))))))`` (block 0 skips bn1/ReLU/dropout), plus the
    identity: max-pooled when the block downsamples, and zero-padded on the channel axis when the block
    widens (half the new channels before, the rest after: the identity ends up in the middle). ``bn1``
    exists in block 0 too (it is in the checkpoint) but is not applied.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int,
                 downsample: bool, use_bn: bool, use_do: bool, is_first_block: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample = downsample
        self.stride = stride if downsample else 1
        self.is_first_block = is_first_block
        self.use_bn = use_bn
        self.use_do = use_do
        self.bn1 = nn.BatchNorm1d(in_channels)
        self.relu1 = nn.ReLU()
        self.do1 = nn.Dropout(p=0.5)
        self.conv1 = Conv1dPadSame(in_channels, out_channels, kernel_size, self.stride, groups)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.relu2 = nn.ReLU()
        self.do2 = nn.Dropout(p=0.5)
        self.conv2 = Conv1dPadSame(out_channels, out_channels, kernel_size, 1, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x  # (B, C_in, L)
        if not self.is_first_block:
            if self.use_bn:
                out = self.bn1(out)
            out = self.relu1(out)
            if self.use_do:
                out = self.do1(out)
        out = self.conv1(out)  # (B, C_out, L')  L' = ceil(L / stride)
        if self.use_bn:
            out = self.bn2(out)
        out = self.relu2(out)
        if self.use_do:
            out = self.do2(out)
        out = self.conv2(out)  # (B, C_out, L')
        identity = _maxpool_pad_same(x, self.stride) if self.downsample else x  # (B, C_in, L')
        if self.out_channels != self.in_channels:
            ch1 = (self.out_channels - self.in_channels) // 2
            ch2 = self.out_channels - self.in_channels - ch1
            identity = F.pad(identity, (0, 0, ch1, ch2))  # (B, C_out, L'): zeros around the old channels
        return out + identity


class PaPaGei(Backbone):
    """PaPaGei-S as a :class:`Backbone`; see the module docstring and :class:`PaPaGeiConfig`."""

    kind = KIND

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        cfg = config_from_dict(PaPaGeiConfig, normalise_config(config), what=KIND)
        super().__init__(asdict(cfg))
        self.cfg = cfg
        # attribute names and creation order follow ResNet1DMoE, so state_dict() has the published keys
        self.first_block_conv = Conv1dPadSame(cfg.in_channels, cfg.base_filters, cfg.kernel_size, 1)
        self.first_block_bn = nn.BatchNorm1d(cfg.base_filters)
        self.first_block_relu = nn.ReLU()
        blocks = []
        out_channels = cfg.base_filters
        for i in range(cfg.n_block):
            first = i == 0
            stage = 0 if first else (i - 1) // cfg.increasefilter_gap
            c_in = int(cfg.base_filters * 2 ** stage)
            out_channels = c_in * 2 if (i % cfg.increasefilter_gap == 0 and not first) else c_in
            blocks.append(BasicBlock(c_in, out_channels, cfg.kernel_size, cfg.stride, cfg.groups,
                                     downsample=i % cfg.downsample_gap == 1, use_bn=cfg.use_bn,
                                     use_do=cfg.use_do, is_first_block=first))
        self.basicblock_list = nn.ModuleList(blocks)
        if cfg.use_projection:
            self.projector = nn.Sequential(nn.Linear(out_channels, 256), nn.BatchNorm1d(256), nn.ReLU(),
                                           nn.Linear(256, 128))
        self.final_bn = nn.BatchNorm1d(out_channels)
        self.final_relu = nn.ReLU()
        self.dense = nn.Linear(out_channels, cfg.n_classes)
        hidden = out_channels // 2
        self.expert_layers_1 = nn.ModuleList([
            nn.Sequential(nn.Linear(out_channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            for _ in range(cfg.n_experts)])
        self.gating_network_1 = nn.Sequential(nn.Linear(out_channels, cfg.n_experts), nn.Softmax(dim=1))
        self.expert_layers_2 = nn.ModuleList([
            nn.Sequential(nn.Linear(out_channels, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 1))
            for _ in range(cfg.n_experts)])
        self.gating_network_2 = nn.Sequential(nn.Linear(out_channels, cfg.n_experts), nn.Softmax(dim=1))
        # BioX pools the last block output before final_bn: no extra normalisation (no state_dict keys)
        self.norm = nn.Identity()
        self.head = nn.Linear(out_channels, cfg.head_classes) if cfg.head_classes else None
        self._finish_init()
        self.eval()  # a frozen feature extractor: BatchNorm running statistics, no dropout

    # --- Backbone parts -------------------------------------------------------------------------------
    @property  # type: ignore[override]
    def blocks(self) -> nn.ModuleList:
        """The official ``basicblock_list`` (one module, one set of state_dict keys)."""
        return self.basicblock_list

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Raw PPG ``(B, C, L)`` -> input of block 0 ``(B, base_filters, L)``: SAME conv, BN, ReLU."""
        out = self.first_block_conv(x)
        if self.cfg.use_bn:
            out = self.first_block_bn(out)
        return self.first_block_relu(out)

    @property
    def layout(self) -> str:
        return "bcl"

    @property
    def block_paths(self) -> list[str]:
        """The official module paths (``basicblock_list.i``), as BioX-Bridge's hooks name them."""
        return [f"basicblock_list.{k}" for k in range(self.n_blocks)]

    def set_head(self, n_classes: int) -> None:
        """Replace the task head (``n_classes`` outputs, 0 removes it); recorded as ``head_classes``.

        The config key ``n_classes`` is the official ``dense`` width and must not change, or the published
        checkpoint would no longer fit a model rebuilt from the saved config.
        """
        super().set_head(n_classes)
        self.config["n_classes"] = self.cfg.n_classes
        self.config["head_classes"] = n_classes

    # --- the official outputs -------------------------------------------------------------------------
    def official_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``ResNet1DMoE.forward``: ``(out_class (B, n_classes), out_moe1 (B, 1), out_moe2 (B, 1), pooled)``.

        ``out_class = dense(pooled)`` is what PaPaGei's README calls the embedding; ``pooled`` is the mean
        over time of ``relu(final_bn(last block output))``. Neither is what BioX-Bridge bridges (see
        :meth:`features`).
        """
        self._check_input(x)
        out = self.embed(x)
        for block in self.blocks:
            out = block(out)
        if self.cfg.use_bn:
            out = self.final_bn(out)
        pooled = self.final_relu(out).mean(-1)  # (B, C)
        out_class = self.projector(pooled) if self.cfg.use_projection else self.dense(pooled)
        moe = []
        for experts, gate in ((self.expert_layers_1, self.gating_network_1),
                              (self.expert_layers_2, self.gating_network_2)):
            e = torch.stack([expert(pooled) for expert in experts], dim=1)  # (B, n_experts, 1)
            w = gate(pooled).unsqueeze(2)  # (B, n_experts, 1)
            moe.append((w * e).sum(dim=1))  # (B, 1)
        return out_class, moe[0], moe[1], pooled

    # --- loading --------------------------------------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike[str]) -> PaPaGei:
        """Load ``papagei_s.pt`` (a plain state_dict, maybe with ``module.``) or a safetensors file, strictly.

        Raises
        ------
        CheckpointError
            If the file cannot be read safely, or any key is missing, unexpected or mis-shaped (all listed).
        """
        from edge_bridge.models import checkpoints

        tensors = checkpoints.load_state_dict_file(path)
        tensors = checkpoints.strip_prefix(tensors, "module.")
        checkpoints.load_strict(self, tensors, source=str(path))
        return self


def preprocessing(input_rate: float = 64.0, window_s: float = 60.0, hop_s: float = 5.0) -> Any:
    """The :class:`~edge_bridge.signals.Preprocessing` spec that feeds PaPaGei as BioX-Bridge does (WESAD).

    BioX: BVP at 64 Hz -> resample to 125 Hz -> Chebyshev-I (order 4, 0.5 dB ripple) band-pass 0.5-12 Hz
    with filtfilt -> z-score. The spec keeps the rates, band edges, window and z-score; two differences are
    deliberate and small: the spec's band-pass is Butterworth (the only family it knows; both are flat to
    <0.5 dB in 0.5-12 Hz where PPG lives) and it z-scores per window instead of per recording (a streaming
    device never sees the whole recording). Returns a ``Preprocessing`` (one PPG channel,
    ``input_shape == (1, 7500)`` for the defaults).
    """
    from edge_bridge.signals import Preprocessing

    return Preprocessing(modality="ppg", channels=("ppg",), input_rate=input_rate, output_rate=INPUT_RATE_HZ,
                         window_s=window_s, hop_s=hop_s, bandpass=(0.5, 12.0), normalise="zscore")


def build_papagei(config: dict[str, Any]) -> Backbone:
    return PaPaGei(config)
