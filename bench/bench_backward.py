#!/usr/bin/env python3
"""Embedding backward benchmark (issue 14): tpembed.embedding_backward against PyTorch, same run.

Cases: V x H gradient (default 128256 x 4096), bf16 grad_out of 8192 / 32768 / 65536 tokens into an
f32 and into a bf16 gradient, ids uniform over the vocab and Zipf 1.1, in both modes:
  overwrite   tpembed.embedding_backward(..., grad_weight=g) into a given buffer: every row of the
              dense gradient written (untouched rows +0), as PyTorch's dense backward returns it;
  accumulate  the same with accumulate=True: touched rows read, added to and written back.
Zipf ids: rank k of 1..V drawn with probability proportional to 1/k^1.1 (numpy Generator.choice over
the normalised weights, seed 1234; no truncation), the ranks mapped to ids by a fixed random
permutation of the vocab (so hot rows are scattered over the table, as real token ids are).

Bytes moved (the bound model of every row):
  accumulate: ids (8 B each) + grad_out read once + each distinct touched row read and written
              once at the gradient's dtype;
  overwrite:  ids + grad_out read once + the whole dense gradient (V x H) written once.
GB/s = bytes / time; % ceiling = against the device-to-device copy ceiling measured at the start
of this run (bench_cuda_lookup.copy_ceiling_gbs: read + write of 2 GiB).

Peers, timed in the same run on the same ids and grad_out, backward only (no forward to subtract;
the issue's PyTorch numbers are forward + backward minus forward):
  torch det     torch.ops.aten.embedding_dense_backward(grad_out, ids, V, -1, False) — what
                F.embedding's autograd calls for a dense gradient — with
                torch.use_deterministic_algorithms(True); its result is bf16 (grad_out's dtype)
  torch default the same with use_deterministic_algorithms(False)
  index_add_    f32 accumulate rows only: g.index_add_(0, ids, grad_out_f32) into an f32 gradient
                (float atomics; grad_out converted to f32 before the timing, which favours it)
  autograd det / autograd default   the issue's own measure, eagerly between events:
                F.embedding(ids, w) forward + .backward(grad_out) minus the forward alone, w bf16
                with w.grad reset each time (--no-autograd skips them)
The PyTorch times are the same for the f32 and bf16 rows of a case (PyTorch makes a bf16 gradient
from bf16 grad_out); the speed-ups divide them by tpembed's time in that row.

Timing: each call (tpembed with a workspace from tpembed.gradient_workspace_bytes, so it allocates
nothing) is captured once in a CUDA graph of --calls back-to-back calls and replayed; time per call
= median replay time / calls, with CUDA events after ~100 us of queued GPU work
(bench_cuda_lookup.median_event_time_ms). A call that cannot be captured is timed eagerly with the
same events instead; the row's `timing` column says which. The tensors (ids, grad_out: 64-512 MB;
the gradient: 1-2 GB) are far larger than the L2, so one set is used.

Checks, once per case before timing: two tpembed runs give the same bits; tpembed's f32 gradient is
within gradient.hpp's bound plus PyTorch's own sum error of torch's f32 dense backward (run on
grad_out converted to f32): |ours - torch| <= (k + m - 1) * 2^-24 * sum |x| per row, k = min(m - 1,
31 + ceil(m / 32) - 1), m = the row's count; the bf16 gradient is within one bf16 rounding of that.

Usage (on the GPU machine, with tpembed's Python module built with CUDA and PyTorch importable):
  python3 bench/bench_backward.py [--json out.json] [--tokens 8192,32768,65536]
  python3 bench/bench_backward.py --smoke   # CPU, NumPy, small sizes: checks the script runs
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np

import tpembed

ZIPF_EXPONENT = 1.1
ZIPF_SEED = 1234
UNIT = 2.0 ** -24


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--tokens", default="8192,32768,65536")
    parser.add_argument("--grads", default="f32,bf16", help="gradient dtypes (grad_out is bf16)")
    parser.add_argument("--ids", default="uniform,zipf")
    parser.add_argument("--modes", default="overwrite,accumulate")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3, help="calls per captured graph")
    parser.add_argument("--no-autograd", action="store_true",
                        help="skip the F.embedding forward+backward-minus-forward peers")
    parser.add_argument("--json", help="write the header and all rows here")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU only (NumPy, no PyTorch): V=4099, H=64, 512 and 4096 tokens, "
                             "np.add.at as the peer; checks that the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.vocab, args.hidden, args.tokens, args.repeats = 4099, 64, "512,4096", 5
    return args


def zipf_ids(vocab, tokens, seed=ZIPF_SEED):
    """Ranks 1..vocab drawn with p(k) ~ 1/k^1.1, mapped to ids by a fixed permutation (int64)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** ZIPF_EXPONENT
    ranks = rng.choice(vocab, size=tokens, p=weights / weights.sum())
    return np.random.default_rng(seed + 1).permutation(vocab)[ranks].astype(np.int64)


