"""Device side: engines per bundle part, the live loop and latency statistics.

Imports only numpy, onnxruntime, brainflow, ``edge_bridge.signals``, ``edge_bridge.bundle`` and
``firmware_interface`` -- never torch (see DESIGN.md). The engines and the loop arrive with the deploy issue.
"""
