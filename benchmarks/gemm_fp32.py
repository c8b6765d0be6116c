"""fp32 matrix-product speed of this CPU on the encoders' largest shape (MPNet's FFN: 2048 tokens
x 768 -> 3072), through torch's BLAS (MKL), oneDNN and numpy's BLAS: is there a faster fp32 path
for the main job's encoders?

    python benchmarks/gemm_fp32.py --json benchmarks/gemm_fp32.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def gflops(fn, flop: float, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return flop / best / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--d-out", type=int, default=3072)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (numpy's BLAS: OPENBLAS_NUM_THREADS)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))  # before numpy loads its BLAS
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    m, k, n = args.tokens, args.d_in, args.d_out
    flop = 2.0 * m * k * n
    x, w, b = torch.randn(m, k), torch.randn(n, k), torch.randn(n)
    rows = {"torch.nn.functional.linear (MKL)": gflops(lambda: torch.nn.functional.linear(x, w, b), flop, args.repeats)}
    try:
        from torch.utils import mkldnn

        layer = torch.nn.Linear(k, n)
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        onednn, x_onednn = mkldnn.to_mkldnn(layer), x.to_mkldnn()
        rows["oneDNN linear"] = gflops(lambda: onednn(x_onednn), flop, args.repeats)
    except (RuntimeError, AttributeError) as err:  # a torch build without oneDNN
        print(f"oneDNN: {err}", file=sys.stderr)
    x_np, w_np = x.numpy(), np.ascontiguousarray(w.numpy().T)
    rows["numpy matmul"] = gflops(lambda: x_np @ w_np, flop, args.repeats)
    for name, value in rows.items():
        print(f"{name:36s} {value:7.1f} GFLOP/s")
    if args.json:
        from rlhf_gym.evaluation import write_json_atomic

        write_json_atomic(args.json, {"command": "python benchmarks/gemm_fp32.py " + " ".join(argv or sys.argv[1:]),
                                      "shape": [m, k, n], "threads": args.threads, "gflop_per_s": rows,
                                      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                  "torch": torch.__version__, "load_average": os.getloadavg()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