def uniform_ids(vocab, tokens, seed=ZIPF_SEED):
    return np.random.default_rng(seed).integers(0, vocab, tokens, dtype=np.int64)


IDS = {"uniform": uniform_ids, "zipf": zipf_ids}
ELEMENT_BYTES = {"f32": 4, "bf16": 2, "f16": 2}


def bytes_moved(mode, tokens, distinct_rows, vocab, hidden, grad_dtype):
    """The bound model (module docstring): bf16 grad_out."""
    size = ELEMENT_BYTES[grad_dtype]
    reads = tokens * 8 + tokens * hidden * 2
    if mode == "accumulate":
        return reads + 2 * distinct_rows * hidden * size
    return reads + vocab * hidden * size


def row_factor(counts, peer_sum_error):
    """[V, 1] float64: (k + the peer's own additions, m - 1, when it has any) * 2^-24 (with 1%
    slack), so that factor * sum |x| bounds the distance of a row's sum to the peer's."""
    m = np.asarray(counts, np.float64)
    k = np.where(m > 0, np.minimum(m - 1, 31 + np.ceil(m / 32) - 1), 0)
    extra = np.maximum(m - 1, 0) if peer_sum_error else 0
    return ((k + extra) * UNIT * 1.01)[:, None]


ROUNDING = {"f32": UNIT, "bf16": 2.0 ** -8}  # the final rounding, relative (with a margin)


# ---- the GPU run (PyTorch CUDA tensors) ---------------------------------------------------------

