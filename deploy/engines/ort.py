"""ONNX Runtime engines: CPU (the default everywhere) and CUDA.

One intra-op thread by default: for batch-1 windows on a small CPU it gives the flattest latency (thread
hand-off costs more than the parallel work saves), and it leaves the other cores to the signal loop.
"""

from __future__ import annotations

import os

import numpy as np

from deploy.engines.base import Engine, EngineError, TensorInfo


class OrtEngine(Engine):
    """An ONNX Runtime session for one part.

    Parameters
    ----------
    path : path-like
        The part's ``.onnx`` file.
    device : {"cpu", "cuda"}
    threads : int
        Intra-op threads (default 1).
    """

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", threads: int = 1) -> None:
        super().__init__(path)
        import onnxruntime as ort

        self.backend = f"onnxruntime-{device}"
        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise EngineError(
                    "--device cuda needs onnxruntime-gpu with CUDA (this onnxruntime offers "
                    f"{available}); install onnxruntime-gpu or use --device cpu"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise EngineError(f"{self.path}: ONNX Runtime cannot load this graph: {exc}") from None
        self._inputs = [_info(t) for t in self.session.get_inputs()]
        self._outputs = [_info(t) for t in self.session.get_outputs()]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self.check_feeds(feeds)
        values = self.session.run(None, feeds)
        return {t.name: v for t, v in zip(self._outputs, values, strict=True)}

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


def _info(node: object) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in node.shape)  # type: ignore[attr-defined]
    return TensorInfo(node.name, shape, str(node.type))  # type: ignore[attr-defined]
