#!/usr/bin/env python3
"""Tensor-parallel lookup: tpembed's vocab exchanges against the seed's PyTorch op, in the same run.

Run under mpirun, one process per rank (several ranks may share a GPU):
  mpirun -np 2 python3 bench/bench_tp_torch.py [--hidden 8192] [--tokens 1,16,128,1024,8192,32768]
      [--layouts replicated,scattered] [--device auto|cuda|cpu]

Every rank holds a packed vocab shard of one bf16 table (V x H). Per token count, the same ids on
every rank, each implementation computes the whole [tokens, H] output on every rank:
  - PyTorch (the seed's op): mask the ids this rank does not own, F.embedding on the shard, zero
    the masked rows, torch.distributed.all_reduce (NCCL with one GPU per rank, else gloo);
  - tpembed all_reduce, owned_rows and peer_rows (ParallelEmbedding, collective_checks=False),
    over tpembed's NCCL engine with one GPU per rank, else over MPI (mpi4py); peer_rows wherever
    the shards can be mapped into each other (GPUs of one machine).
Outputs are checked against PyTorch's before timing (equal values: the seed's sum turns -0.0 into
+0.0, tpembed keeps the owner's bits). Timing: a batch of back-to-back calls between two device
synchronisations and a barrier, wall clock, the median of --repeats batches divided by the batch
size; the slowest rank's time is reported. Each row gives the bytes on the wire per rank (all-reduce:
2(tp-1)/tp of the output; owned and peer rows: the rows the rank does not own), the bus bandwidth,
the lookup's memory traffic (rows read + output written) as a % of this run's device-to-device
copy ceiling, and the speed-up over PyTorch.

The scattered layout (sequence parallelism; --layouts, both by default) follows each token count's
replicated rows: every rank ends with its chunk of the tokens only (torch.tensor_split's chunks):
  - PyTorch/Megatron (reduce_scatter_embeddings): the same masked F.embedding, then
    torch.distributed.reduce_scatter_tensor where the tokens divide by the ranks, else
    reduce_scatter over the tensor_split chunks (uneven);
  - tpembed output_layout="scattered": all_reduce (a reduce-scatter), owned_rows (each row sent only
    to the rank whose chunk holds its token) and peer_rows (the own chunk only, read from the owners).
Each is checked against PyTorch's chunk; bytes on the wire per rank: reduce-scatter (tp-1)/tp of the
whole output, owned rows the larger of the rows a rank receives for its chunk and the rows it sends
to the others', peer rows the chunk's rows that peers own; the speed-up is over PyTorch's
reduce-scatter. --device cpu (auto without a GPU) runs it all on host tensors over gloo and MPI
(no copy ceiling; peer_rows needs GPU tables and is left out).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from mpi4py import MPI

import bench_cuda_lookup  # same folder: its copy-ceiling measure
import tpembed

WORLD = MPI.COMM_WORLD
RANK, SIZE = WORLD.Get_rank(), WORLD.Get_size()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--tokens", default="1,16,128,1024,8192,32768")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--port", type=int, default=int(os.environ.get("TPEMBED_BENCH_PORT", "29517")))
    parser.add_argument("--layouts", default="replicated,scattered",
                        help="output layouts to time: replicated, scattered, or both (comma-separated)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="cuda, cpu (host tensors over gloo and MPI), or auto (cuda when a GPU is visible)")
    return parser.parse_args()


def copy_ceiling_gbs(nbytes=1 << 30):
    """The device-to-device copy ceiling (bench_cuda_lookup's measure), one rank at a time so that
    ranks sharing a GPU do not halve each other's; the slowest rank's."""
    result = 0.0
    for turn in range(SIZE):
        if turn == RANK:
            result = bench_cuda_lookup.copy_ceiling_gbs(nbytes)
        WORLD.Barrier()
    return WORLD.allreduce(result, op=MPI.MIN)


def synchronize():
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def batch_time_us(step, batch, repeats):
    """The slowest rank's median time per call over `repeats` batches of `batch` calls."""
    step()
    synchronize()
    times = []
    for _ in range(repeats):
        WORLD.Barrier()
        begin = time.perf_counter()
        for _ in range(batch):
            step()
        synchronize()
        times.append((time.perf_counter() - begin) / batch * 1e6)
    return WORLD.allreduce(statistics.median(times), op=MPI.MAX)


def main():
    args = parse_args()
    layouts = args.layouts.split(",")
    if not layouts or any(layout not in ("replicated", "scattered") for layout in layouts):
        sys.exit(f"--layouts {args.layouts!r}: give replicated, scattered or both")
    devices = WORLD.allreduce(torch.cuda.device_count(), op=MPI.MIN)  # the same path on every rank
    cuda = args.device == "cuda" or (args.device == "auto" and devices > 0)
    if cuda and devices == 0:
        sys.exit("bench_tp_torch.py --device cuda: no CUDA device visible on some rank")
    device = RANK % devices if cuda else None
    if cuda:
        torch.cuda.set_device(device)
    on = "cuda" if cuda else "cpu"
    one_gpu_per_rank = cuda and devices >= SIZE
    backend = "nccl" if one_gpu_per_rank else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(args.port))
    dist.init_process_group(backend, rank=RANK, world_size=SIZE)

    vocab, hidden = args.vocab, args.hidden
    start_row, rows = tpembed.shard_range(vocab, SIZE, RANK, "packed")
    generator = torch.Generator().manual_seed(1234 + start_row)
    shard = torch.randn(rows, hidden, generator=generator).to(torch.bfloat16).to(on)
    ceiling = copy_ceiling_gbs() if cuda else None

    def tpembed_comm():
        if one_gpu_per_rank and tpembed.nccl_available():
            unique_id = WORLD.bcast(tpembed.nccl_unique_id() if RANK == 0 else None, root=0)
            return tpembed.NcclCommunicator(unique_id, RANK, SIZE, device), "nccl"
        return WORLD, "mpi"

    layers = {layout: [] for layout in layouts}  # per layout: (name, exchange, layer)
    for layout in layouts:
        for exchange in ("all_reduce", "owned_rows", "peer_rows"):
            comm, engine = tpembed_comm()
            try:
                layer = tpembed.ParallelEmbedding(shard, comm=comm, placement="packed", vocab_exchange=exchange,
                                                  collective_checks=False, output_layout=layout)
            except RuntimeError as error:  # peer_rows where the shards cannot be mapped (same on every rank)
                if RANK == 0:
                    print(f"(tpembed {exchange} {layout} left out: {error})")
                continue
            suffix = "" if layout == "replicated" else ", scattered"
            layers[layout].append((f"tpembed {exchange} ({engine}{suffix})", exchange, layer))

    if RANK == 0:
        where = f"{torch.cuda.get_device_name(device)} x{devices} visible" if cuda else "host tensors (cpu)"
        limit = f"copy ceiling {ceiling:.0f} GB/s (read+write, slowest rank)" if cuda else "no copy ceiling on cpu"
        print(f"# {where}, {SIZE} ranks; torch {torch.__version__}; tpembed; bf16 V={vocab} H={hidden}; {limit}; "
              f"layouts {', '.join(layouts)}")
        print("| tokens | implementation | us | bytes on the wire per rank | bus GB/s | lookup % of copy ceiling "
              "| vs PyTorch |")
        print("|---|---|---|---|---|---|---|")
    ring = (SIZE - 1) / SIZE
    mismatches = 0

    def report(tokens, results, wire_of, lookup_bytes):
        torch_us = results[0][2]
        for name, exchange, us in results:
            wire = WORLD.allreduce(wire_of(exchange), op=MPI.MAX)
            lookup_pct = f"{100 * lookup_bytes / (us * 1e-6) / 1e9 / ceiling:.1f}%" if ceiling else "n/a"
            if RANK == 0:
                print(f"| {tokens} | {name} | {us:.1f} | {wire:,.0f} | {wire / (us * 1e3):.1f} | {lookup_pct} "
                      f"| {torch_us / us:.2f}x |", flush=True)

    def check(name, tokens, got, expected):
        nonlocal mismatches
        synchronize()
        if got.shape != expected.shape or not torch.equal(got.float(), expected.float()):
            mismatches += 1
            print(f"rank {RANK}: {name} differs from PyTorch at {tokens} tokens", flush=True)

    for tokens in [int(t) for t in args.tokens.split(",")]:
        ids = torch.randint(0, vocab, (tokens,), generator=torch.Generator().manual_seed(tokens)).to(on)
        owns = (ids >= start_row) & (ids < start_row + rows)
        owned = int(owns.sum())
        row_bytes = hidden * 2
        out_bytes = tokens * row_bytes
        batch = max(1, min(50, (64 << 20) // max(out_bytes, 1)))

        def masked_lookup():
            outside = ~owns
            local = (ids - start_row).masked_fill(outside, 0)
            rows_out = F.embedding(local, shard)
            rows_out.masked_fill_(outside.unsqueeze(-1), 0)
            return rows_out

        if "replicated" in layouts:
            out = torch.empty(tokens, hidden, dtype=torch.bfloat16, device=on)

            def seed_op():
                rows_out = masked_lookup()
                dist.all_reduce(rows_out)
                return rows_out

            expected = seed_op()
            synchronize()
            results = [("PyTorch F.embedding + all_reduce (" + backend + ")", "all_reduce",
                        batch_time_us(seed_op, batch, args.repeats))]
            for name, exchange, layer in layers["replicated"]:
                layer.forward(ids, out)
                check(name, tokens, out, expected)
                results.append((name, exchange, batch_time_us(lambda: layer.forward(ids, out), batch, args.repeats)))
            report(tokens, results,
                   lambda exchange: 2 * ring * out_bytes if exchange == "all_reduce" else (tokens - owned) * row_bytes,
                   2 * out_bytes)

        if "scattered" in layouts:
            # This rank's chunk of the tokens (torch.tensor_split's rule), as tpembed and Megatron split them.
            chunk_sizes = [len(c) for c in torch.tensor_split(torch.arange(tokens), SIZE)]
            first = sum(chunk_sizes[:RANK])
            chunk = chunk_sizes[RANK]
            owned_in_chunk = int(owns[first:first + chunk].sum())
            chunk_out = torch.empty(chunk, hidden, dtype=torch.bfloat16, device=on)
            even = tokens % SIZE == 0

            def megatron_op():
                rows_out = masked_lookup()
                if even:
                    dist.reduce_scatter_tensor(chunk_out, rows_out)
                else:  # uneven chunks: the list form over tensor_split's (contiguous) views
                    dist.reduce_scatter(chunk_out, list(torch.tensor_split(rows_out, SIZE)))
                return chunk_out

            expected = megatron_op().clone()
            synchronize()
            collective = "reduce_scatter_tensor" if even else "reduce_scatter (uneven chunks)"
            results = [(f"PyTorch F.embedding + {collective} ({backend}, scattered)", "all_reduce",
                        batch_time_us(megatron_op, batch, args.repeats))]
            for name, exchange, layer in layers["scattered"]:
                mine = torch.empty(chunk, hidden, dtype=torch.bfloat16, device=on)
                layer.forward(ids, mine)
                check(name, tokens, mine, expected)
                results.append((name, exchange, batch_time_us(lambda: layer.forward(ids, mine), batch, args.repeats)))

            def scattered_wire(exchange):
                if exchange == "all_reduce":  # a ring reduce-scatter of the whole masked output
                    return ring * out_bytes
                if exchange == "owned_rows":  # the larger way: rows received for the chunk, or sent
                    return max(chunk - owned_in_chunk, owned - owned_in_chunk) * row_bytes
                return (chunk - owned_in_chunk) * row_bytes  # peer rows: the chunk's rows peers own

            # The lookup's memory traffic: the rows read and written for the chunk (PyTorch's masked
            # lookup reads and writes every token's; the % column is the chunk's).
            report(tokens, results, scattered_wire, 2 * chunk * row_bytes)
    total = WORLD.allreduce(mismatches)
    if RANK == 0:
        print("every tpembed exchange matched PyTorch on every rank" if total == 0 else "MISMATCH against PyTorch")
    layers.clear()  # peer_rows layers go collectively (a barrier in their destructor)
    dist.destroy_process_group()
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
