"""The bridge: the only trained part, mapping target block-*i* features to source block-*j* input.

:class:`PrototypeBridge` follows the BioX-Bridge paper's official code. Its input ``h`` is the target
backbone's block-*i* output mean-pooled over tokens, shape ``(batch, d_in)``. Then::

    c = reshape(B (A h), (P, T))     # coefficients: for each of T output tokens, a weight per prototype
    Z = (Pi c)^T                     # (T, D_out): every output token is a weighted sum of P prototypes

with ``A`` (r x d_in) Kaiming-uniform, ``B`` ((P*T) x r) zeros and ``Pi`` (D_out x P) the prototypes.
Trainable parameters: ``r*d_in + r*P*T + D_out*P``; the map is linear of rank <= r.

Fused (multi-input) bridge: with K target modalities, each through its own frozen backbone cut after its
own block ``i_k`` and pooled to ``h_k`` (width ``d_k``), ``PrototypeBridge(d_in=[d_1, ..., d_K], ...)``
keeps one ``A_k`` (r x d_k) per modality and computes ``c = reshape(B (sum_k A_k h_k), (P, T))`` with the
shared ``B`` and prototypes ``Pi``. Trainable parameters: ``r * sum_k d_k + r*P*T + D_out*P``, so a second
modality costs only ``r * d_2``. Why one ``A_k`` each rather than one A over the concatenation: each is
Kaiming-initialised for its own width, so a narrow modality is not drowned at the start by a wide one. The
bridge takes the K features as a list or already concatenated (in modality order), which is what
:class:`~edge_bridge.features.BridgeCache` holds, so training needs no second code path. K = 1 (an integer
``d_in``) is the paper's bridge bit for bit: the same parameter ``A``, the same draws from the same seed,
the same state-dict keys and config.

Why this initialisation: with ``B = 0`` a fresh bridge outputs zeros, and on the first step only ``B`` gets a
gradient (``dA`` is multiplied by ``B`` and ``dPi`` by ``c``, both zero), so training starts by choosing
mixtures of prototypes rather than by moving them. The prototypes should therefore already look like real
source block-*j* tokens: :func:`init_prototypes` sets them from source-model representations (k-means
centroids of real tokens by default; see the benchmark for whether it helps over random).

Baselines with the same interface, for ablations: :class:`LinearBridge` (a full linear map with bias) and
:class:`LowRankBridge` (a rank-r linear map without prototypes). A bridge is saved alone, like a PEFT
adapter: ``bridge.save(dir)`` writes ``bridge_config.json`` and ``bridge.safetensors`` and never a backbone;
:func:`load_bridge` reads them back.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edge_bridge.errors import EdgeBridgeError
from edge_bridge.models.io import (
    load_state_checked,
    read_tensors,
    read_versioned_json,
    save_tensors,
    write_versioned_json,
)

logger = logging.getLogger(__name__)

CONFIG_NAME = "bridge_config.json"
WEIGHTS_NAME = "bridge.safetensors"
PROTOTYPE_INITS = ("kmeans", "sample", "random")


class BridgeError(EdgeBridgeError, ValueError):
    """A bridge was configured or fed with sizes that do not fit."""


def _input_dims(d_in: Any) -> tuple[int, ...]:
    """``d_in`` as K input widths: an integer is K = 1 (the paper's bridge), a list/tuple is K >= 1."""
    if isinstance(d_in, list | tuple):
        if not d_in:
            raise BridgeError("a fused bridge needs at least one target input width, got an empty list")
        return tuple(_check_positive(f"d_in[{k}]", d) for k, d in enumerate(d_in))
    return (_check_positive("d_in", d_in),)


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise BridgeError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Bridge(nn.Module):
    """Common interface: ``forward(h: (batch, d_in)) -> (batch, tokens, d_out)``, save, count."""

    kind: ClassVar[str] = ""

    def __init__(self, d_in: int, tokens: int, d_out: int) -> None:
        super().__init__()
        self.d_in = _check_positive("d_in", d_in)
        self.tokens = _check_positive("tokens", tokens)
        self.d_out = _check_positive("d_out", d_out)
        self.meta: dict[str, Any] = {}

    @property
    def config(self) -> dict[str, Any]:
        return {"d_in": self.d_in, "tokens": self.tokens, "d_out": self.d_out}

    def expected_parameters(self) -> int:
        """The closed-form parameter count of this kind of bridge."""
        raise NotImplementedError

    def count_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter elements."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, total

    def _check(self, h: torch.Tensor) -> None:
        if h.ndim != 2 or h.shape[1] != self.d_in:
            raise BridgeError(f"{self.kind} bridge expects pooled target features of shape (batch, "
                              f"{self.d_in}), "
                              f"got {tuple(h.shape)}; was it built for another target position?")

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``bridge_config.json`` and ``bridge.safetensors`` into ``directory`` (no backbone files).

        Raises
        ------
        BridgeError
            If ``directory`` exists and is a file.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise BridgeError(f"{directory} is a file; a bridge is saved into a directory")
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / WEIGHTS_NAME, self.state_dict(), metadata={"kind": self.kind})
        write_versioned_json(directory / CONFIG_NAME,
                             {"kind": self.kind, "config": self.config, "meta": self.meta,
                              "parameters": self.count_parameters()[1]})
        return directory


