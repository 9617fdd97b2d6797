"""One module per CLI verb; see :mod:`edge_bridge.cli` for the contract."""