class CudaRun:
    """Tensors on the GPU, graph-captured timings, the PyTorch peers."""

    def __init__(self, args):
        import torch
        import bench_cuda_lookup as harness  # same folder: its copy ceiling and event timing
        self.torch, self.harness, self.args = torch, harness, args
        props = torch.cuda.get_device_properties(0)
        self.ceiling = harness.copy_ceiling_gbs()
        self.header = {"device": props.name, "sms": props.multi_processor_count,
                       "torch": torch.__version__, "copy_ceiling_gbs": self.ceiling,
                       "graph_node_floor_us": harness.graph_node_floor_us()}
        self.dtypes = {"f32": torch.float32, "bf16": torch.bfloat16}
        self.buffers = {}

    def case(self, ids, tokens):
        torch = self.torch
        self.ids = torch.from_numpy(ids).cuda()
        gen = torch.Generator(device="cuda").manual_seed(tokens)
        self.grad_out = torch.randn(tokens, self.args.hidden, device="cuda", generator=gen,
                                    dtype=torch.float32).to(torch.bfloat16)
        self.workspace = torch.empty(
            tpembed.gradient_workspace_bytes(tokens, self.args.vocab, self.args.hidden),
            dtype=torch.uint8, device="cuda")

    def gradient(self, dtype, which=0):
        """A reused [V, H] buffer of `dtype` (the 2 GB f32 ones are not allocated per case)."""
        key = (dtype, which)
        if key not in self.buffers:
            self.buffers[key] = self.torch.zeros(self.args.vocab, self.args.hidden,
                                                 dtype=self.dtypes[dtype], device="cuda")
        return self.buffers[key]

    def ours(self, grad, accumulate):
        return lambda: tpembed.embedding_backward(
            self.ids, self.grad_out, self.args.vocab, grad_weight=grad, accumulate=accumulate,
            workspace=self.workspace)

    def time(self, fn):
        """(median us per call, how): a CUDA graph of --calls calls, or eager calls."""
        torch, calls = self.torch, self.args.calls
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(stream):
                fn()
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=stream):
                    for _ in range(calls):
                        fn()
            for _ in range(2):
                graph.replay()
            torch.cuda.synchronize()
            ms, _, _ = self.harness.median_event_time_ms(graph.replay, self.args.repeats, calls)
            return ms * 1e3, "graph"
        except Exception as error:  # not capturable: the same events around eager calls
            torch.cuda.synchronize()
            print(f"# not captured ({type(error).__name__}: {str(error)[:120]}); timed eagerly",
                  file=sys.stderr)
            return self.eager_time(fn), "events"

    def eager_time(self, fn):
        """Median us per call of --calls eager calls between CUDA events."""
        torch, calls = self.torch, self.args.calls

        def eager():
            for _ in range(calls):
                fn()
        eager()
        torch.cuda.synchronize()
        ms, _, _ = self.harness.median_event_time_ms(eager, self.args.repeats, calls)
        return ms * 1e3

    def autograd_peers(self):
        """The issue's measure: F.embedding forward + backward minus the forward (eager, events),
        the weight's .grad reset before each backward (a fresh dense bf16 gradient)."""
        torch = self.torch
        weight = torch.zeros(self.args.vocab, self.args.hidden, dtype=torch.bfloat16,
                             device="cuda", requires_grad=True)
        lookup = torch.nn.functional.embedding

        def forward():
            with torch.no_grad():
                lookup(self.ids, weight)

        def forward_and_backward():
            weight.grad = None
            lookup(self.ids, weight).backward(self.grad_out)

        result = {}
        previous = torch.are_deterministic_algorithms_enabled()
        for name, deterministic in (("autograd_det", True), ("autograd_default", False)):
            torch.use_deterministic_algorithms(deterministic)
            try:
                both, alone = self.eager_time(forward_and_backward), self.eager_time(forward)
            finally:
                torch.use_deterministic_algorithms(previous)
            result[name] = (both - alone, "events: fwd+bwd - fwd")
        return result

    def peers(self):
        """{name: (us, how)} of the PyTorch peers on this case's ids and grad_out."""
        torch = self.torch
        dense = torch.ops.aten.embedding_dense_backward
        result = {}
        previous = torch.are_deterministic_algorithms_enabled()
        for name, deterministic in (("torch_det", True), ("torch_default", False)):
            torch.use_deterministic_algorithms(deterministic)
            try:
                result[name] = self.time(lambda: dense(self.grad_out, self.ids, self.args.vocab,
                                                       -1, False))
            finally:
                torch.use_deterministic_algorithms(previous)
        self.grad_out_f32 = self.grad_out.float()
        into = self.gradient("f32", 1)
        result["index_add"] = self.time(lambda: into.index_add_(0, self.ids, self.grad_out_f32))
        if not self.args.no_autograd:
            result.update(self.autograd_peers())
        return result

    def distinct_rows(self):
        return int(self.torch.unique(self.ids).numel())

    def check(self, grad_dtype):
        """Two of our runs bit for bit; ours against torch's f32 dense backward within bounds."""
        torch = self.torch
        first, second = self.gradient(grad_dtype, 0), self.gradient(grad_dtype, 2)
        self.ours(first, False)()
        self.ours(second, False)()
        bits = torch.int32 if grad_dtype == "f32" else torch.int16
        same = torch.equal(first.view(bits), second.view(bits))
        reference = torch.ops.aten.embedding_dense_backward(self.grad_out.float(), self.ids,
                                                            self.args.vocab, -1, False)
        counts = torch.bincount(self.ids, minlength=self.args.vocab).double().cpu().numpy()
        magnitudes = torch.zeros(self.args.vocab, self.args.hidden, device="cuda")
        magnitudes.index_add_(0, self.ids, self.grad_out.float().abs())
        tol = torch.from_numpy(row_factor(counts, True)).float().cuda() * magnitudes
        tol += reference.abs() * (ROUNDING[grad_dtype] + UNIT) + 1e-30
        within = bool(((first.float() - reference).abs() <= tol).all())
        del reference, magnitudes, tol
        return same, within


# ---- the smoke run (NumPy on the host) ----------------------------------------------------------

