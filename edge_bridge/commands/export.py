"""Export a trained bridge run as a bundle: one ONNX graph per part, static INT8, a verified manifest.

Writes BUNDLE/ with target_front.onnx, source_back.onnx, source_front.onnx (INT8 QDQ, or --precision),
bridges/v0001.onnx + v0001.safetensors (FP32: refit on site), golden.npz and manifest.json. Parity with
PyTorch is checked on the run's test subjects. INT8 is mixed precision: per part the calibration method
(MinMax, Percentile, Entropy) and the fewest nodes kept in FP32 are searched with the accuracy guard's own
measure on the calibration windows; the composite's agreement with FP32 is then checked on the test
subjects, and only below --agreement-threshold do whole parts fall back to FP16/FP32 (said loudly,
recorded in the manifest). --report prints the per-part figures.

A fused run (task stress+eda or stress-binary+eda, trained by `edge-bridge train`) exports a fused bundle:
target_front_<modality>.onnx per extra target (e.g. target_front_eda.onnx) beside target_front.onnx, and a
bridge with one input per target. Every front goes through the same INT8 search and accuracy guard as
target_front, measured on the fused chain; the calibration recordings must hold every target modality.

--target cpu: ONNX Runtime CPU (uint8 activations, int8 per-channel weights).
--target jetson: TensorRT explicit quantization (symmetric int8, FP32 biases, Q/DQ on Conv/MatMul/Gemm
inputs only), audited on the files.

--sign KEY signs the finished bundle with a publisher key (edge-bridge keys new), so a device that trusts
the key runs it and refuses any changed file; --bundle-version N is the signed release number (default:
UTC time YYYYMMDDHHMMSS), which must grow: deploy refuses a version older than it ran.

Example:
  edge-bridge export --run runs/stress -o stress.bundle --calibration-data data/sim --device cpu
  edge-bridge export --run runs/stress -o stress.bundle --calibration-data data/sim --sign keys/acme.key
  edge-bridge export --run runs/stress -o stress.bundle --calibration-data data/sim --reference-data data/ref
  edge-bridge export --run runs/fused -o fused.bundle --calibration-data data/sim --report

Old spellings (the run as a positional RUN, --target cpu|jetson) still work for one release, with a warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_bridge.commands._options import (
    OptionError,
    _warn_deprecated,
    fraction,
    input_dir,
    input_file,
    input_path,
    old_spellings,
    output_dir,
    positive_int,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", metavar="DIR", default=None,
                   help="run directory with a trained bridge (edge-bridge train)")
    p.add_argument("run_dir", nargs="?", metavar="RUN", default=None, help=argparse.SUPPRESS)
    p.add_argument("-o", "--out", required=True, metavar="BUNDLE", help="bundle directory to create")
    p.add_argument("--calibration-data", metavar="DIR", default=None,
                   help="folder of paired recordings (EDF+, BrainFlow CSV, ...; read with the run's "
                        "--channels and --label-map) or a windows .npz for INT8 calibration; needed for int8")
    p.add_argument("--reference-data", metavar="DIR", default=None,
                   help="recordings of subjects the run never trained on (EDF+ or BrainFlow CSV, paired as "
                        "--calibration-data; labels not needed) to compute the drift reference from, "
                        "instead of the run's test subjects; the more subjects, the fewer false drift "
                        "alarms on new users (the reference's null is as wide as the subjects it saw)")
    p.add_argument("--precision", default="int8", choices=["int8", "fp16", "fp32"],
                   help="precision of target_front, source_back and source_front (default int8)")
    p.add_argument("--device", "--target", dest="device", default="cpu", choices=["cpu", "jetson"],
                   action=old_spellings("--device", "--target"),
                   help="the device the bundle is for, which sets the INT8 flavour: cpu (ONNX Runtime; also "
                        "deploy --device cuda) or jetson (TensorRT) (default cpu)")
    p.add_argument("--agreement-threshold", type=fraction, default=0.98,
                   help="minimum argmax agreement with FP32 before parts fall back, in [0, 1] (default 0.98)")
    p.add_argument("--golden-windows", type=positive_int, default=4, help="windows in golden.npz (default 4)")
    p.add_argument("--no-source-weights", dest="source_weights", action="store_false",
                   help="leave the source model's weights (source_model/, safetensors, ~0.6 MB for the "
                        "reference models) out of the bundle; on site, calibrate then needs --run for "
                        "gradient steps (default: ship them)")
    p.add_argument("--sign", metavar="KEY", default=None,
                   help="sign the bundle with this publisher key (NAME.key from `edge-bridge keys new`)")
    p.add_argument("--bundle-name", default=None, metavar="NAME",
                   help="signed bundle name, the key of deploy's version record (default: the task)")
    p.add_argument("--bundle-version", type=positive_int, default=None, metavar="N",
                   help="signed bundle version, higher than any earlier release (default: UTC time)")
    p.add_argument("--int8-search", choices=("fast", "thorough", "off"), default="fast",
                   help="how INT8 parts are chosen by the accuracy guard's measure: 'fast' (default, "
                        "seconds per part): op set and calibration method (MinMax, Percentile, Entropy), "
                        "then the fewest nodes kept in FP32 from a one-pass per-node ranking; 'thorough': "
                        "greedy per-node steps and a second method too (minutes); 'off': every node INT8 "
                        "with MinMax, whole-part fallback only. Example: --int8-search thorough")
    p.add_argument("--report", action="store_true",
                   help="print per part: precision, nodes kept in FP32 and why, agreement, max logit "
                        "drift, size and batch-1 latency INT8 vs FP32 on this CPU")
    p.add_argument("--force", action="store_true",
                   help="replace an existing BUNDLE (only after the new one verifies)")


def preflight(args: argparse.Namespace) -> None:
    if args.run_dir is not None:
        if args.run is not None:
            raise OptionError(f"give the run once: --run {args.run} (not also the positional {args.run_dir})")
        _warn_deprecated(f"the positional run folder ({args.run_dir})", f"--run {args.run_dir}")
        args.run = args.run_dir
    if args.run is None:
        raise OptionError("export needs --run DIR, the run folder with a trained bridge (edge-bridge train)")
    if not Path(args.run).exists():
        raise OptionError(f"--run {args.run!r} does not exist; give the run folder (the one holding "
                          "run.json) that `edge-bridge train` trained")
    input_dir(args.run, "--run")
    output_dir(args.out, "-o/--out", must_be_new=True)
    input_path(args.calibration_data, "--calibration-data")
    input_path(args.reference_data, "--reference-data")
    if args.sign is None and (args.bundle_name or args.bundle_version):
        raise OptionError("--bundle-name and --bundle-version name a signed release; give --sign KEY too")
    if args.sign is not None:  # a missing or unreadable key fails now, not after minutes of export
        from edge_bridge.signing import load_private_key

        input_file(args.sign, "--sign")
        args._signing_key = load_private_key(args.sign)


def run(args: argparse.Namespace) -> int:
    from edge_bridge.export import export

    bundle = export(args.run, args.out, calibration=args.calibration_data, precision=args.precision,
                    target=args.device, agreement_threshold=args.agreement_threshold, overwrite=args.force,
                    golden_windows=args.golden_windows, source_weights=args.source_weights,
                    int8_search=args.int8_search, reference_data=args.reference_data)
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
    if args.sign is not None:
        import time

        from edge_bridge.signing import SigningError, sign_bundle

        t0 = time.perf_counter()
        try:
            signed = sign_bundle(bundle.root, args._signing_key, name=args.bundle_name,
                                 version=args.bundle_version)
        except SigningError as exc:
            raise SigningError(f"{exc} (the bundle was exported but is not signed; run `edge-bridge bundle "
                               f"sign {bundle.root} --key {args.sign}`)") from None
        print(f"{signed.line()}; signing took {1e3 * (time.perf_counter() - t0):.0f} ms")
    if args.report:
        from edge_bridge.commands.bundle import quantization_lines

        for line in quantization_lines(m):
            print(line)
    print(f"next: edge-bridge deploy --bundle {bundle.root}")
    return 0
