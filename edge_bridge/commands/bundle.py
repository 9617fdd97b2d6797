"""Inspect, sign and move bundles: verify, sign, info, pack to a .tar, unpack from one.

  edge-bridge bundle verify BUNDLE           check schema, every sha256 and that the parts fit together
  edge-bridge bundle verify BUNDLE --trust K also check the signatures against trusted keys (file or dir)
  edge-bridge bundle sign BUNDLE --key KEY   sign every file, the manifest, a bundle name and version
  edge-bridge bundle info BUNDLE             what is in it: modalities, positions, parts, precisions, report
  edge-bridge bundle pack BUNDLE -o X.tar    verify, then write an uncompressed tar (atomically)
  edge-bridge bundle unpack X.tar -o DIR     extract (refusing links, absolute paths and '..'), then verify

This verb needs neither torch nor onnx: it runs on the device.
"""

from __future__ import annotations

import argparse
import json

from edge_bridge.commands._options import (
    add_actions,
    input_dir,
    input_file,
    output_dir,
    output_file,
    positive_int,
)

ACTIONS = {  # action -> (summary, description with an example)
    "verify": ("check schema, hashes and shapes",
               "Check the manifest's schema, every part's sha256 and that the parts' shapes fit together.\n\n"
               "With --trust, also check that trusted keys signed every file, the manifest and the current "
               "bridge (a publisher key the base parts, a device key only on-site bridges).\n\n"
               "Examples:\n  edge-bridge bundle verify stress.bundle --all-bridges\n"
               "  edge-bridge bundle verify stress.bundle --trust keys/acme.pub"),
    "sign": ("sign the bundle with a publisher key",
             "Sign every file of the bundle, its manifest and a bundle name and version (which must grow "
             "with each release: deploy refuses an older one than it ran).\n\n"
             "Example:\n  edge-bridge bundle sign stress.bundle --key keys/acme.key --version 3"),
    "info": ("print what the bundle holds",
             "Print modalities, classes, positions, parts, precisions and the export's accuracy report.\n\n"
             "Examples:\n  edge-bridge bundle info stress.bundle\n"
             "  edge-bridge bundle info stress.bundle --json"),
    "pack": ("verify and write a .tar",
             "Verify the bundle, then write it as an uncompressed tar, atomically (for transport).\n\n"
             "Example:\n  edge-bridge bundle pack stress.bundle -o stress.tar"),
    "unpack": ("extract a .tar into a new directory and verify it",
               "Extract a packed bundle into a new directory (refusing links, absolute paths and '..'), "
               "then verify it.\n\nExample:\n  edge-bridge bundle unpack stress.tar -o stress.bundle"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    made = add_actions(p, ACTIONS)
    v, i, k, u, s = made["verify"], made["info"], made["pack"], made["unpack"], made["sign"]
    v.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    v.add_argument("--all-bridges", action="store_true", help="verify every published bridge version")
    v.add_argument("--trust", action="append", metavar="PUBKEY_OR_DIR", default=None,
                   help="also check the signatures: a trusted NAME.pub (publisher) or a trust directory "
                        "(keys + policy.json); repeatable")
    s.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    s.add_argument("--key", required=True, metavar="KEY", help="the publisher's private key (NAME.key)")
    s.add_argument("--name", default=None, help="bundle name, the key of deploy's version record "
                   "(default: the previous signature's, else the manifest's task)")
    s.add_argument("--version", type=positive_int, default=None, metavar="N",
                   help="bundle version, higher than any earlier release (default: UTC time YYYYMMDDHHMMSS)")
    i.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    i.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    k.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    k.add_argument("-o", "--out", required=True, metavar="TAR", help="the .tar to write")
    u.add_argument("tar", metavar="TAR", help="a .tar made by `edge-bridge bundle pack`")
    u.add_argument("-o", "--out", required=True, metavar="DIR", help="new directory to extract into")


def preflight(args: argparse.Namespace) -> None:
    if args.action == "unpack":
        input_file(args.tar, "TAR")
        output_dir(args.out, "-o/--out", must_be_new=True)
    else:
        input_dir(args.bundle, "BUNDLE")
    if args.action == "pack":
        output_file(args.out, "-o/--out")
    if args.action == "sign":
        input_file(args.key, "--key")


def run(args: argparse.Namespace) -> int:
    from edge_bridge import bundle as bnd

    if args.action == "verify":
        b = bnd.Bundle.load(args.bundle, verify=False)
        b.verify(all_bridges=args.all_bridges)
        print(f"{b.root}: OK ({len(b.manifest.parts)} parts, bridge v{b.manifest.current_bridge:04d}, "
              "every sha256 matches, parts fit together)")
        if args.trust:
            from edge_bridge.signing import TrustStore, verify_signatures

            print(f"{b.root}: {verify_signatures(b.root, TrustStore.load(args.trust), bundle=b).line()}")
    elif args.action == "sign":
        from edge_bridge.signing import sign_bundle

        v = sign_bundle(args.bundle, args.key, name=args.name, version=args.version)
        print(f"{v.root}: {v.line()}")
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
    from edge_bridge.signing import is_signed

    signed = is_signed(b.root)  # type: ignore[attr-defined]
    lines.append("  signatures: " + ("present; check them with `edge-bridge bundle verify --trust KEYS`"
                                     if signed else "none (sign with `edge-bridge bundle sign`)"))
    return "\n".join(lines)


def quantization_lines(m: object) -> list[str]:
    """Per quantized part: precision, calibration, op set, nodes kept in FP32 (by the guard; attention's
    activation MatMuls by rule), held-out agreement, max logit drift,
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
    fronts = sorted(p for p in parts if p.startswith("target_front_"))  # a fused bundle's extra fronts
    for name in ("target_front", *fronts, "source_back", "source_front"):
        r = parts.get(name)
        if not r:
            continue
        kept = r.get("fp32_nodes") or []
        total = r.get("quantized_nodes")
        nodes = f"{len(kept)} of {total} nodes FP32" if total is not None else "-"
        rule = r.get("fp32_by_rule") or []
        if rule and total is not None:
            nodes += f" (+{len(rule)} attention MatMuls FP32 by rule)"
        if r.get("op_set") and r["op_set"] != "configured":
            nodes += f", ops {r['op_set']}"
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
