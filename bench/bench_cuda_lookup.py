#!/usr/bin/env python3
"""CUDA lookup benchmark: tpembed's kernel against PyTorch on the same GPU, in the same run.

Every row gives the bytes the lookup must move (ids read + table rows read + row scales read +
output written), the achieved GB/s, the % of the device-to-device copy ceiling measured at the
start of this run, and the same case through two peers with their speed ratios: PyTorch
(index_select for float tables; gather, then multiply by the scale, for quantised ones) and a fused
Triton gather-and-dequantise kernel (one program per token and column block, the row's scale loaded
once, autotuned over block size and warps per case: what an inference engineer writes in an
afternoon). Outputs of all three are compared bit for bit once per case before timing.

Timing: CUDA events after warm-up, the median of many repeats. Each case rotates through K id sets
and output buffers (K grows as the case shrinks, so that one pass touches >= 200 MB, four L2s) so
the cache does not flatter small cases; ids are random over the whole vocab. Every case, for both
libraries, is captured once as a CUDA graph of its K lookups and replayed: time per lookup = replay
time / K. (Timing eager launches from Python measured the host's launch cost, not the GPU's work,
below ~8192 tokens.) Before each start event a 256 MB read leaves the L2 holding clean lines of an
unrelated buffer, so that no peer pays for the dirty lines of the one timed before it. Then the GPU
is kept busy for ~100 us (torch.cuda._sleep), so the host has queued the replay before the clock
starts. All peers write the same output buffers and take turns, one replay each per round. The
floor of one graph node is measured the same way with a graph of 64 KB device-to-device copies.
--variants adds other builds of the C entry point (bench/build_capi_variant.sh) as further peers:
an A/B run of the kernel's tuning macros in one process.

Usage (on the GPU machine, after building with CUDA):
  python3 bench/bench_cuda_lookup.py --lib build/bench/libtpembed_bench_capi.so [--json out.json]
  --cases takes TABLE or TABLE:OUT (default output bf16), e.g. --cases i8:f16,f32:f32
"""
import argparse
import ctypes
import json
import math
import statistics
import sys
import time

import torch

DTYPE_CODE = {"f32": 0, "f16": 1, "bf16": 2, "i8": 3, "fp8_e4m3": 4, "i4": 5, "i32": 6, "i64": 7}
L2_FLUSH_BYTES = 200e6  # about 4x the H100's 50 MB L2


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lib", required=True, help="path to libtpembed_bench_capi.so")
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", default="4096,8192")
    parser.add_argument("--tokens", default="1,16,128,1024,8192,32768")
    parser.add_argument("--cases", default="bf16,f16,f32,i8,fp8_e4m3,i4",
                        help="TABLE[:OUT] list (OUT default bf16); quantised tables get f32 row scales")
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton peer")
    parser.add_argument("--variants", default="",
                        help="NAME=PATH,...: other builds of the C entry point (bench/build_capi_variant.sh), "
                             "timed in the same run as extra columns (time, and speed-up of --lib over it)")
    parser.add_argument("--count", choices=("counter", "slots"), default="counter",
                        help="how our lookups count bad ids: a plain counter (LookupParams::bad_id_count), or "
                             "the slots ParallelEmbedding uses (bad_id_slots: a reduction and an atomic per block)")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", help="write all rows here")
    return parser.parse_args()


_CLEAN_L2 = None


def clean_l2():
    """Reads 256 MB (5x the L2), so that the cache holds clean lines of an unrelated buffer: a timing
    that starts after a kernel which left its output dirty in L2 pays for writing it back (measured on
    an H200: up to 5-10% of a large lookup, depending on which kernel ran before)."""
    global _CLEAN_L2
    if _CLEAN_L2 is None:
        _CLEAN_L2 = torch.ones(256 << 20, dtype=torch.uint8, device="cuda")
    _CLEAN_L2.max()


def median_event_time_ms(fn, repeats, per_call):
    """Median of `repeats` timings of fn() with CUDA events, divided by per_call."""
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeats):
        clean_l2()
        torch.cuda._sleep(200_000)  # ~100 us of GPU work: the host queues fn() before the clock starts
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / per_call)
    return statistics.median(times), min(times), max(times)


def copy_ceiling_gbs(nbytes=1 << 31):
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms, _, _ = median_event_time_ms(lambda: dst.copy_(src), 20, 1)
    del src, dst
    return 2 * nbytes / (ms * 1e-3) / 1e9


