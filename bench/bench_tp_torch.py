#!/usr/bin/env python3
"""Tensor-parallel lookup: tpembed's vocab exchanges against the seed's PyTorch op, in the same run.

Run under mpirun, one process per rank (several ranks may share a GPU):
  mpirun -np 2 python3 bench/bench_tp_torch.py [--hidden 8192] [--tokens 1,16,128,1024,8192,32768]

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


def batch_time_us(step, batch, repeats):
    """The slowest rank's median time per call over `repeats` batches of `batch` calls."""
    step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        WORLD.Barrier()
        begin = time.perf_counter()
        for _ in range(batch):
            step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - begin) / batch * 1e6)
    return WORLD.allreduce(statistics.median(times), op=MPI.MAX)


def main():
    args = parse_args()
    devices = torch.cuda.device_count()
    if devices == 0:
        sys.exit("bench_tp_torch.py needs a CUDA device")
    device = RANK % devices
    torch.cuda.set_device(device)
    one_gpu_per_rank = devices >= SIZE
    backend = "nccl" if one_gpu_per_rank else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(args.port))
    dist.init_process_group(backend, rank=RANK, world_size=SIZE)

    vocab, hidden = args.vocab, args.hidden
    start_row, rows = tpembed.shard_range(vocab, SIZE, RANK, "packed")
    generator = torch.Generator().manual_seed(1234 + start_row)
    shard = torch.randn(rows, hidden, generator=generator).to(torch.bfloat16).cuda()
    ceiling = copy_ceiling_gbs()

    def tpembed_comm():
        if one_gpu_per_rank and tpembed.nccl_available():
            unique_id = WORLD.bcast(tpembed.nccl_unique_id() if RANK == 0 else None, root=0)
            return tpembed.NcclCommunicator(unique_id, RANK, SIZE, device), "nccl"
        return WORLD, "mpi"

    layers = []
    for exchange in ("all_reduce", "owned_rows", "peer_rows"):
        comm, engine = tpembed_comm()
        try:
            layer = tpembed.ParallelEmbedding(shard, comm=comm, placement="packed", vocab_exchange=exchange,
                                              collective_checks=False)
        except RuntimeError as error:  # peer_rows where the shards cannot be mapped (same on every rank)
            if RANK == 0:
                print(f"(tpembed {exchange} left out: {error})")
            continue
        layers.append((f"tpembed {exchange} ({engine})", exchange, layer))

    if RANK == 0:
        print(f"# {torch.cuda.get_device_name(device)} x{devices} visible, {SIZE} ranks; torch {torch.__version__}; "
              f"tpembed; bf16 V={vocab} H={hidden}; copy ceiling {ceiling:.0f} GB/s (read+write, slowest rank)")
        print("| tokens | implementation | us | bytes on the wire per rank | bus GB/s | lookup % of copy ceiling "
              "| vs PyTorch |")
        print("|---|---|---|---|---|---|---|")
    ring = (SIZE - 1) / SIZE
    mismatches = 0
    for tokens in [int(t) for t in args.tokens.split(",")]:
        ids = torch.randint(0, vocab, (tokens,), generator=torch.Generator().manual_seed(tokens)).cuda()
        owned = int(((ids >= start_row) & (ids < start_row + rows)).sum())
        out_bytes = tokens * hidden * 2
        out = torch.empty(tokens, hidden, dtype=torch.bfloat16, device="cuda")

        def seed_op():
            outside = (ids < start_row) | (ids >= start_row + rows)
            local = (ids - start_row).masked_fill(outside, 0)
            rows_out = F.embedding(local, shard)
            rows_out.masked_fill_(outside.unsqueeze(-1), 0)
            dist.all_reduce(rows_out)
            return rows_out

        expected = seed_op()
        torch.cuda.synchronize()
        batch = max(1, min(50, (64 << 20) // max(out_bytes, 1)))
        results = [("PyTorch F.embedding + all_reduce (" + backend + ")", "all_reduce",
                    batch_time_us(seed_op, batch, args.repeats))]
        for name, exchange, layer in layers:
            layer.forward(ids, out)
            torch.cuda.synchronize()
            if not torch.equal(out.float(), expected.float()):
                mismatches += 1
                print(f"rank {RANK}: {name} differs from PyTorch at {tokens} tokens", flush=True)
            results.append((name, exchange, batch_time_us(lambda: layer.forward(ids, out), batch, args.repeats)))
        torch_us = results[0][2]
        for name, exchange, us in results:
            wire = 2 * ring * out_bytes if exchange == "all_reduce" else (tokens - owned) * hidden * 2
            wire = WORLD.allreduce(wire, op=MPI.MAX)
            lookup_pct = 100 * 2 * out_bytes / (us * 1e-6) / 1e9 / ceiling
            if RANK == 0:
                print(f"| {tokens} | {name} | {us:.1f} | {wire:,.0f} | {wire / (us * 1e3):.1f} | {lookup_pct:.1f}% "
                      f"| {torch_us / us:.2f}x |", flush=True)
    total = WORLD.allreduce(mismatches)
    if RANK == 0:
        print("every tpembed exchange matched PyTorch on every rank" if total == 0 else "MISMATCH against PyTorch")
    layers.clear()  # peer_rows layers go collectively (a barrier in their destructor)
    dist.destroy_process_group()
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
