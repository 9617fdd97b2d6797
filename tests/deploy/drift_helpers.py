"""A tiny real bundle for the drift, paired-watch and auto-calibrate tests, and playback files for it.

The graphs are built with onnx.helper (milliseconds, no torch): each front cuts its window into frames of
:data:`K` samples, projects them onto fixed random filters, rectifies and averages, so ``h`` reacts to the
spectrum of the signal (a sensor whose low-pass smooths the pulse moves it). Both specs take 250 Hz input,
so one BrainFlow playback file carries the ECG (source) and PPG (target) rows at one rate, as a chest strap
and a wristband on one board would. ``reference.npz`` is computed with the exporter's own
:func:`edge_bridge.export.reference.reference_arrays` on unshifted simulated subjects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from calibrate.weights import PrototypeWeights
from edge_bridge.bundle import (
    GOLDEN,
    REFERENCE,
    BridgeVersion,
    Manifest,
    TensorSpec,
    bridge_file,
    part_spec,
    write_manifest,
)
from edge_bridge.tasks import TASKS

TASK = TASKS["stress"].with_window(10, 5)
SOURCE = TASK.source  # ECG 250 Hz -> 100 Hz
TARGET = dataclasses.replace(TASK.target, input_rate=250.0)  # PPG at the ECG's rate -> 125 Hz
RATE = 250.0
D_IN, T, D_OUT, RANK, P = 8, 5, 6, 2, 4
K = 25
SHIFT = {"polarity": -1.0, "gain": 2.5, "lowpass_hz": 2.5, "lowpass_order": 2, "delay_s": 0.08}  # bench's


def _model(nodes, inputs, outputs, inits) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape])


def _front(name_in, name_out, length, width, rng, tokens=None, pulse=False) -> bytes:
    """Frames of K samples -> projections -> half of the features cubed (odd: they see the pulse's
    asymmetry), half rectified (energy) -> mean over frames. With ``pulse`` every feature is the cube of
    one sample per frame, i.e. the window's skewness seen at 8 phases: what an inverted, smoothed PPG
    sensor moves most (a pretrained PPG backbone sees the pulse's shape too)."""
    w = (rng.standard_normal((K, width)) / np.sqrt(K)).astype(np.float32)
    odd = np.zeros(width, np.float32)
    odd[: width // 2] = 1.0
    if pulse:  # every feature the cube of one sample of the frame: the window's skewness, 8 ways
        w[:] = 0.0
        w[np.arange(width) * (K // width), np.arange(width)] = 1.0
        odd[:] = 1.0
    frames = length // K
    if tokens:
        shape, axis, out = np.array([-1, tokens, frames // tokens, K], np.int64), 2, [tokens, width]
    else:
        shape, axis, out = np.array([-1, frames, K], np.int64), 1, [width]
    nodes = [helper.make_node("Reshape", [name_in, "shape"], ["frames"]),
             helper.make_node("MatMul", ["frames", "W"], ["proj"]),
             helper.make_node("Abs", ["proj"], ["rect"]),
             helper.make_node("Mul", ["proj", "proj"], ["sq"]),
             helper.make_node("Mul", ["sq", "proj"], ["cube"]),
             helper.make_node("Mul", ["cube", "odd"], ["c1"]),
             helper.make_node("Sub", ["one", "odd"], ["even"]),
             helper.make_node("Mul", ["rect", "even"], ["c2"]),
             helper.make_node("Add", ["c1", "c2"], ["feat"]),
             helper.make_node("ReduceMean", ["feat"], [name_out], axes=[axis], keepdims=0)]
    return _model(nodes, [_vi(name_in, [1, length])], [_vi(name_out, out)],
                  [numpy_helper.from_array(shape, "shape"), numpy_helper.from_array(w, "W"),
                   numpy_helper.from_array(odd, "odd"), numpy_helper.from_array(np.float32(1.0), "one")])


def run(model: bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: np.asarray(v, np.float32) for k, v in feed.items()})[0]


def simulated(subject: str, minutes: float, seed: int, shift: bool = False, shift_at_s: float | None = None):
    """(ecg, ppg) at 250 Hz of one simulated stress subject; the PPG shifted as another sensor's (from
    ``shift_at_s`` on, or all of it with ``shift``)."""
    from scipy.signal import butter, lfilter, resample_poly

    from edge_bridge.simulate import simulate_subject

    rec = simulate_subject("stress", subject, minutes=minutes, seed=seed)
    ecg = np.asarray(rec.channel("ECG").data, np.float64)
    ppg64 = np.asarray(rec.channel("PPG").data, np.float64)
    ppg = resample_poly(ppg64, 125, 32)[: ecg.size]
    if shift or shift_at_s is not None:
        b, a = butter(SHIFT["lowpass_order"], SHIFT["lowpass_hz"], fs=RATE)
        y = lfilter(b, a, ppg)
        d = round(SHIFT["delay_s"] * RATE)
        y = np.concatenate([np.full(d, y[0]), y[: y.size - d]])
        y = SHIFT["polarity"] * SHIFT["gain"] * y
        k = 0 if shift_at_s is None else round(shift_at_s * RATE)
        ppg = np.concatenate([ppg[:k], y[k:]])
    return ecg, ppg


def windows(ecg: np.ndarray, ppg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Processed (source, target) windows of a pair of 250 Hz signals, through edge_bridge.signals."""
    from edge_bridge.signals import assess_quality, process_windows

    n, hop = SOURCE.window_samples, round(SOURCE.hop_s * RATE)
    starts = range(0, ecg.size - n + 1, hop)
    rs = np.stack([ecg[None, s:s + n] for s in starts])
    rt = np.stack([ppg[None, s:s + n] for s in starts])
    ok = ~(assess_quality(rs, SOURCE).any(axis=1) | assess_quality(rt, TARGET).any(axis=1))  # the gate's
    return (process_windows(rs[ok], SOURCE, check_quality=False),
            process_windows(rt[ok], TARGET, check_quality=False))


def build_bundle(root: Path, *, seed: int = 0, reference: bool = True, baseline_bias: float = 0.0,
                 session: bool = True, population_spread: float = 1.0, signal: bool = False,
                 signal_spread: float = 1.0) -> Path:
    """Write a verified tiny paired bundle at ``root`` (with ``reference.npz`` unless told otherwise).

    ``baseline_bias`` is added to the head's first logit: with a large one the source model (and so the
    composite) decides "baseline" almost always, the paired minutes show one state, and calibrate (with
    ``--min-states 1``) judges a refit on the alignment loss alone, which the refit lowers: the way to a
    published bridge that the auto-calibrate test needs from a model with random features. ``session``
    False writes the reference without subject ids (population score only, as older exports did);
    ``population_spread`` widens the population null's block means about their mean (users that differ
    from one another that much more: the population threshold rises, the within-session one does not).
    ``signal`` adds the signal descriptors' statistics, as export writes them; ``signal_spread`` widens their
    population null the same way (six held-out subjects of four minutes undersample how users differ)."""
    from edge_bridge.export.golden import write_golden
    from edge_bridge.export.reference import reference_arrays

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "bridges").mkdir()
    tf = _front("x_target", "h", TARGET.output_samples, D_IN, rng, pulse=True)
    sf = _front("x_source", "z", SOURCE.output_samples, D_OUT, rng, tokens=T)
    ecg, ppg = simulated("REF", 6, 99)
    xs, xt = windows(ecg, ppg)
    z = run(sf, {"x_source": xs})
    zf = z.reshape(len(z), -1)
    wb = rng.standard_normal((T * D_OUT, 3)).astype(np.float32)
    wb /= (zf - zf.mean(0)).std(0)[:, None] * np.sqrt(T * D_OUT) + 1e-6
    b = -(zf.mean(0) @ wb).astype(np.float32)
    b[0] += baseline_bias
    sb = _model([helper.make_node("Reshape", ["z", "shape"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "Wb"], ["mm"]),
                 helper.make_node("Add", ["mm", "b"], ["logits"])],
                [_vi("z", [T, D_OUT])], [_vi("logits", [3])],
                [numpy_helper.from_array(np.array([-1, T * D_OUT], np.int64), "shape"),
                 numpy_helper.from_array(wb, "Wb"), numpy_helper.from_array(b, "b")])
    # the exported bridge: a closed-form-like fit is calibrate's job; here prototypes are real tokens and the
    # coefficients random, so the composite agrees with the source model only partly
    tokens = z.reshape(-1, D_OUT)
    pi = tokens[rng.choice(len(tokens), P, replace=False)].T
    bridge = PrototypeWeights(rng.standard_normal((RANK, D_IN)), 0.3 * rng.standard_normal((P * T, RANK)),
                              pi, T)
    parts = {"target_front": tf, "source_front": sf, "source_back": sb}
    for name, data in parts.items():
        (root / f"{name}.onnx").write_bytes(data)
    onnx_bytes, st = bridge.onnx_bytes(), bridge.safetensors_bytes()
    (root / bridge_file(1, ".onnx")).write_bytes(onnx_bytes)
    (root / bridge_file(1, ".safetensors")).write_bytes(st)

    h = run(tf, {"x_target": xt})
    zb = run(onnx_bytes, {"h": h})
    logits = run(sb, {"z": zb})
    g = slice(0, 3)
    write_golden(root / GOLDEN, {"target_front.x_target": xt[g], "target_front.h": h[g], "bridge.h": h[g],
                                 "bridge.z": zb[g], "source_back.z": zb[g], "source_back.logits": logits[g],
                                 "source_front.x_source": xs[g], "source_front.z": z[g]})
    ref = None
    if reference:  # held-out subjects, unshifted, as export computes it
        from edge_bridge.signals.descriptors import signal_descriptors

        hs, ls, ds = [], [], []
        for k in range(6):
            e, p_ = simulated(f"H{k}", 4, 200 + k)
            _, xt_k = windows(e, p_)
            ds.append(signal_descriptors(xt_k, TARGET))
            hk = run(tf, {"x_target": xt_k})
            hs.append(hk)
            ls.append(run(sb, {"z": run(onnx_bytes, {"h": hk})}))
        groups = np.repeat(np.arange(len(hs)), [len(x) for x in hs]) if session else None
        arrays = reference_arrays(np.concatenate(hs), np.concatenate(ls), groups=groups,
                                  signal=np.concatenate(ds) if signal else None)
        for pre, spread in (("", population_spread), ("signal_", signal_spread)):
            if f"{pre}mean" in arrays:
                mu, bm = arrays[f"{pre}mean"], arrays[f"{pre}block_means"]
                arrays[f"{pre}block_means"] = (mu + spread * (bm - mu)).astype(np.float32)
        write_golden(root / REFERENCE, arrays)
        ref = {"file": REFERENCE, "sha256": hashlib.sha256((root / REFERENCE).read_bytes()).hexdigest()}

    io = {"target_front": ([TensorSpec("x_target", [None, 1, TARGET.output_samples])],
                           [TensorSpec("h", [None, D_IN])]),
          "source_front": ([TensorSpec("x_source", [None, 1, SOURCE.output_samples])],
                           [TensorSpec("z", [None, T, D_OUT])]),
          "source_back": ([TensorSpec("z", [None, T, D_OUT])], [TensorSpec("logits", [None, 3])])}
    specs = {name: part_spec(root, f"{name}.onnx", "fp32", *io[name]) for name in parts}
    bspec = part_spec(root, bridge_file(1, ".onnx"), "fp32", [TensorSpec("h", [None, D_IN])],
                      [TensorSpec("z", [None, T, D_OUT])])
    version = BridgeVersion(1, bspec, bridge_file(1, ".safetensors"), hashlib.sha256(st).hexdigest(),
                            "2026-01-01T00:00:00+00:00", "export")
    manifest = Manifest(task="stress", classes=list(TASK.classes), source=SOURCE, target=TARGET,
                        positions={"i": 1, "j": 1}, parts=specs, bridges={1: version}, current_bridge=1,
                        golden_sha256=hashlib.sha256((root / GOLDEN).read_bytes()).hexdigest(),
                        reference=ref)
    write_manifest(root, manifest)
    return root


def playback_file(path: Path, ecg: np.ndarray | None, ppg: np.ndarray, *, speed: float = 1.0) -> Path:
    """A BrainFlow playback CSV at 250 Hz (ECG row optional) that the playback board replays ``speed`` times
    faster than real time: its time stamps step by 1 / (250 * speed), its sidecar keeps the true 250 Hz."""
    from firmware_interface import write_playback_file

    channels = [("PPG", "ppg", "au", ppg)]
    if ecg is not None:
        channels.insert(0, ("ECG", "ecg", "mV", ecg))
    csv = write_playback_file(channels, RATE * speed, path)
    side = Path(f"{csv}.json")
    data = json.loads(side.read_text())
    data["sampling_rate"] = RATE
    side.write_text(json.dumps(data))
    return csv
