"""Data-parallel bridge training under torchrun (2 CPU processes, gloo) gives the single-process bridge."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent('''
    import sys
    import torch

    torch.set_num_threads(1)
    from edge_bridge.features import bridge_cache
    from edge_bridge.models import build_backbone
    from edge_bridge.pipeline import BridgeSettings, make_bridge
    from edge_bridge.train import TrainConfig, init_distributed, train_bridge, world_info

    def setup():
        torch.manual_seed(0)
        target = build_backbone("resnet1d", {"input_samples": 300, "patch": 10, "widths": [8, 12],
                                             "strides": [1, 2], "kernel": 3}).eval()
        source = build_backbone("transformer", {"input_samples": 240, "patch": 20, "d_model": 16,
                                                "n_blocks": 2, "n_heads": 2, "n_classes": 3}).eval()
        g = torch.Generator().manual_seed(1)
        z = torch.randn(37, 1, 1, generator=g)
        xt = (torch.randn(37, 1, 300, generator=g) + z).numpy()
        xs = (torch.randn(37, 1, 240, generator=g) + z).numpy()
        return target, source, xt, xs

    def main(out):
        rank, world = init_distributed()
        target, source, xt, xs = setup()
        cache = bridge_cache(target, source, xt, xs, 1, batch_size=8)  # sharded by rank, then gathered
        bridge = make_bridge(target, source, 1, 1, BridgeSettings(rank=4, prototypes=5), xs)
        res = train_bridge(bridge, source, 1, cache.subset(range(33)), cache.subset(range(33, 37)),
                           TrainConfig(epochs=3, batch_size=10, lr=1e-2))
        if rank == 0:
            bridge.save(out)
            cache.save(out + "/cache.safetensors")
            print("WORLD", world_info()[1], res.best_val)
        if world > 1:
            torch.distributed.destroy_process_group()

    if __name__ == "__main__":
        main(sys.argv[1])
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_two_gloo_processes_train_the_same_bridge(tmp_path):
    from edge_bridge.bridge import load_bridge
    from edge_bridge.features import BridgeCache

    script = tmp_path / "ddp_worker.py"
    script.write_text(SCRIPT)
    one = _run([sys.executable, str(script), str(tmp_path / "one")], str(tmp_path))
    two = _run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), str(script),
                str(tmp_path / "two")], str(tmp_path))
    assert "WORLD 1" in one and "WORLD 2" in two
    c1 = BridgeCache.load(tmp_path / "one" / "cache.safetensors")
    c2 = BridgeCache.load(tmp_path / "two" / "cache.safetensors")
    torch.testing.assert_close(c1.h, c2.h)  # sharded extraction gathers in the original order
    torch.testing.assert_close(c1.y, c2.y)
    b1, b2 = load_bridge(tmp_path / "one"), load_bridge(tmp_path / "two")
    for (k, a), b in zip(b1.state_dict().items(), b2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{k} differs between 1 and 2 processes")
    assert torch.count_nonzero(b1.B) > 0  # it trained (B starts at zero)
