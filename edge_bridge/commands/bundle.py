"""Inspect and move bundles: verify, info, pack to a .tar, unpack from one.

  edge-bridge bundle verify BUNDLE           check schema, every sha256 and that the parts fit together
  edge-bridge bundle info BUNDLE             what is in it: modalities, positions, parts, precisions, report
  edge-bridge bundle pack BUNDLE -o X.tar    verify, then write an uncompressed tar (atomically)
  edge-bridge bundle unpack X.tar -o DIR     extract (refusing links, absolute paths and '..'), then verify

This verb needs neither torch nor onnx: it runs on the device.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check schema, hashes and shapes")
    v.add_argument("bundle", metavar="BUNDLE")
    v.add_argument("--all-bridges", action="store_true", help="verify every published bridge version")
    i = sub.add_parser("info", help="print what the bundle holds")
    i.add_argument("bundle", metavar="BUNDLE")
    i.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    k = sub.add_parser("pack", help="verify and write a .tar")
    k.add_argument("bundle", metavar="BUNDLE")
    k.add_argument("-o", "--out", required=True, metavar="TAR")
    u = sub.add_parser("unpack", help="extract a .tar into a new directory and verify it")
    u.add_argument("tar", metavar="TAR")
    u.add_argument("-o", "--out", required=True, metavar="DIR")


def run(args: argparse.Namespace) -> int:
    from edge_bridge import bundle as bnd

    if args.action == "verify":
        b = bnd.Bundle.load(args.bundle, verify=False)
        b.verify(all_bridges=args.all_bridges)
        print(f"{b.root}: OK ({len(b.manifest.parts)} parts, bridge v{b.manifest.current_bridge:04d}, "
              "every sha256 matches, parts fit together)")
    elif args.action == "info":
        b = bnd.Bundle.load(args.bundle)
        if args.json:
            print(json.dumps(b.manifest.to_dict(), indent=2))
        else:
            print(_info(b))
    elif args.action == "pack":
        out = bnd.pack(args.bundle, args.out)
        print(f"packed {args.bundle} -> {out}")
    else:
        b = bnd.unpack(args.tar, args.out)
        print(f"unpacked {args.tar} -> {b.root} (verified)")
    return 0


def _info(b: object) -> str:
    m = b.manifest  # type: ignore[attr-defined]
    lines = [repr(b),
             f"  made by edge-bridge {m.tool_version} on {m.created}; schema {m.schema_version}",
             f"  classes: {', '.join(m.classes)}",
             f"  target {m.target.modality} {list(m.target.channels)} {m.target.output_rate:g} Hz, "
             f"source {m.source.modality} {list(m.source.channels)} {m.source.output_rate:g} Hz, "
             f"window {m.target.window_s:g} s / hop {m.target.hop_s:g} s"]
    cur = m.bridges[m.current_bridge].onnx
    for name, spec in [*sorted(m.parts.items()), (f"bridge v{m.current_bridge:04d}", cur)]:
        ins = ", ".join(f"{t.name}{t.shape}" for t in spec.inputs)
        outs = ", ".join(f"{t.name}{t.shape}" for t in spec.outputs)
        lines.append(f"  {name:<14} {spec.precision:<5} {spec.file:<22} {ins} -> {outs}")
    acc = (m.quantization.get("accuracy") or {}).get("shipped")
    if acc:
        fb = ", ".join(f"{e['part']} {e['from']}->{e['to']}" for e in m.quantization.get("fallback", []))
        lines.append(f"  agreement with FP32: {acc['agreement']:.4f} (max logit drift "
                     f"{acc['max_logit_drift']:.3g}); fallback: {fb or 'none'}")
    if m.report.get("bundle_bytes"):
        lines.append(f"  size: {m.report['bundle_bytes'] / 1e3:.1f} kB")
    lines.extend(quantization_lines(m))
    return "\n".join(lines)


def quantization_lines(m: object) -> list[str]:
    """Per quantized part: precision, calibration, nodes kept in FP32, held-out agreement, max logit drift,
    file size and batch-1 latency shipped vs FP32 (measured on the exporting CPU, one thread).

    Read from the manifest only (no onnx, no torch), so ``bundle info`` runs on the device too.
    """
    q = getattr(m, "quantization", None) or {}
    parts = q.get("parts") or {}
    sizes = (getattr(m, "report", None) or {}).get("file_bytes") or {}
    if not parts:
        return []
    lines = ["  per part (held-out agreement with FP32 with only that part quantized; latency batch 1, "
             "1 thread, on the exporting CPU):"]
    for name in ("target_front", "source_back", "source_front"):
        r = parts.get(name)
        if not r:
            continue
        kept = r.get("fp32_nodes") or []
        total = r.get("quantized_nodes")
        nodes = f"{len(kept)} of {total} nodes FP32" if total is not None else "-"
        if r.get("precision") != "int8" and total is not None:  # fell back whole: the search did not ship
            nodes = f"(mixed INT8 not shipped: {nodes})"
        lat = r.get("latency_ms_batch1") or {}
        fast = " vs ".join(f"{k} {v:.3f} ms" for k, v in sorted(lat.items(), key=lambda kv: kv[0] != r.get(
            "precision")))
        agree = r.get("held_out_agreement")
        drift = r.get("held_out_max_logit_drift")
        size = sizes.get(f"{name}.onnx")
        calib = r.get("calibration_method", "-")
        head = f"    {name:<13} {r.get('precision', '?'):<5} calib {calib:<10} {nodes}"
        if agree is None:
            lines.append(head)
        else:
            lines.append(f"{head}; agreement {agree:.4f}, max logit drift {drift:.3g}; "
                         f"{(size or 0) / 1e3:.1f} kB; {fast}")
        for k in kept:
            why = (f"agreement would be {k['agreement_if_int8']:.4f} with it INT8"
                   if k.get("agreement_if_int8") is not None else "")
            lines.append(f"      FP32: {k['node']} ({k['op_type']}), input SQNR {k['sqnr_db']:.1f} dB; {why}")
    return lines
