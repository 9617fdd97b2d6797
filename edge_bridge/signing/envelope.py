"""Signature files: a DSSE envelope (the format Sigstore and OpenSSF model signing wrap statements in).

::

    {"payloadType": "application/vnd.edge-bridge.statement.v1+json",
     "payload": base64(canonical JSON statement),
     "signatures": [{"keyid": sha256(raw public key), "sig": base64(Ed25519(PAE(type, payload)))}]}

The signature covers DSSE's pre-authentication encoding of the payload type and the exact payload bytes,
so a statement is never re-serialised before it is checked, and nothing in the payload is read before its
signature verifies. A signature file is hostile input: its size is capped, and every malformed shape is a
:class:`SigningError` naming the file, never a traceback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from edge_bridge.signing.errors import SigningError
from edge_bridge.signing.keys import PrivateKey, PublicKey, TrustStore

PAYLOAD_TYPE = "application/vnd.edge-bridge.statement.v1+json"
MAX_ENVELOPE_BYTES = 1 << 20
MAX_SIGNATURES = 4


def canonical(obj: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8, no NaN (what is hashed and signed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def seal(statement: dict[str, Any], key: PrivateKey) -> bytes:
    """The envelope bytes of ``statement`` signed by ``key``."""
    payload = canonical(statement)
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    env = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode("ascii"),
           "signatures": [{"keyid": key.public.keyid, "sig": base64.b64encode(sig).decode("ascii")}]}
    return json.dumps(env, indent=1).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class Opened:
    """A verified envelope: its statement, the key that signed it and the payload's sha256."""

    statement: dict[str, Any]
    key: PublicKey
    digest: str


def _b64(text: Any, where: str, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 2 * MAX_ENVELOPE_BYTES:
        raise SigningError(f"{where}: {what} is not a base64 string; the signature file is damaged, sign the "
                           "bundle again")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SigningError(f"{where}: {what} is not valid base64; the signature file is damaged, sign the "
                           "bundle again") from None


def _parse(data: bytes, where: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    if len(data) > MAX_ENVELOPE_BYTES:
        raise SigningError(f"{where}: {len(data)} bytes is too large for a signature file")
    try:
        env = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SigningError(f"{where}: not a readable signature file (truncated or not JSON); sign the bundle "
                           "again (edge-bridge bundle sign)") from None
    if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
        raise SigningError(f"{where}: not an edge-bridge signature envelope (payloadType must be "
                           f"{PAYLOAD_TYPE}); sign the bundle again")
    payload = _b64(env.get("payload"), where, "the payload")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= MAX_SIGNATURES:
        raise SigningError(f"{where}: needs 1 to {MAX_SIGNATURES} signatures, found "
                           f"{len(sigs) if isinstance(sigs, list) else 'none'}")
    out = []
    for s in sigs:
        if not isinstance(s, dict) or not isinstance(s.get("keyid"), str) or len(s["keyid"]) != 64:
            raise SigningError(f"{where}: a signature entry lacks a keyid (64 hex digits)")
        out.append((s["keyid"], _b64(s.get("sig"), where, "a signature")))
    return payload, out


def payload_digest(data: bytes, where: str) -> tuple[str, dict[str, Any]]:
    """The payload's sha256 and statement *without* checking the signature (to bind a new act to it)."""
    payload, _ = _parse(data, where)
    return hashlib.sha256(payload).hexdigest(), _statement(payload, where)


def _statement(payload: bytes, where: str) -> dict[str, Any]:
    try:
        st = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SigningError(f"{where}: the signed statement is not JSON; sign the bundle again") from None
    if not isinstance(st, dict):
        raise SigningError(f"{where}: the signed statement is not a JSON object; sign the bundle again")
    return st


def open_envelope(data: bytes, where: str, trust: TrustStore) -> Opened:
    """Check a signature file against the trusted keys; return its statement.

    Raises
    ------
    SigningError
        Malformed, signed by no trusted key, or a signature that does not verify (changed after signing).
    """
    payload, sigs = _parse(data, where)
    message = pae(PAYLOAD_TYPE, payload)
    unknown = []
    for keyid, sig in sigs:
        key = trust.keys.get(keyid)
        if key is None:
            unknown.append(keyid)
            continue
        if key.verifies(sig, message):
            return Opened(_statement(payload, where), key, hashlib.sha256(payload).hexdigest())
        raise SigningError(f"{where}: the signature by {key.describe()} does not match the signed content; "
                           "the signature file was changed after signing. Copy the bundle again")
    raise SigningError(f"{where}: signed by the untrusted key ed25519 {unknown[0][:16]}; deploy trusts "
                       f"{trust.names()}. If you trust that signer, add its public key (edge-bridge keys "
                       "trust NAME.pub)")
