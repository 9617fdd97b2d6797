"""Make signing keys and say which keys a device trusts (Ed25519; publisher and device roles).

  edge-bridge keys new NAME [--dir DIR]                 NAME.key (mode 0600) and NAME.pub beside it
  edge-bridge keys trust NAME.pub --role device         trust a public key (default trust directory)
  edge-bridge keys list                                 the trusted keys and their roles

The publisher key signs bundles (export --sign, bundle sign); a device key signs only the bridges calibrate
publishes on site and its rollbacks (calibrate finds it as device.key in the keys folder, or
$EDGE_BRIDGE_DEVICE_KEY). deploy trusts the keys of $XDG_CONFIG_HOME/edge-bridge/trust once it exists, or
those given with --trust. A private key never leaves the machine that made it: copy only the .pub.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_bridge.commands._options import add_actions, input_file

ACTIONS = {
    "new": ("make a key pair: NAME.key (0600) and NAME.pub",
            "Make an Ed25519 key pair. The private key is written with mode 0600; never copy it.\n\n"
            "Examples:\n  edge-bridge keys new acme --dir keys/\n"
            "  edge-bridge keys new device              # on the device: calibrate's key"),
    "trust": ("trust a public key with a role",
              "Copy a public key into a trust directory and give it a role in its policy.json.\n\n"
              "Examples:\n  edge-bridge keys trust keys/acme.pub --role publisher\n"
              "  edge-bridge keys trust device.pub --role device --trust-dir /etc/edge-bridge/trust"),
    "list": ("list the trusted keys",
             "Print each trusted key, its keyid and its role.\n\nExample:\n  edge-bridge keys list"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge_bridge.signing import ROLES, paths

    made = add_actions(p, ACTIONS)
    n, t, ls = made["new"], made["trust"], made["list"]
    n.add_argument("name", metavar="NAME", help="key name (letters, digits, '_', '.', '-')")
    n.add_argument("--dir", type=Path, default=None, metavar="DIR",
                   help=f"where to write the pair (default {paths.keys_dir()})")
    t.add_argument("pub", metavar="PUB", help="a public key file (NAME.pub)")
    t.add_argument("--role", choices=ROLES, default="publisher",
                   help="publisher: signs bundles; device: signs only on-site bridges (default publisher)")
    t.add_argument("--name", default=None, help="name it by this in the trust directory (default: file name)")
    for q in (t, ls):
        q.add_argument("--trust-dir", type=Path, default=None, metavar="DIR",
                       help=f"trust directory (default {paths.trust_dir()})")


def preflight(args: argparse.Namespace) -> None:
    if args.action == "trust":
        input_file(args.pub, "PUB")


def run(args: argparse.Namespace) -> int:
    from edge_bridge.signing import TrustStore, load_public_key, new_key, paths, trust_key

    if args.action == "new":
        key, pub = new_key(args.name, args.dir or paths.keys_dir())
        print(f"made {key} (private, mode 0600: keep it here) and {pub}; "
              f"keyid {load_public_key(pub).keyid[:16]}")
        print(f"next: copy {pub.name} to the device and run `edge-bridge keys trust {pub.name} --role ...` "
              "there")
    elif args.action == "trust":
        d = args.trust_dir or paths.trust_dir()
        dest = trust_key(args.pub, d, args.role, args.name)
        print(f"trusted {load_public_key(dest).describe()} as {args.role} in {d}")
    else:
        d = args.trust_dir or paths.trust_dir()
        store = TrustStore.load([d])
        for keyid, key in store.keys.items():
            print(f"{key.name:<20} {store.roles[keyid]:<10} ed25519 {keyid}")
    return 0
