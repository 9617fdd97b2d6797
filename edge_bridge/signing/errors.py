"""The errors of bundle signing; both are :class:`~edge_bridge.bundle.BundleError`, so a caller that refuses
a bad bundle refuses a badly signed one the same way."""

from __future__ import annotations

from edge_bridge.bundle import BundleError


class SigningError(BundleError):
    """A key, a trust store, a signature file or a freshness record is missing, unreadable or refused."""


class UnsignedBundleError(SigningError):
    """The bundle carries no publisher signature (``deploy --allow-unsigned`` runs it anyway)."""