class PrototypeBridge(Bridge):
    """Low-rank prototype bridge of the BioX-Bridge paper (see the module docstring).

    Parameters
    ----------
    d_in : int
        Width of the pooled target features (target block-*i* output features).
    tokens : int
        T, tokens of source block *j*'s input.
    d_out : int
        D_out, width of source block *j*'s input tokens.
    rank : int
        r, the bottleneck of the coefficient network.
    prototypes : int
        P, number of prototype tokens.

    Examples
    --------
    >>> bridge = PrototypeBridge(d_in=64, tokens=60, d_out=64, rank=8, prototypes=16)
    >>> bridge.count_parameters()[0] == 8 * 64 + 8 * 16 * 60 + 64 * 16
    True
    """

    kind = "prototype"

    def __init__(self, d_in: int | Sequence[int], tokens: int, d_out: int, rank: int = 8,
                 prototypes: int = 16) -> None:
        dims = _input_dims(d_in)
        super().__init__(sum(dims), tokens, d_out)
        self.input_dims = dims
        self.rank = _check_positive("rank", rank)
        self.prototypes = _check_positive("prototypes", prototypes)
        if len(dims) == 1:  # the paper's bridge: parameter "A", as every saved bridge has it
            self.A = nn.Parameter(torch.empty(self.rank, self.d_in))  # (r, d_in)
        else:  # fused: one A_k per target modality, each initialised for its own width d_k
            for k, d in enumerate(dims):
                self.register_parameter(f"A_{k}", nn.Parameter(torch.empty(self.rank, d)))  # (r, d_k)
        self.B = nn.Parameter(torch.zeros(self.prototypes * self.tokens, self.rank))  # (P*T, r)
        self.Pi = nn.Parameter(torch.empty(self.d_out, self.prototypes))  # (D_out, P)
        for a in self.input_maps():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's default, as in LoRA's A
        nn.init.normal_(self.Pi)  # replaced by init_prototypes() from real source tokens

    @property
    def n_inputs(self) -> int:
        """K, the number of target modalities feeding the bridge (1 for the paper's bridge)."""
        return len(self.input_dims)

    def input_maps(self) -> list[nn.Parameter]:
        """``[A]`` for K = 1, else ``[A_0, ..., A_{K-1}]`` (each ``(r, d_k)``), in modality order."""
        if self.n_inputs == 1:
            return [self.A]
        return [getattr(self, f"A_{k}") for k in range(self.n_inputs)]

    def input_matrix(self) -> torch.Tensor:
        """``[A_0 | ... | A_{K-1}]``, ``(r, sum d_k)``: ``sum_k A_k h_k`` is this times the concatenated h."""
        maps = self.input_maps()
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)

    @property
    def config(self) -> dict[str, Any]:
        cfg = {**super().config, "rank": self.rank, "prototypes": self.prototypes}
        if self.n_inputs > 1:  # K input widths; K = 1 keeps the integer every existing config holds
            cfg["d_in"] = list(self.input_dims)
        return cfg

    def expected_parameters(self) -> int:
        """``r * sum_k d_k + r*P*T + D_out*P`` (K = 1: the paper's ``r*d_in + r*P*T + D_out*P``)."""
        r, p = self.rank, self.prototypes
        return r * sum(self.input_dims) + r * p * self.tokens + self.d_out * p

    def fuse_inputs(self, h: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The K pooled target features as one ``(batch, sum d_k)`` tensor, in modality order."""
        if isinstance(h, torch.Tensor):
            return h
        parts = list(h)
        if len(parts) != self.n_inputs or any(
                p.ndim != 2 or p.shape[1] != d for p, d in zip(parts, self.input_dims, strict=False)):
            raise BridgeError(f"this bridge takes {self.n_inputs} pooled target feature tensors of widths "
                              f"{list(self.input_dims)}, got shapes {[tuple(p.shape) for p in parts]}; pass "
                              "them in the order of the bridge's target modalities")
        return torch.cat(parts, dim=1)

    def coefficients(self, h: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Mixture weights ``(batch, P, T)`` of the prototypes for each output token.

        ``h``: ``(batch, d_in)``, or for a fused bridge either the K features ``h_k`` ``(batch, d_k)`` or
        their concatenation; ``sum_k A_k h_k`` equals ``[A_0 | ... | A_{K-1}]`` times the concatenation.
        """
        h = self.fuse_inputs(h)
        self._check(h)
        a = self.input_matrix()  # K = 1: self.A itself, the paper's arithmetic exactly
        c = (h @ a.T) @ self.B.T  # (N, P*T)
        return c.view(-1, self.prototypes, self.tokens)  # (N, P, T)

    def forward(self, h: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        c = self.coefficients(h)  # (N, P, T)
        z = torch.matmul(self.Pi, c)  # (N, D_out, T)
        return z.transpose(1, 2)  # (N, T, D_out)


class LinearBridge(Bridge):
    """Baseline: a full linear map ``d_in -> T*D_out`` with bias; zero-initialised like ``B``.

    Trainable parameters: ``d_in*T*D_out + T*D_out``.
    """

    kind = "linear"

    def __init__(self, d_in: int, tokens: int, d_out: int) -> None:
        super().__init__(d_in, tokens, d_out)
        self.W = nn.Parameter(torch.zeros(self.tokens * self.d_out, self.d_in))  # (T*D_out, d_in)
        self.b = nn.Parameter(torch.zeros(self.tokens * self.d_out))  # (T*D_out,)

    def expected_parameters(self) -> int:
        return self.d_in * self.tokens * self.d_out + self.tokens * self.d_out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check(h)
        z = h @ self.W.T + self.b  # (N, T*D_out)
        return z.view(-1, self.tokens, self.d_out)  # (N, T, D_out)


class LowRankBridge(Bridge):
    """Baseline: a rank-r linear map ``V (U h)`` without prototypes; U Kaiming, V zeros.

    Trainable parameters: ``r*d_in + r*T*D_out``.
    """

    kind = "lowrank"

    def __init__(self, d_in: int, tokens: int, d_out: int, rank: int = 8) -> None:
        super().__init__(d_in, tokens, d_out)
        self.rank = _check_positive("rank", rank)
        self.U = nn.Parameter(torch.empty(self.rank, self.d_in))  # (r, d_in)
        self.V = nn.Parameter(torch.zeros(self.tokens * self.d_out, self.rank))  # (T*D_out, r)
        nn.init.kaiming_uniform_(self.U, a=math.sqrt(5))

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "rank": self.rank}

    def expected_parameters(self) -> int:
        return self.rank * self.d_in + self.rank * self.tokens * self.d_out

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self._check(h)
        z = (h @ self.U.T) @ self.V.T  # (N, T*D_out)
        return z.view(-1, self.tokens, self.d_out)  # (N, T, D_out)


BRIDGES: dict[str, type[Bridge]] = {b.kind: b for b in (PrototypeBridge, LinearBridge, LowRankBridge)}


def build_bridge(kind: str, **config: Any) -> Bridge:
    """Build a bridge by kind (``"prototype"``, ``"linear"``, ``"lowrank"``) from its config."""
    if kind not in BRIDGES:
        raise BridgeError(f"unknown bridge kind {kind!r}; choose one of {', '.join(BRIDGES)}")
    try:
        return BRIDGES[kind](**config)
    except TypeError as exc:
        raise BridgeError(f"bad config for a {kind} bridge: {exc}") from None


def load_bridge(directory: str | os.PathLike[str]) -> Bridge:
    """Read a bridge saved by :meth:`Bridge.save`; weights must match the config exactly."""
    directory = Path(directory)
    cfg = read_versioned_json(directory / CONFIG_NAME, required=("kind", "config"),
                              known=("meta", "parameters"))
    bridge = build_bridge(cfg["kind"], **cfg["config"])
    bridge.meta = dict(cfg.get("meta") or {})
    load_state_checked(bridge, read_tensors(directory / WEIGHTS_NAME), str(directory / WEIGHTS_NAME))
    return bridge


def init_prototypes(bridge: PrototypeBridge, tokens: torch.Tensor | np.ndarray, method: str = "kmeans",
                    seed: int = 0, max_tokens: int = 20000) -> None:
    """Set ``Pi`` from real source block-*j* input tokens (the official code's "source representations").

    Parameters
    ----------
    bridge : PrototypeBridge
    tokens : array, shape (n_tokens, d_out)
        Source block-*j* input tokens from the paired set (canonical layout, flattened over windows).
    method : str
        ``"kmeans"``: centroids of k-means with P clusters; ``"sample"``: P distinct random tokens;
        ``"random"``: Gaussian with the tokens' per-feature mean and std (the scale of real tokens, none of
        their structure; the ablation baseline).
    seed : int
    max_tokens : int
        K-means runs on at most this many tokens (sampled), to keep it to seconds.
    """
    if not isinstance(bridge, PrototypeBridge):
        raise BridgeError(f"only a prototype bridge has prototypes, got a {bridge.kind} bridge")
    if method not in PROTOTYPE_INITS:
        raise BridgeError(f"prototype init must be one of {PROTOTYPE_INITS}, got {method!r}")
    t = np.asarray(tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else tokens,
                   dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != bridge.d_out:
        raise BridgeError(f"prototype tokens must have shape (n, {bridge.d_out}), got {t.shape}")
    if len(t) < bridge.prototypes:
        raise BridgeError(f"need at least P={bridge.prototypes} tokens to initialise prototypes, "
                          f"got {len(t)}")
    rng = np.random.default_rng(seed)
    if len(t) > max_tokens:
        t = t[rng.choice(len(t), max_tokens, replace=False)]
    if method == "kmeans":
        from sklearn.cluster import KMeans

        centres = KMeans(n_clusters=bridge.prototypes, n_init=1, random_state=seed).fit(t).cluster_centers_
    elif method == "sample":
        centres = t[rng.choice(len(t), bridge.prototypes, replace=False)]
    else:
        centres = rng.normal(t.mean(0), t.std(0) + 1e-8, size=(bridge.prototypes, t.shape[1]))
    with torch.no_grad():
        bridge.Pi.copy_(torch.as_tensor(centres.T, dtype=bridge.Pi.dtype))  # (D_out, P)
    bridge.meta["prototype_init"] = method
    logger.info("initialised %d prototypes by %s from %d source tokens", bridge.prototypes, method, len(t))
