"""HuBERT-ECG (``hubert_ecg_small.pt``) as a :class:`Backbone`, in plain torch.

HuBERT-ECG is transformers' ``HubertModel`` (4.46.2) plus two pretraining heads (``final_proj``,
``label_embedding``). It is re-written here rather than imported, because only the eval-mode feature path is
needed (no SpecAugment, layerdrop or attention masks), transformers is a heavy dependency for a 150-line
network, and plain modules export to ONNX without surprises. Module and attribute names follow the official
code exactly, so ``state_dict()`` has the published keys (``schema.json: state_dict``) and the published
checkpoint loads strictly. Faithfulness is proven against ``golden/hubert_ecg`` (tests/models).

Architecture (``do_stable_layer_norm=False``, the HuBERT-ECG setting):

- feature encoder: 5 convs without bias (kernels 10,3,3,2,2; strides 4,2,2,2,2); GroupNorm with one group
  per channel after conv 0 only; exact GELU after each. ``T = floor((L - 82) / 64) + 1`` frames.
- feature projection: LayerNorm(conv_dim[-1]) -> Linear(conv_dim[-1], H).
- encoder input: ``x + GELU(pos_conv(x))[:-1 frame]`` -> LayerNorm. ``pos_conv`` is a grouped Conv1d
  (kernel 128, 16 groups, padding 64) with weight norm over dim 2; the last frame is dropped (even kernel).
- layers (post-LN): ``x = LN(x + Attn(x)); x = final_LN(x + FFN(x))``. These are the bridgeable blocks
  ``encoder.layers.0 .. 7``; their outputs are ``(B, T, H)``, exactly what BioX-Bridge's hooks record.
- BioX pooling: mean over T of the last layer's output (no final norm): :meth:`Backbone.pool`.

Input: one ECG window ``(batch, leads, samples)`` at 100 Hz, normalised per lead (see :func:`preprocessing`).
The official model takes the leads flattened lead-major, ``(batch, leads * samples)``; :meth:`embed` does that
(after the optional single-lead expansion to 12 leads, BioX's ``ecg_channel_expansion``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edge_bridge.models.backbone import Backbone, BackboneError
from edge_bridge.models.config import config_from_dict

logger = logging.getLogger(__name__)

KIND = "hubert_ecg"
INPUT_RATE_HZ = 100.0
LEAD_EXPANSIONS = ("none", "zero_pad", "repeat")

# HF PretrainedConfig / HubertConfig keys that do not change the eval-mode network; accepted and ignored so
# that a config copied from the checkpoint or the HF config.json builds without warnings.
_IGNORED_KEYS = frozenset({
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "torch_dtype", "use_bfloat16",
    "tf_legacy_loss", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "max_length",
    "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "architectures", "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix", "bos_token_id",
    "pad_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "task_specific_params",
    "problem_type", "_name_or_path", "_attn_implementation_autoset", "_attn_implementation_internal",
    "_commit_hash", "transformers_version", "model_type", "num_feat_extract_layers", "initializer_range",
    "vocab_size", "mask_time_length", "mask_time_min_masks", "mask_feature_length", "mask_feature_min_masks",
    "ctc_loss_reduction", "ctc_zero_infinity", "layerdrop", "hidden_dropout", "attention_dropout",
    "activation_dropout", "feat_proj_dropout", "final_dropout", "apply_spec_augment",
    "use_weighted_layer_sum", "conv_pos_batch_norm", "_output_attentions",
})


@dataclass(frozen=True)
class HubertECGConfig:
    """Constructor arguments of HuBERT-ECG (the HF names) plus edge-bridge's input description.

    Defaults are the published ``hubert_ecg_small`` values (``schema.json: published_config``).
    ``vocab_sizes``/``ensemble_length``/``classifier_proj_size`` only shape the pretraining heads
    ``final_proj``/``label_embedding`` (unused for features); loading a checkpoint adopts its shapes.
    """

    hidden_size: int = 512
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (4, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True
    do_stable_layer_norm: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    mask_time_prob: float = 0.33
    mask_feature_prob: float = 0.0
    ensemble_length: int = 1
    vocab_sizes: tuple[int, ...] = (100,)
    classifier_proj_size: int = 256
    # edge-bridge: what one window looks like before flattening
    in_channels: int = 1
    input_samples: int = 6000
    lead_expansion: str = "none"  # BioX ecg_channel_expansion: none | zero_pad | repeat
    expanded_leads: int = 12
    n_classes: int = 0  # task head on the pooled features; 0 = none

    def __post_init__(self) -> None:
        n_conv = len(self.conv_dim)
        if not (n_conv == len(self.conv_kernel) == len(self.conv_stride)) or n_conv == 0:
            raise BackboneError(f"{KIND}: conv_dim, conv_kernel and conv_stride must have the same non-zero "
                                f"length, got {list(self.conv_dim)}, {list(self.conv_kernel)}, "
                                f"{list(self.conv_stride)}")
        unsupported = {
            "feat_extract_norm": (self.feat_extract_norm, "group"),
            "feat_extract_activation": (self.feat_extract_activation, "gelu"),
            "hidden_act": (self.hidden_act, "gelu"),
            "do_stable_layer_norm": (self.do_stable_layer_norm, False),
        }
        for key, (got, want) in unsupported.items():
            if got != want:
                raise BackboneError(f"{KIND}: {key}={got!r} is not supported (HuBERT-ECG uses {want!r}); "
                                    "this implementation covers the published HuBERT-ECG architecture only")
        if self.hidden_size % self.num_attention_heads:
            raise BackboneError(f"{KIND}: hidden_size={self.hidden_size} must be divisible by "
                                f"num_attention_heads={self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise BackboneError(f"{KIND}: hidden_size={self.hidden_size} must be divisible by "
                                f"num_conv_pos_embedding_groups={self.num_conv_pos_embedding_groups}")
        if self.lead_expansion not in LEAD_EXPANSIONS:
            raise BackboneError(f"{KIND}: lead_expansion must be one of {LEAD_EXPANSIONS}, got "
                                f"{self.lead_expansion!r}")
        if self.lead_expansion != "none" and self.in_channels != 1:
            raise BackboneError(f"{KIND}: lead_expansion={self.lead_expansion!r} expands a single lead, but "
                                f"in_channels={self.in_channels}; use lead_expansion='none'")
        if len(self.vocab_sizes) < 1 or self.ensemble_length < 1:
            raise BackboneError(f"{KIND}: need ensemble_length >= 1 and at least one vocab size, got "
                                f"{self.ensemble_length}, {list(self.vocab_sizes)}")
        if self.n_frames < 1:
            raise BackboneError(f"{KIND}: input_samples={self.input_samples} x {self.leads_fed} lead(s) is "
                                f"shorter than the feature encoder's receptive field "
                                f"({self.receptive_field} samples)")

    @property
    def leads_fed(self) -> int:
        """Leads the official model sees after expansion."""
        return self.expanded_leads if self.lead_expansion != "none" else self.in_channels

    @property
    def receptive_field(self) -> int:
        rf, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride, strict=True):
            rf += (k - 1) * jump
            jump *= s
        return rf

    @property
    def n_frames(self) -> int:
        length = self.input_samples * self.leads_fed
        for k, s in zip(self.conv_kernel, self.conv_stride, strict=True):
            length = (length - k) // s + 1
        return length


def normalise_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Accept ``published_config``, ``small.json: config`` or a full HF config dict; drop inert HF keys."""
    out = dict(config or {})
    for key in list(out):
        if key in _IGNORED_KEYS:
            out.pop(key)
    if out.get("vocab_sizes") is not None and not isinstance(out["vocab_sizes"], list | tuple):
        out["vocab_sizes"] = [out["vocab_sizes"]]
    return out


