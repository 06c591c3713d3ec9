#!/usr/bin/env python3
"""One eager lookup per case, for Nsight Compute: tpembed's kernel and the Triton peer of
bench_cuda_lookup.py on the same ids (random over the vocab). Warm-up (and the Triton peer's
autotuning) runs first; the launches to profile run inside the NVTX range "profile":

  ncu --clock-control none --nvtx --nvtx-include "profile/" --metrics <list> \\
      python3 bench/profile_lookup.py --lib build/bench/libtpembed_bench_capi.so
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cuda_lookup as bench  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", required=True)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--cases", default="bf16,f16,f32,i8,fp8_e4m3,i4")
    parser.add_argument("--no-triton", action="store_true")
    args = parser.parse_args()
    lib = bench.load_lib(args.lib)
    triton_peer = None if args.no_triton else bench.make_triton_peer()
    for spec in args.cases.split(","):
        case = bench.Case(lib, triton_peer, spec, args.vocab, args.hidden)
        ids = torch.randint(0, args.vocab, (args.tokens,), device="cuda", dtype=torch.int64)
        out = torch.empty(args.tokens, args.hidden, device="cuda", dtype=case.out_dtype)
        peers = [case.ours] + ([case.triton_peer] if triton_peer is not None else [])
        for peer in peers:
            peer(ids, out)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push("profile")
        for peer in peers:
            peer(ids, out)
        torch.cuda.nvtx.range_pop()
        torch.cuda.synchronize()
        print(f"profiled {case.name}, H {args.hidden}, {args.tokens} tokens", flush=True)
        del case


if __name__ == "__main__":
    main()
