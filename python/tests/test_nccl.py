"""ParallelEmbedding over tpembed's NCCL communicator, from Python: a one-rank group on the GPU, and
a group whose second rank never joins, which must raise within the timeout instead of hanging."""

from __future__ import annotations

import time

import pytest

import tpembed


torch = pytest.importorskip("torch")
needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and tpembed.nccl_available() and tpembed.cuda_device_count() > 0),
    reason="needs PyTorch with CUDA, a visible GPU and tpembed built with NCCL")


@needs_gpu
def test_one_rank_nccl_group_matches_f_embedding():
    table = torch.randn(97, 64, device="cuda", dtype=torch.bfloat16)
    comm = tpembed.NcclCommunicator(tpembed.nccl_unique_id(), rank=0, size=1, device=0)
    layer = tpembed.ParallelEmbedding(table, comm=comm)
    ids = torch.tensor([0, 96, 5, 5, 40], device="cuda")
    out = layer.forward(ids)
    torch.cuda.synchronize()
    assert torch.equal(out.view(torch.int16), torch.nn.functional.embedding(ids, table).view(torch.int16))


@needs_gpu
def test_a_peer_that_never_joins_times_out():
    table = torch.randn(8, 16, device="cuda", dtype=torch.float32)
    comm = tpembed.NcclCommunicator(tpembed.nccl_unique_id(), rank=0, size=2, device=0, timeout=2.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="did not finish within 2"):
        tpembed.ParallelEmbedding(table, comm=comm, tp_size=2)
    assert time.monotonic() - start < 30
    with pytest.raises(RuntimeError, match="already set up a ParallelEmbedding"):  # its id is spent
        tpembed.ParallelEmbedding(table, comm=comm, tp_size=2)
