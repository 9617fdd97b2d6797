"""Features computed once and reused: pooled block outputs for selection, and the bridge-training cache.

Both backbones are frozen, so everything they compute from the paired windows is fixed: the target block-*i*
output (mean-pooled: the bridge input ``h``) and the source model's last-block output on the source signal
(the target ``Y`` of the alignment objective). Caching them means a training epoch runs only the bridge and
``source[j:]``. Under ``torch.distributed`` each rank extracts a contiguous shard of the windows and the
shards are all-gathered, so every rank ends with the full cache in the original order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_bridge.models.backbone import Backbone

logger = logging.getLogger(__name__)


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous shard ``[lo, hi)`` of ``n`` items for ``rank`` (np.array_split's sizes)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]], x: np.ndarray | torch.Tensor,
                batch_size: int = 128, *, progress: bool = False, desc: str = "features",
                sharded: bool = True) -> list[torch.Tensor]:
    """Apply ``fn`` to ``x`` in batches without gradients; returns the outputs concatenated per output.

    When ``torch.distributed`` is initialised (and ``sharded``), each rank runs its shard and the results are
    all-gathered in order.
    """
    x = _as_tensor(x)
    dist = torch.distributed
    world = dist.get_world_size() if sharded and dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    lo, hi = _shard_bounds(len(x), rank, world)
    starts = range(lo, hi, batch_size)
    if progress and rank == 0:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    outs: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for s in starts:
            res = fn(x[s:min(s + batch_size, hi)])
            outs.append(list(res) if isinstance(res, list | tuple) else [res])
    if not outs:  # empty shard: learn the output shapes from one window
        with torch.no_grad():
            probe = fn(x[:1])
        outs = [[r[:0] for r in (probe if isinstance(probe, list | tuple) else [probe])]]
    local = [torch.cat(parts) for parts in zip(*outs, strict=True)]
    if world == 1:
        return local
    return [_gather_rows(t, len(x), world) for t in local]


def _gather_rows(t: torch.Tensor, n: int, world: int) -> torch.Tensor:
    """All-gather contiguous row shards (of known sizes) into one tensor of ``n`` rows, in rank order."""
    dist = torch.distributed
    size = _shard_bounds(n, 0, world)[1]  # rank 0 has the largest shard
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else t.device
    pad = torch.zeros((size, *t.shape[1:]), dtype=t.dtype, device=device)
    pad[: len(t)] = t.to(device)
    bufs = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(bufs, pad)
    rows = [b[: (_shard_bounds(n, r, world)[1] - _shard_bounds(n, r, world)[0])] for r, b in enumerate(bufs)]
    return torch.cat(rows).to(t.device)


def pooled_boundaries(model: Backbone, x: np.ndarray | torch.Tensor, batch_size: int = 128,
                      *, progress: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """One forward pass keeping every block boundary, mean-pooled over tokens.

    Returns
    -------
    pooled : list of ndarray, each shape (n, features_k)
        ``n_blocks + 1`` entries: ``pooled[k]`` is block *k*'s input, ``pooled[k + 1]`` its output.
    out : ndarray, shape (n, n_classes) or (n, feature_dim)
        The model's output (logits when it has a head).
    """
    model.eval()

    def fn(xb: torch.Tensor) -> list[torch.Tensor]:
        bounds, out = model.boundary_outputs(xb)
        return [*(model.pool(b) for b in bounds), out]

    res = run_batched(fn, x, batch_size, progress=progress, desc=f"{model.kind} pass")
    return [r.numpy() for r in res[:-1]], res[-1].numpy()


@dataclass
class BridgeCache:
    """What bridge training needs per paired window, computed once.

    Attributes
    ----------
    h : Tensor, shape (n, d_in)
        Target block-*i* output, mean-pooled over tokens.
    y : Tensor, shape (n, T_last, D_last)
        Source last-block output on the source signal (canonical layout, before pooling and head).
    """

    h: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.h)

    def subset(self, idx: np.ndarray | torch.Tensor) -> BridgeCache:
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        return BridgeCache(self.h[idx_t], self.y[idx_t])

    def save(self, path: str | os.PathLike[str]) -> None:
        from edge_bridge.models.io import save_tensors

        save_tensors(path, {"h": self.h, "y": self.y})

    @staticmethod
    def load(path: str | os.PathLike[str]) -> BridgeCache:
        from edge_bridge.models.io import CheckpointError, read_tensors

        t = read_tensors(Path(path))
        if set(t) != {"h", "y"}:
            raise CheckpointError(f"{path}: a bridge cache holds tensors 'h' and 'y', found {sorted(t)}")
        return BridgeCache(t["h"], t["y"])


def bridge_cache(target: Backbone | Sequence[Backbone], source: Backbone,
                 x_target: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor],
                 x_source: np.ndarray | torch.Tensor, i: int | Sequence[int], batch_size: int = 128,
                 *, progress: bool = False) -> BridgeCache:
    """Compute :class:`BridgeCache` for paired windows (one pass of each frozen model).

    For a fused bridge pass K target backbones, their K window arrays (windowed in lockstep) and K
    positions ``i_k``: ``h`` is then the concatenation ``[h_1 | ... | h_K]`` in that order, which is the
    form :class:`~edge_bridge.bridge.PrototypeBridge` with ``d_in=[d_1, ..., d_K]`` reads, so training
    and validation run unchanged.
    """
    source.eval()
    if isinstance(target, Backbone):
        target.eval()
        i = target.position(i)  # type: ignore[arg-type]
        (h,) = run_batched(lambda xb: target.pool(target.front(xb, i)), x_target, batch_size,
                           progress=progress, desc="target front")
    else:
        targets, xs, positions = list(target), list(x_target), list(i)  # type: ignore[arg-type]
        if not (len(targets) == len(xs) == len(positions)) or not targets:
            raise ValueError(f"a fused cache needs one window array and one position per target backbone, "
                             f"got {len(targets)} backbones, {len(xs)} arrays, {len(positions)} positions")
        parts = []
        for k, (tb, xk, ik) in enumerate(zip(targets, xs, positions, strict=True)):
            tb.eval()
            ik = tb.position(ik)
            (hk,) = run_batched(lambda xb, tb=tb, ik=ik: tb.pool(tb.front(xb, ik)), xk, batch_size,
                                progress=progress, desc=f"target front {k}")
            parts.append(hk)
        h = torch.cat(parts, dim=1)
    (y,) = run_batched(lambda xb: source.to_tokens(source.front(xb, source.n_blocks - 1)), x_source,
                       batch_size, progress=progress, desc="source Y")
    return BridgeCache(h.contiguous(), y.contiguous())


def source_tokens(source: Backbone, x_source: np.ndarray | torch.Tensor, j: int,
                  batch_size: int = 128) -> torch.Tensor:
    """Real source block-*j* input tokens, canonical ``(n, T, D)`` (for prototype initialisation)."""
    source.eval()
    j = source.position(j)

    def fn(xb: torch.Tensor) -> torch.Tensor:
        h = source.embed(xb)
        for block in source.blocks[:j]:
            h = block(h)
        return source.to_tokens(h)

    (tok,) = run_batched(fn, x_source, batch_size)
    return tok