class HostRun:
    """The same rows on the CPU with NumPy arrays: the peer is np.add.at into a float32 array."""

    def __init__(self, args):
        self.args = args
        source = np.ones(1 << 26, np.uint8)
        target = np.empty_like(source)
        seconds = min(self._seconds(lambda: np.copyto(target, source)) for _ in range(3))
        self.ceiling = 2 * source.size / seconds / 1e9
        self.header = {"device": "host (smoke run)", "copy_ceiling_gbs": self.ceiling}
        self.buffers = {}

    @staticmethod
    def _seconds(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def case(self, ids, tokens):
        self.ids = ids
        rng = np.random.default_rng(tokens)
        values = rng.standard_normal((tokens, self.args.hidden)).astype(np.float32)
        self.grad_out = (values.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits (truncated)
        self.grad_values = (self.grad_out.astype(np.uint32) << 16).view(np.float32)

    def gradient(self, dtype, which=0):
        key = (dtype, which)
        if key not in self.buffers:
            self.buffers[key] = np.zeros((self.args.vocab, self.args.hidden),
                                         np.float32 if dtype == "f32" else np.uint16)
        return self.buffers[key]

    def ours(self, grad, accumulate):
        dtype = "f32" if grad.dtype == np.float32 else "bf16"
        return lambda: tpembed.embedding_backward(
            self.ids, self.grad_out, self.args.vocab, grad_weight=grad, accumulate=accumulate,
            out_dtype=dtype, grad_out_dtype="bf16")

    def time(self, fn):
        fn()
        return statistics.median(self._seconds(fn) for _ in range(self.args.repeats)) * 1e6, "wall"

    def peers(self):
        into = self.gradient("f32", 1)
        return {"index_add": self.time(lambda: np.add.at(into, self.ids, self.grad_values))}

    def distinct_rows(self):
        return int(np.unique(self.ids).size)

    def check(self, grad_dtype):
        first, second = self.gradient(grad_dtype, 0), self.gradient(grad_dtype, 2)
        self.ours(first, False)()
        self.ours(second, False)()
        same = np.array_equal(first, second)
        exact = np.zeros(first.shape)
        np.add.at(exact, self.ids, self.grad_values.astype(np.float64))
        magnitudes = np.zeros(first.shape)
        np.add.at(magnitudes, self.ids, np.abs(self.grad_values.astype(np.float64)))
        counts = np.bincount(self.ids, minlength=self.args.vocab)
        tol = row_factor(counts, False) * magnitudes + np.abs(exact) * ROUNDING[grad_dtype]
        values = first if grad_dtype == "f32" else \
            (first.astype(np.uint32) << 16).view(np.float32)
        return same, bool((np.abs(values - exact) <= tol + 1e-30).all())


# ---- the table --------------------------------------------------------------------------------

PEERS = (("torch_det", "torch det"), ("torch_default", "torch default"),
         ("index_add", "index_add_"), ("autograd_det", "autograd det"),
         ("autograd_default", "autograd default"))


def main():
    args = parse_args()
    run = HostRun(args) if args.smoke else CudaRun(args)
    header = dict(run.header, vocab=args.vocab, hidden=args.hidden, grad_out="bf16",
                  zipf={"exponent": ZIPF_EXPONENT, "seed": ZIPF_SEED,
                        "sampling": "Generator.choice over normalised 1/k^1.1, ranks permuted"},
                  tpembed_cuda=tpembed.cuda_built(), command=" ".join(sys.argv),
                  date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    print(f"# {header['device']}; copy ceiling {run.ceiling:.0f} GB/s; V={args.vocab} "
          f"H={args.hidden}; grad_out bf16; {header['date']}")
    peer_columns = "".join(f"{label} us | vs {label} | " for _, label in PEERS)
    print("| ids | tokens | distinct rows | grad | mode | bytes moved | tpembed us | GB/s | "
          f"% ceiling | timing | {peer_columns}checks |")
    print("|---" * (11 + 2 * len(PEERS)) + "|")
    rows = []
    for distribution in args.ids.split(","):
        for tokens in (int(t) for t in args.tokens.split(",")):
            run.case(IDS[distribution](args.vocab, tokens), tokens)
            distinct = run.distinct_rows()
            peers = run.peers()
            for grad_dtype in args.grads.split(","):
                same, within = run.check(grad_dtype)
                for mode in args.modes.split(","):
                    us, how = run.time(run.ours(run.gradient(grad_dtype), mode == "accumulate"))
                    moved = bytes_moved(mode, tokens, distinct, args.vocab, args.hidden,
                                        grad_dtype)
                    gbs = moved / (us * 1e-6) / 1e9
                    row = {"ids": distribution, "tokens": tokens, "distinct_rows": distinct,
                           "grad": grad_dtype, "mode": mode, "bytes": moved, "ours_us": us,
                           "ours_gbs": gbs, "ours_pct_ceiling": 100 * gbs / run.ceiling,
                           "timing": how, "bit_exact_repeat": same, "within_bound": within}
                    cells = []
                    for key, _ in PEERS:
                        applies = key != "index_add" or (grad_dtype == "f32" and
                                                         mode == "accumulate")
                        if key in peers and applies:
                            peer_us, peer_how = peers[key]
                            row.update({f"{key}_us": peer_us, f"{key}_timing": peer_how,
                                        f"speedup_vs_{key}": peer_us / us})
                            cells.append(f"{peer_us:.1f} | {peer_us / us:.2f}x")
                        else:
                            cells.append("- | -")
                    rows.append(row)
                    checks = ("same bits" if same else "BITS DIFFER") + ", " + \
                        ("within bound" if within else "OUT OF BOUND")
                    print(f"| {distribution} | {tokens} | {distinct} | bf16 -> {grad_dtype} | "
                          f"{mode} | {moved:,} | {us:.1f} | {gbs:.0f} | "
                          f"{row['ours_pct_ceiling']:.1f}% | {how} | {' | '.join(cells)} | "
                          f"{checks} |", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "rows": rows}, handle, indent=1)
    if not all(r["bit_exact_repeat"] and r["within_bound"] for r in rows):
        sys.exit("some rows failed their checks (see the checks column)")


if __name__ == "__main__":
    main()
