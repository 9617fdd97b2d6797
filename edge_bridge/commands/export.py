"""Export a trained bridge run as a bundle: one ONNX graph per part, static INT8, a verified manifest.

Writes BUNDLE/ with target_front.onnx, source_back.onnx, source_front.onnx (INT8 QDQ, or --precision),
bridges/v0001.onnx + v0001.safetensors (FP32: refit on site), golden.npz and manifest.json. Parity with
PyTorch is checked on the run's test subjects. INT8 is mixed precision: per part the calibration method
(MinMax, Percentile, Entropy) and the fewest nodes kept in FP32 are searched with the accuracy guard's own
measure on the calibration windows; the composite's agreement with FP32 is then checked on the test
subjects, and only below --agreement-threshold do whole parts fall back to FP16/FP32 (said loudly,
recorded in the manifest). --report prints the per-part figures.

--target cpu: ONNX Runtime CPU (uint8 activations, int8 per-channel weights).
--target jetson: TensorRT explicit quantization (symmetric int8, FP32 biases, Q/DQ on Conv/MatMul/Gemm
inputs only), audited on the files.

Example:
  edge-bridge export runs/stress -o stress.bundle --calibration-data data/sim --target cpu
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help="run directory with a trained bridge (edge-bridge train)")
    p.add_argument("-o", "--out", required=True, metavar="BUNDLE", help="bundle directory to create")
    p.add_argument("--calibration-data", metavar="DIR", default=None,
                   help="folder of paired recordings (EDF+, BrainFlow CSV, ...; read with the run's "
                        "--channels and --label-map) or a windows .npz for INT8 calibration; needed for int8")
    p.add_argument("--precision", default="int8", choices=["int8", "fp16", "fp32"],
                   help="precision of target_front, source_back and source_front (default int8)")
    p.add_argument("--target", default="cpu", choices=["cpu", "jetson"],
                   help="INT8 flavour: ONNX Runtime CPU or TensorRT (default cpu)")
    p.add_argument("--agreement-threshold", type=float, default=0.98,
                   help="minimum argmax agreement with FP32 before parts fall back (default 0.98)")
    p.add_argument("--golden-windows", type=int, default=4, help="windows in golden.npz (default 4)")
    p.add_argument("--no-source-weights", dest="source_weights", action="store_false",
                   help="leave the source model's weights (source_model/, safetensors, ~0.6 MB for the "
                        "reference models) out of the bundle; on site, calibrate then needs --run for "
                        "gradient steps (default: ship them)")
    p.add_argument("--report", action="store_true",
                   help="print per part: precision, nodes kept in FP32 and why, agreement, max logit "
                        "drift, size and batch-1 latency INT8 vs FP32 on this CPU")
    p.add_argument("--force", action="store_true",
                   help="replace an existing BUNDLE (only after the new one verifies)")


def run(args: argparse.Namespace) -> int:
    from edge_bridge.export import export

    bundle = export(args.run_dir, args.out, calibration=args.calibration_data, precision=args.precision,
                    target=args.target, agreement_threshold=args.agreement_threshold, overwrite=args.force,
                    golden_windows=args.golden_windows, source_weights=args.source_weights)
    m = bundle.manifest
    q = m.quantization
    acc = (q.get("accuracy") or {}).get("shipped") or {}
    parts = ", ".join(f"{name} {spec.precision}" for name, spec in sorted(m.parts.items()))
    print(f"bundle {bundle.root}: {parts}, bridge v{m.current_bridge:04d} fp32; "
          f"{m.report.get('bundle_bytes', 0) / 1e3:.1f} kB")
    if acc:
        bal = (f", balanced accuracy {acc['balanced_accuracy']:.3f} "
               f"(FP32 {acc['balanced_accuracy_fp32']:.3f})" if "balanced_accuracy" in acc else "")
        print(f"agreement with FP32 {acc['agreement']:.4f}, max logit drift "
              f"{acc['max_logit_drift']:.3g}{bal}")
    for ev in q.get("fallback", []):
        print(f"FALLBACK: {ev['part']} {ev['from']} -> {ev['to']} (agreement {ev['agreement_before']:.4f} "
              f"< {ev['threshold']})")
    if args.report:
        from edge_bridge.commands.bundle import quantization_lines

        for line in quantization_lines(m):
            print(line)
    print(f"next: edge-bridge deploy --bundle {bundle.root}")
    return 0