# --- the official modules (names as in transformers' modeling_hubert) ---------------------------------------
class HubertGroupNormConvLayer(nn.Module):
    """conv -> GroupNorm(one group per channel) -> GELU (feature-encoder layer 0)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.layer_norm = nn.GroupNorm(num_groups=c_out, num_channels=c_out, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.layer_norm(self.conv(x)))


class HubertNoLayerNormConvLayer(nn.Module):
    """conv -> GELU (feature-encoder layers 1..)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x))


class HubertFeatureEncoder(nn.Module):
    def __init__(self, cfg: HubertECGConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for k, (c_out, kernel, stride) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride,
                                                        strict=True)):
            cls = HubertGroupNormConvLayer if k == 0 else HubertNoLayerNormConvLayer
            layers.append(cls(c_in, c_out, kernel, stride, cfg.conv_bias))
            c_in = c_out
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x[:, None]  # (B, 1, L)
        for layer in self.conv_layers:
            h = layer(h)
        return h  # (B, C, T)


class HubertFeatureProjection(nn.Module):
    def __init__(self, cfg: HubertECGConfig) -> None:
        super().__init__()
        self.feat_proj_layer_norm = cfg.feat_proj_layer_norm
        if cfg.feat_proj_layer_norm:
            self.layer_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feat_proj_layer_norm:
            x = self.layer_norm(x)
        return self.projection(x)  # (B, T, H)