def graph_node_floor_us(copies=64, nbytes=64 << 10):
    srcs = [torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_() for _ in range(copies)]
    dsts = [torch.empty_like(s) for s in srcs]
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for s, d in zip(srcs, dsts):
            d.copy_(s)
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            for s, d in zip(srcs, dsts):
                d.copy_(s)
    for _ in range(5):
        graph.replay()
    ms, _, _ = median_event_time_ms(graph.replay, 50, copies)
    return ms * 1e3


TORCH_DTYPE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


class Case:
    """One table on the GPU, its row scales, and the three lookups."""

    def __init__(self, lib, triton_peer, spec, vocab, hidden, count_with_slots=False):
        dtype, _, out = spec.partition(":")
        out = out or "bf16"
        self.lib, self.triton, self.dtype, self.out, self.vocab, self.hidden = lib, triton_peer, dtype, out, vocab, hidden
        gen = torch.Generator(device="cuda").manual_seed(hidden)
        self.scale = None
        self.out_dtype = TORCH_DTYPE[out]
        if dtype in TORCH_DTYPE:
            self.table = torch.randn(vocab, hidden, device="cuda", dtype=TORCH_DTYPE[dtype], generator=gen)
            self.row_bytes = hidden * self.table.element_size()
        else:
            self.scale = torch.rand(vocab, device="cuda", generator=gen) * 0.02 + 1e-3
            if dtype == "i8":
                self.table = torch.randint(-128, 128, (vocab, hidden), device="cuda", dtype=torch.int8, generator=gen)
                self.row_bytes = hidden
            elif dtype == "fp8_e4m3":
                values = (torch.randn(vocab, hidden, device="cuda", generator=gen) * 64).clamp(-448, 448)
                self.table = values.to(torch.float8_e4m3fn)
                self.row_bytes = hidden
            else:
                self.table = torch.randint(0, 256, (vocab, hidden // 2), device="cuda", dtype=torch.uint8, generator=gen)
                self.row_bytes = hidden // 2
        self.out_code = DTYPE_CODE[out]
        self.bad = torch.zeros(3, dtype=torch.int64, device="cuda")  # a counter, or the three slots
        self.count_with_slots = count_with_slots

    @property
    def name(self):
        return f"{self.dtype} -> {self.out}"

    def bytes_moved(self, tokens):
        out_size = torch.tensor([], dtype=self.out_dtype).element_size()
        scales = 4 * tokens if self.scale is not None else 0
        return tokens * 8 + tokens * self.row_bytes + scales + tokens * self.hidden * out_size

    def ours(self, ids, out, lib=None):
        status = (lib or self.lib).tpembed_bench_lookup(
            ctypes.c_void_p(self.table.data_ptr()), DTYPE_CODE[self.dtype], self.vocab, self.hidden,
            ctypes.c_void_p(self.scale.data_ptr() if self.scale is not None else None), DTYPE_CODE["f32"],
            ctypes.c_void_p(ids.data_ptr()), DTYPE_CODE["i64"], ids.numel(), ctypes.c_void_p(out.data_ptr()),
            self.out_code, ctypes.c_void_p(self.bad.data_ptr()), int(self.count_with_slots),
            ctypes.c_void_p(torch.cuda.current_stream().cuda_stream))
        if status != 0:
            raise RuntimeError(f"tpembed_bench_lookup failed with cudaError {status}")

    def torch_peer(self, ids, out):
        if self.scale is None:
            if self.table.dtype == self.out_dtype:
                torch.index_select(self.table, 0, ids, out=out)
            else:
                out.copy_(self.table.index_select(0, ids))
            return
        scale = self.scale.index_select(0, ids).unsqueeze(1)
        rows = self.table.index_select(0, ids)
        if self.dtype == "i8":
            values = rows.to(torch.float32) * scale
        elif self.dtype == "fp8_e4m3":
            values = rows.to(torch.float32) * scale
        else:  # int4: two per byte, low nibble first, signed
            low = (rows << 4).view(torch.int8) >> 4
            high = rows.view(torch.int8) >> 4
            values = torch.stack((low, high), dim=-1).view(rows.shape[0], self.hidden).to(torch.float32) * scale
        out.copy_(values)

    def triton_peer(self, ids, out):
        self.triton(self, ids, out)


def make_triton_peer():
    """The fused Triton kernel a user would write instead of calling tpembed, or None."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    configs = [triton.Config({"BLOCK": block}, num_warps=warps)
               for block in (256, 512, 1024, 2048, 4096) for warps in (1, 2, 4, 8)
               if block // (32 * warps) >= 4]

    def quick_bench(fn, quantiles=None):  # autotuning: short runs per config (the timing is time_case's)
        return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)

    @triton.autotune(configs=configs, key=["tokens", "hidden", "IS_INT4", "HAS_SCALE"], do_bench=quick_bench)
    @triton.jit
    def gather_dequantise(ids, table, scale, out, tokens, hidden,
                          IS_INT4: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
        token = tl.program_id(0)
        row = tl.load(ids + token).to(tl.int64)
        if IS_INT4:  # two codes a byte, low nibble first: BLOCK // 2 bytes give BLOCK values
            byte = tl.program_id(1) * (BLOCK // 2) + tl.arange(0, BLOCK // 2)
            packed = tl.load(table + row * (hidden // 2) + byte, mask=byte < hidden // 2).to(tl.int8, bitcast=True)
            values = tl.interleave((packed << 4) >> 4, packed >> 4).to(tl.float32)
            cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        else:
            cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
            values = tl.load(table + row * hidden + cols, mask=cols < hidden).to(tl.float32)
        if HAS_SCALE:
            values = values * tl.load(scale + row)
        tl.store(out + token * hidden + cols, values.to(out.dtype.element_ty), mask=cols < hidden)

    def best_config():
        config = gather_dequantise.best_config
        return f"BLOCK={config.kwargs['BLOCK']} warps={config.num_warps}" if config is not None else None

    def run(case, ids, out):
        tokens = ids.numel()
        grid = lambda meta: (tokens, triton.cdiv(case.hidden, meta["BLOCK"]))  # noqa: E731
        scale = case.scale if case.scale is not None else case.table
        gather_dequantise[grid](ids, case.table, scale, out, tokens, case.hidden,
                                IS_INT4=case.dtype == "i4", HAS_SCALE=case.scale is not None)

    run.best_config = best_config
    return run


def time_case(case, tokens, repeats, variants=()):
    out_bytes = case.bytes_moved(tokens)
    sets = max(2, min(64, math.ceil(L2_FLUSH_BYTES / out_bytes)))
    ids = [torch.randint(0, case.vocab, (tokens,), device="cuda", dtype=torch.int64) for _ in range(sets)]
    outs_ours = [torch.empty(tokens, case.hidden, device="cuda", dtype=case.out_dtype) for _ in range(sets)]
    peers = [("ours", case.ours), ("torch", case.torch_peer)]
    if case.triton is not None:
        peers.append(("triton", case.triton_peer))
    for name, lib in variants:
        peers.append((f"variant:{name}", lambda ids, out, lib=lib: case.ours(ids, out, lib)))
    checked = {name: torch.empty_like(outs_ours[0]) if name != "ours" else outs_ours[0] for name, _ in peers}

    # Same function: bit for bit (the Triton peer's autotuning runs here, outside the timing).
    bits = torch.int32 if case.out_dtype == torch.float32 else torch.int16
    for name, fn in peers:
        fn(ids[0], checked[name])
    torch.cuda.synchronize()
    for name, _ in peers[1:]:
        if not torch.equal(outs_ours[0].view(bits), checked[name].view(bits)):
            raise RuntimeError(f"{case.name} H={case.hidden} tokens={tokens}: tpembed and {name} outputs differ")

    # Timing: every peer writes the same output buffers, the peers take turns (one replay each per
    # round, so that a drift of the card's clocks is shared), and each replay starts from an L2 of
    # clean lines (clean_l2), so that no peer pays for the one before it.
    graphs = {}
    for name, fn in peers:
        def run_all(fn=fn):
            for k in range(sets):
                fn(ids[k], outs_ours[k])
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            run_all()
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, stream=stream):
                run_all()
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        graphs[name] = graph
    times = {name: [] for name in graphs}
    for _ in range(repeats):
        for name, graph in graphs.items():
            times[name].append(median_event_time_ms(graph.replay, 1, sets)[0])
    results = {name: (statistics.median(t), min(t), max(t)) for name, t in times.items()}
    return out_bytes, sets, results


def load_lib(path):
    """The C entry point of bench/lookup_capi.cpp."""
    lib = ctypes.CDLL(path)
    lib.tpembed_bench_lookup.restype = ctypes.c_int
    lib.tpembed_bench_lookup.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
        ctypes.c_int, ctypes.c_void_p]
    return lib


def main():
    args = parse_args()
    lib = load_lib(args.lib)
    variants = [(name, load_lib(path)) for name, _, path in
                (item.partition("=") for item in args.variants.split(",") if item)]
    props = torch.cuda.get_device_properties(0)
    ceiling = copy_ceiling_gbs()
    floor_us = graph_node_floor_us()
    header = {
        "device": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "copy_ceiling_gbs": ceiling,
        "graph_node_floor_us": floor_us, "vocab": args.vocab, "count": args.count, "command": " ".join(sys.argv),
    }
    print(f"# {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, {header['date']}")
    print(f"# device-to-device copy ceiling (2 GiB, read+write): {ceiling:.0f} GB/s; "
          f"graph-node floor (64 KB copy, replayed): {floor_us:.2f} us")
    triton_peer = None if args.no_triton else make_triton_peer()
    header["triton"] = None
    if triton_peer is not None:
        import triton
        header["triton"] = triton.__version__
    print(f"# bad ids counted with {'the slots ParallelEmbedding uses' if args.count == 'slots' else 'a plain counter'} (--count)")
    print(f"# peers: PyTorch {torch.__version__}; "
          f"{'Triton ' + header['triton'] + ' (autotuned per row)' if triton_peer else 'no Triton'}")
    print("| table -> out | H | tokens | K | bytes moved | tpembed us | x graph floor | GB/s | % ceiling | "
          "PyTorch us | vs PyTorch | Triton us | Triton % ceiling | vs Triton |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    if variants or triton_peer:
        print(f"# after the table's columns: {', '.join(name + ' us (% ceiling)' for name, _ in variants)}"
              f"{'; the Triton config autotuning chose' if triton_peer else ''}")
    rows = []
    for spec in args.cases.split(","):
        for hidden in (int(h) for h in args.hidden.split(",")):
            case = Case(lib, triton_peer, spec, args.vocab, hidden, count_with_slots=args.count == "slots")
            for tokens in (int(t) for t in args.tokens.split(",")):
                moved, sets, results = time_case(case, tokens, args.repeats, variants)
                ours_ms, torch_ms = results["ours"][0], results["torch"][0]
                ours_gbs, torch_gbs = moved / (ours_ms * 1e-3) / 1e9, moved / (torch_ms * 1e-3) / 1e9
                row = {
                    "table": case.dtype, "out": case.out, "hidden": hidden,
                    "tokens": tokens, "rotating_sets": sets, "ours_per_graph_floor": ours_ms * 1e3 / floor_us,
                    "bytes": moved, "ours_us": ours_ms * 1e3, "ours_gbs": ours_gbs,
                    "ours_pct_ceiling": 100 * ours_gbs / ceiling, "torch_us": torch_ms * 1e3,
                    "torch_gbs": torch_gbs, "torch_pct_ceiling": 100 * torch_gbs / ceiling,
                    "speedup": torch_ms / ours_ms, "ours_min_max_us": [results["ours"][1] * 1e3, results["ours"][2] * 1e3],
                }
                triton_text = "- | - | -"
                if "triton" in results:
                    triton_ms = results["triton"][0]
                    triton_gbs = moved / (triton_ms * 1e-3) / 1e9
                    row.update({"triton_us": triton_ms * 1e3, "triton_gbs": triton_gbs,
                                "triton_pct_ceiling": 100 * triton_gbs / ceiling,
                                "speedup_vs_triton": triton_ms / ours_ms})
                    triton_text = (f"{row['triton_us']:.2f} | {row['triton_pct_ceiling']:.1f}% | "
                                   f"{row['speedup_vs_triton']:.2f}x")
                extra_text = ""
                for name, _ in variants:
                    variant_ms = results[f"variant:{name}"][0]
                    row.setdefault("variants", {})[name] = {"us": variant_ms * 1e3, "pct_ceiling": 100 * moved / (variant_ms * 1e-3) / 1e9 / ceiling,
                                                            "speedup_of_lib": variant_ms / ours_ms}
                    extra_text += f" {name} {variant_ms * 1e3:.2f} us ({row['variants'][name]['pct_ceiling']:.1f}%) |"
                if "triton" in results:
                    row["triton_config"] = triton_peer.best_config()
                    extra_text += f" {row['triton_config']} |"
                rows.append(row)
                print(f"| {case.name} | {hidden} | {tokens} | {sets} | {moved:,} | "
                      f"{row['ours_us']:.2f} | {row['ours_per_graph_floor']:.2f} | {ours_gbs:.0f} | "
                      f"{row['ours_pct_ceiling']:.1f}% | "
                      f"{row['torch_us']:.2f} | {row['speedup']:.2f}x | {triton_text} |{extra_text}", flush=True)
            del case
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
