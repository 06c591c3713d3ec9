"""tpembed.torch on CUDA: the operators bit for bit against F.embedding and the CPU gradient, a
torch.cuda.graph capture and torch.compile(mode="reduce-overhead") of one rank's lookup, the module
over an nccl group of one process (tpembed's NCCL communicator bootstrapped through the group) with
a captured forward, and torchrun with one process per GPU over nccl (where 2 GPUs are visible).
Skips, saying why, without a GPU or a CUDA build of tpembed.
"""

from __future__ import annotations

import os
import sys

import pytest

torch = pytest.importorskip("torch", reason="SKIPPED: PyTorch is not installed")

import tpembed  # noqa: E402
import tpembed.torch as tpt  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and tpembed.cuda_built() and tpembed.cuda_device_count() > 0),
    reason="SKIPPED: needs PyTorch with CUDA, a visible GPU and tpembed built with CUDA")

F = torch.nn.functional
dist = torch.distributed
V, H = 733, 257
HERE = os.path.dirname(os.path.abspath(__file__))


def generator(seed):
    return torch.Generator().manual_seed(seed)


def bits(tensor):
    return tensor.contiguous().view({4: torch.int32, 2: torch.int16}[tensor.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lookup_and_gradient_on_the_gpu_are_the_cpus_bits(dtype):
    weight = torch.randn(V, H, generator=generator(1)).to(dtype)
    ids = torch.randint(0, V // 8, (7, 33), generator=generator(2))
    gpu_weight = weight.cuda().requires_grad_(True)
    out = tpt.embedding(ids.cuda(), gpu_weight)
    assert torch.equal(bits(out.cpu()), bits(F.embedding(ids, weight)))
    grad_out = torch.randn(out.shape, generator=generator(3)).to(dtype)
    out.backward(grad_out.cuda())
    cpu_grad = tpembed.embedding_backward(ids, grad_out, V, out_dtype=dtype)
    assert torch.equal(bits(gpu_weight.grad.cpu()), bits(cpu_grad))


def test_a_cuda_graph_captures_the_lookup():
    weight = torch.randn(V, H, generator=generator(4), dtype=torch.float32).cuda().bfloat16()
    static_ids = torch.zeros(64, dtype=torch.int64, device="cuda")
    tpt.embedding(static_ids, weight)  # warm-up: the per-table set-up exists before capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = tpt.embedding(static_ids, weight)
    for seed in (5, 6):
        static_ids.copy_(torch.randint(0, V, (64,), generator=generator(seed)).cuda())
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, F.embedding(static_ids, weight))


def test_reduce_overhead_compiles_and_replays_the_lookup():
    torch._dynamo.reset()
    weight = torch.randn(V, H, generator=generator(7)).cuda()
    step = torch.compile(lambda ids: tpt.embedding(ids, weight) * 2.0, mode="reduce-overhead",
                         fullgraph=True)
    for seed in range(4):
        ids = torch.randint(0, V, (32,), generator=generator(seed)).cuda()
        assert torch.equal(step(ids), F.embedding(ids, weight) * 2.0)


def test_reduce_overhead_compiles_a_training_step_through_the_gradient():
    torch._dynamo.reset()
    weight = torch.nn.Parameter(torch.randn(V, H, generator=generator(8)).cuda())
    step = torch.compile(lambda ids: (tpt.embedding(ids, weight) * 2.0).sum(), mode="reduce-overhead",
                         fullgraph=True)
    for seed in range(4):
        torch.compiler.cudagraph_mark_step_begin()
        weight.grad = None
        ids = torch.randint(0, V // 4, (48,), generator=generator(20 + seed)).cuda()  # repeats
        step(ids).backward()
        expected = torch.zeros(V, H, device="cuda").index_add_(
            0, ids, torch.full((48, H), 2.0, device="cuda"))  # sums of 2.0: exact in any order
        assert torch.equal(weight.grad, expected)


@pytest.fixture
def nccl_group():
    dist.init_process_group("nccl", rank=0, world_size=1, store=dist.HashStore(),
                            device_id=torch.device("cuda", 0))
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_the_module_over_an_nccl_group_and_its_captured_forward(nccl_group):
    weight = torch.randn(V, H, generator=generator(8)).cuda()
    layer = tpt.ParallelEmbedding(weight.clone(), collective_checks=False)
    ids = torch.randint(0, V, (5, 9), generator=generator(9)).cuda()
    out = layer(ids)
    assert torch.equal(out, F.embedding(ids, weight))
    out.sum().backward()
    reference = weight.clone().requires_grad_(True)
    F.embedding(ids, reference).sum().backward()
    assert torch.equal(layer.weight.grad, reference.grad)  # sums of ones: exact in any order
    static_ids = ids.clone()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = layer(static_ids)
    static_ids.copy_(torch.randint(0, V, (5, 9), generator=generator(10)).cuda())
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, F.embedding(static_ids, weight))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SKIPPED: needs 2 GPUs (one a rank)")
def test_torchrun_over_nccl_one_process_per_gpu(tmp_path):
    sys.path.insert(0, HERE)
    from test_torchrun import assert_ok, launch
    results = launch(tmp_path, "matrix,quantized,compiled,llama", ranks=2, backend="nccl")
    assert_ok(results)