class HubertPositionalConvEmbedding(nn.Module):
    """Grouped conv with weight norm over dim 2 (keys ``conv.parametrizations.weight.original0/1``)."""

    def __init__(self, cfg: HubertECGConfig) -> None:
        super().__init__()
        k = cfg.num_conv_pos_embeddings
        conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, kernel_size=k, padding=k // 2,
                         groups=cfg.num_conv_pos_embedding_groups)
        nn.init.normal_(conv.weight, mean=0.0, std=2 * math.sqrt(1 / (k * cfg.hidden_size)))
        nn.init.zeros_(conv.bias)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.num_pad_remove = 1 if k % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2))  # (B, H, T + 1) for an even kernel
        if self.num_pad_remove:
            h = h[:, :, : -self.num_pad_remove]
        return F.gelu(h).transpose(1, 2)  # (B, T, H)


class HubertAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections; q scaled by head_dim**-0.5."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        q = (self.q_proj(x) * self.scaling).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        attn = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # (B, nh, T, T)
        out = (attn @ v).transpose(1, 2).reshape(b, t, e)  # (B, T, H)
        return self.out_proj(out)


class HubertFeedForward(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(hidden, intermediate)
        self.output_dense = nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class HubertEncoderLayer(nn.Module):
    """Post-LN layer: ``x = LN(x + Attn(x)); x = final_LN(x + FFN(x))``; returns a tensor, not a tuple."""

    def __init__(self, cfg: HubertECGConfig) -> None:
        super().__init__()
        self.attention = HubertAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = HubertFeedForward(cfg.hidden_size, cfg.intermediate_size)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(x + self.attention(x))  # (B, T, H)
        return self.final_layer_norm(x + self.feed_forward(x))  # (B, T, H)


class HubertEncoder(nn.Module):
    def __init__(self, cfg: HubertECGConfig) -> None:
        super().__init__()
        self.pos_conv_embed = HubertPositionalConvEmbedding(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(HubertEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder input: ``LN(x + pos_conv(x))``, the input of ``layers[0]``."""
        return self.layer_norm(x + self.pos_conv_embed(x))


class HuBERTECG(Backbone):
    """HuBERT-ECG as a :class:`Backbone`; see the module docstring and :class:`HubertECGConfig`.

    ``state_dict()`` keys are the official ones (``feature_extractor.*``, ``encoder.layers.*``,
    ``final_proj.*``, ...): the bridgeable blocks are ``encoder.layers`` (exposed as :attr:`blocks` without a
    second registration), and :meth:`embed` is a method, not a module, so no key is duplicated.
    """

    kind = KIND

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        cfg = config_from_dict(HubertECGConfig, normalise_config(config), what=KIND)
        super().__init__(asdict(cfg))
        self.cfg = cfg
        if cfg.mask_time_prob > 0 or cfg.mask_feature_prob > 0:  # as HubertModel: only then is it created
            self.masked_spec_embed = nn.Parameter(torch.empty(cfg.hidden_size).uniform_())
        self.feature_extractor = HubertFeatureEncoder(cfg)
        self.feature_projection = HubertFeatureProjection(cfg)
        self.encoder = HubertEncoder(cfg)
        self._build_pretraining_heads(cfg.ensemble_length, cfg.classifier_proj_size, cfg.vocab_sizes)
        self.norm = nn.Identity()  # post-LN encoder: BioX pools the last layer output as is
        self.head = nn.Linear(cfg.hidden_size, cfg.n_classes) if cfg.n_classes else None
        self._init_weights()
        self._finish_init()
        self.eval()

    def _build_pretraining_heads(self, ensemble_length: int, proj_size: int,
                                 vocab_sizes: tuple[int, ...]) -> None:
        # HuBERTECG's pretraining heads: kept so the published checkpoint loads strictly; unused for features
        hidden = self.cfg.hidden_size
        self.final_proj = nn.ModuleList(nn.Linear(hidden, proj_size) for _ in range(ensemble_length))
        self.label_embedding = nn.ModuleList(nn.Embedding(v, proj_size) for v in vocab_sizes)

    def _init_weights(self) -> None:
        # transformers' HubertPreTrainedModel._init_weights, so a model built without weights is sensible
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv1d) and m is not self.encoder.pos_conv_embed.conv:
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    k = math.sqrt(m.groups / (m.in_channels * m.kernel_size[0]))
                    nn.init.uniform_(m.bias, a=-k, b=k)

    # --- Backbone parts -------------------------------------------------------------------------------
    @property  # type: ignore[override]
    def blocks(self) -> nn.ModuleList:
        """The official ``encoder.layers`` (registered once, under its official path)."""
        return self.encoder.layers

    @property
    def layout(self) -> str:
        return "btd"

    @property
    def block_paths(self) -> list[str]:
        """Official module paths (``encoder.layers.k``), as BioX-Bridge's ``fm_config`` names them."""
        return [f"encoder.layers.{k}" for k in range(self.n_blocks)]

    def flatten_leads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, leads, L)`` -> the official input ``(B, leads' * L)``, lead-major, after lead expansion."""
        if self.cfg.lead_expansion == "zero_pad":
            pad = x.new_zeros(x.shape[0], self.cfg.expanded_leads - 1, x.shape[2])
            x = torch.cat([x, pad], dim=1)  # (B, 12, L)
        elif self.cfg.lead_expansion == "repeat":
            x = x.expand(-1, self.cfg.expanded_leads, -1)  # (B, 12, L)
        return x.reshape(x.shape[0], -1)  # (B, leads' * L)

    def embed_official(self, x: torch.Tensor) -> torch.Tensor:
        """Official input ``(B, leads * L)`` -> input of ``encoder.layers[0]`` ``(B, T, H)``."""
        if x.ndim != 2:
            raise BackboneError(f"{KIND}: the official input is (batch, leads * samples), got shape "
                                f"{tuple(x.shape)}")
        feats = self.feature_extractor(x).transpose(1, 2)  # (B, T, C)
        return self.encoder.embed(self.feature_projection(feats))  # (B, T, H)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """One window ``(B, leads, L)`` -> input of block 0 ``(B, T, H)``."""
        return self.embed_official(self.flatten_leads(x))

    def embed_input(self, x: torch.Tensor) -> torch.Tensor:
        """Embed this backbone's window ``(B, leads, L)`` or the official input ``(B, leads * L)``.

        The official layout is what ``golden/hubert_ecg/io.npz: input`` holds, so
        :meth:`block_outputs` (one output ``(B, T, H)`` per ``encoder.layers[k]``) reads it directly.
        """
        if x.ndim == 3:
            return super().embed_input(x)
        return self.embed_official(x)

    def official_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``HubertModel(x).last_hidden_state`` for the official input ``(B, leads * L)``: ``(B, T, H)``."""
        return self.block_outputs(x)[-1]

    # --- loading --------------------------------------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike[str]) -> HuBERTECG:
        """Load ``hubert_ecg_small.pt`` (or a safetensors file of this model) strictly.

        Accepted layouts: a plain state dict or ``{"model_state_dict": ..., "model_config": ...}``; an
        optional ``module.`` prefix; weight norm named ``weight_g/weight_v`` or
        ``parametrizations.weight.original0/1``. The pickled ``HuBERTECGConfig`` is read as inert data
        (:class:`~edge_bridge.models.checkpoints.ConfigStub`); its architecture fields must agree with this
        model's config. The pretraining heads ``final_proj``/``label_embedding`` take the checkpoint's shapes
        (their vocabulary size cannot be known in advance, and they do not affect features).

        Raises
        ------
        CheckpointError
            If the file cannot be read safely, its config disagrees, or any key is missing, unexpected or
            mis-shaped (all listed).
        """
        from edge_bridge.models import checkpoints

        obj = checkpoints.read_checkpoint(path, stub_classes=("HuBERTECGConfig", "HubertConfig"))
        if isinstance(obj, dict) and isinstance(obj.get("model_config"), checkpoints.ConfigStub):
            self._check_checkpoint_config(getattr(obj["model_config"], "attributes", {}), str(path))
        tensors = checkpoints.extract_state_dict(obj, str(path), ("model_state_dict", "state_dict", "model"))
        tensors = checkpoints.strip_common_prefix(tensors, ("module.",))
        own = self.state_dict()
        tensors = checkpoints.rename_weight_norm(tensors, own)
        self._adopt_pretraining_heads(tensors)
        if self.head is not None:  # a task head is edge-bridge's own; keep it unless the file has one
            for k, v in self.head.state_dict().items():
                tensors.setdefault(f"head.{k}", v)
        checkpoints.load_strict(self, tensors, str(path), hint=(
            "hubert_ecg_small.pt needs the published config (hidden 512, 8 layers, conv_dim 512); check "
            "hidden_size, num_hidden_layers, intermediate_size and conv_dim against the checkpoint"))
        return self.eval()

    def _check_checkpoint_config(self, attributes: dict[str, Any], source: str) -> None:
        arch = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim",
                "conv_kernel", "conv_stride", "conv_bias", "num_conv_pos_embeddings",
                "num_conv_pos_embedding_groups", "layer_norm_eps", "do_stable_layer_norm",
                "feat_extract_norm")
        diffs = []
        for key in arch:
            if key in attributes:
                want = attributes[key]
                want = tuple(want) if isinstance(want, list | tuple) else want
                if want != getattr(self.cfg, key):
                    diffs.append(f"{key}: checkpoint {want!r}, model {getattr(self.cfg, key)!r}")
        if diffs:
            from edge_bridge.models.io import CheckpointError

            raise CheckpointError(f"{source}: the checkpoint's HuBERTECGConfig disagrees with the model "
                                  f"config ({'; '.join(diffs)}); build the backbone with the checkpoint's "
                                  "values")

    def _adopt_pretraining_heads(self, tensors: dict[str, torch.Tensor]) -> None:
        proj = sorted(int(k.split(".")[1]) for k in tensors
                      if k.startswith("final_proj.") and k.endswith(".weight"))
        emb = sorted(int(k.split(".")[1]) for k in tensors
                     if k.startswith("label_embedding.") and k.endswith(".weight"))
        if not proj or not emb or proj != list(range(len(proj))) or emb != list(range(len(emb))):
            return  # not the HuBERT-ECG layout: load_strict reports what is missing
        proj_size = int(tensors["final_proj.0.weight"].shape[0])
        vocab = tuple(int(tensors[f"label_embedding.{i}.weight"].shape[0]) for i in emb)
        if (len(proj), proj_size, vocab) == (self.cfg.ensemble_length, self.cfg.classifier_proj_size,
                                             self.cfg.vocab_sizes):
            return
        logger.info("%s: pretraining heads take the checkpoint's shapes: ensemble_length=%d, "
                    "classifier_proj_size=%d, vocab_sizes=%s", KIND, len(proj), proj_size, list(vocab))
        self.cfg = HubertECGConfig(**{**asdict(self.cfg), "ensemble_length": len(proj),
                                      "classifier_proj_size": proj_size, "vocab_sizes": vocab})
        self.config.update(ensemble_length=len(proj), classifier_proj_size=proj_size, vocab_sizes=list(vocab))
        self._build_pretraining_heads(len(proj), proj_size, vocab)


def preprocessing(input_rate: float = 500.0, window_s: float = 60.0, hop_s: float = 5.0,
                  channels: tuple[str, ...] = ("ecg",)) -> Any:
    """The :class:`~edge_bridge.signals.Preprocessing` spec that feeds HuBERT-ECG as BioX-Bridge does.

    BioX: resample to 500 Hz, FIR band-pass 0.05-47 Hz (order 150), resample to 100 Hz, per-lead
    mean/std normalisation. The spec keeps the 100 Hz model rate, the band edges and per-lead z-scoring
    (per window, as a streaming device must); its band-pass is a zero-phase Butterworth instead of the
    order-150 FIR (same pass band; the spec knows one filter family). WESAD: 60 s windows, 5 s hop; ISRUC:
    30 s, 30 s. Single-lead expansion to 12 leads is a model setting (``lead_expansion``), not preprocessing.
    """
    from edge_bridge.signals import Preprocessing

    return Preprocessing(modality="ecg", channels=tuple(channels), input_rate=input_rate,
                         output_rate=INPUT_RATE_HZ, window_s=window_s, hop_s=hop_s, bandpass=(0.05, 47.0),
                         normalise="zscore")


def build_hubert_ecg(config: dict[str, Any]) -> Backbone:
    return HuBERTECG(config)
