#!/usr/bin/env python3
"""One eager backward per case, for Nsight Compute: every kernel of tpembed.embedding_backward
(classify, zero rows, CUB's sort, tiles, fix-up) and PyTorch's deterministic embedding backward on
the same ids and grad_out. Warm-up runs first; the launches to profile run inside the NVTX range
"profile":

  ncu --clock-control none --nvtx --nvtx-include "profile/" --metrics <list> --csv \\
      python3 bench/profile_backward.py --cases uniform:32768:f32:accumulate,zipf:32768:f32:overwrite
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tpembed  # noqa: E402
from bench_backward import IDS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--cases", default="uniform:32768:bf16:accumulate,uniform:32768:f32:overwrite,"
                                           "zipf:32768:f32:overwrite")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    for spec in args.cases.split(","):
        dist, tokens, grad, mode = spec.split(":")
        ids = torch.from_numpy(IDS[dist](args.vocab, int(tokens))).cuda()
        grad_out = torch.randn(int(tokens), args.hidden, device="cuda", dtype=torch.bfloat16)
        dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[grad]
        weight_grad = torch.zeros(args.vocab, args.hidden, device="cuda", dtype=dtype)
        accumulate = mode == "accumulate"

        def ours():
            tpembed.embedding_backward(ids, grad_out, args.vocab, grad_weight=weight_grad, accumulate=accumulate)

        def theirs():
            torch.use_deterministic_algorithms(True)
            torch.ops.aten.embedding_dense_backward(grad_out, ids, args.vocab, -1, False)
            torch.use_deterministic_algorithms(False)

        peers = [ours] + ([] if args.no_torch else [theirs])
        for peer in peers:
            peer()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push("profile")
        for peer in peers:
            peer()
        torch.cuda.nvtx.range_pop()
        torch.cuda.synchronize()
        print(f"profiled {spec}", flush=True)


if __name__ == "__main__":
    main()
