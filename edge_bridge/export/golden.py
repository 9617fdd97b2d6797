"""``golden.npz``: inputs and expected outputs per part, for the device's self-test.

The expected outputs are what ONNX Runtime gives on the *exported files* (at their shipped precision), not
what PyTorch gives, so a device running the same files with ONNX Runtime compares like with like and can use
a tight tolerance; a TensorRT engine built from an INT8 graph will differ more (the report records the
INT8-vs-FP32 drift as the scale to expect). The PyTorch FP32 outputs' max difference is recorded in the
manifest report, not in the file.

Keys are ``"<part>.<tensor>"``, one pair per part, each array shaped ``(n_windows, ...)``::

    target_front.x_target  target_front.h        bridge.h        bridge.z
    source_back.z          source_back.logits    source_front.x_source  source_front.z

The chain is consistent: ``bridge.h`` is ``target_front.h`` and ``source_back.z`` is ``bridge.z``, so the
self-test can check each part alone and the composite end to end (``target_front.x_target`` ->
``source_back.logits``).

A fused bundle adds, per extra target ``KEY``, ``target_front_KEY.x_target_KEY`` and
``target_front_KEY.h_KEY``, and the bridge's further input ``bridge.h_KEY`` (equal to the front's output).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_bridge.export.onnx_export import PARTS, ort_session, part_info, run_session
from edge_bridge.fileio import atomic_path


def golden_key(part: str, tensor: str) -> str:
    return f"{part}.{tensor}"


def golden_arrays(files: dict[str, Path], x_target: np.ndarray, x_source: np.ndarray | None,
                  extras: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run each part's ONNX file on the golden windows (chained) and collect inputs and outputs.

    Parameters
    ----------
    files : dict of part -> path
        The bundle's graphs (``target_front``, ``bridge``, ``source_back``, optionally ``source_front``).
    x_target : ndarray, shape (n, C_t, L_t)
    x_source : ndarray, shape (n, C_s, L_s), optional
        Needed when ``files`` has ``source_front``.
    extras : dict of key -> ndarray, shape (n, C_k, L_k), optional
        A fused bundle's extra targets' windows (the same n, in lockstep): each runs through
        ``target_front_<key>`` and its ``h_<key>`` feeds the bridge.
    """
    out: dict[str, np.ndarray] = {}
    feed = {"target_front": np.asarray(x_target, np.float32)}
    bridge_extra: dict[str, np.ndarray] = {}
    for key, xk in (extras or {}).items():
        part = f"target_front_{key}"
        info = part_info(part)
        xk = np.asarray(xk, np.float32)
        hk = run_session(ort_session(files[part]), part, xk)
        out[golden_key(part, info.input)], out[golden_key(part, info.output)] = xk, hk
        bridge_extra[info.output] = hk
        out[golden_key("bridge", info.output)] = hk
    for part, nxt in (("target_front", "bridge"), ("bridge", "source_back"), ("source_back", None)):
        if part == "bridge" and bridge_extra:
            y = run_fused_bridge(ort_session(files[part]), feed[part], bridge_extra)
        else:
            y = run_session(ort_session(files[part]), part, feed[part])
        out[golden_key(part, PARTS[part].input)] = feed[part]
        out[golden_key(part, PARTS[part].output)] = y
        if nxt:
            feed[nxt] = y
    if "source_front" in files and x_source is not None:
        xs = np.asarray(x_source, np.float32)
        out[golden_key("source_front", "x_source")] = xs
        sess = ort_session(files["source_front"])
        out[golden_key("source_front", "z")] = run_session(sess, "source_front", xs)
    return out


def run_fused_bridge(sess: Any, h: np.ndarray, extra: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    """A fused bridge's session over ``h`` and the extra fronts' ``{"h_<key>": array}`` in chunks -> z."""
    outs = []
    for k in range(0, len(h), batch):
        feed = {"h": np.ascontiguousarray(h[k:k + batch], np.float32),
                **{n: np.ascontiguousarray(v[k:k + batch], np.float32) for n, v in extra.items()}}
        outs.append(sess.run(["z"], feed)[0])
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def write_golden(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Save ``arrays`` as an uncompressed ``.npz`` atomically (plain arrays only: loading never unpickles)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return path
