"""On-site refit of the bridge from locally collected paired data, validated and swapped in atomically.

Imports ``deploy`` (to run the fronts) and ``edge_bridge.bundle``; torch is optional. Arrives with the
calibrate issue.
"""
