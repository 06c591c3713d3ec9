"""tpembed.embedding_backward on PyTorch CUDA tensors: the same bits as the CPU backward (which
test_gradient.py checks against the documented order), on every run, with and without a
workspace, inside a captured CUDA graph; refusals of mixed devices. Skips without PyTorch, a CUDA
device, or a CUDA build of tpembed.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import tpembed

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and tpembed.cuda_built() and tpembed.cuda_device_count() > 0),
    reason="needs PyTorch with CUDA, a visible GPU and tpembed built with CUDA")

V, H = 733, 257
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
INT_VIEW = {4: torch.int32, 2: torch.int16}


def bits(tensor):
    return tensor.contiguous().view(INT_VIEW[tensor.element_size()])


def on_host(tensor):
    """A CPU NumPy array of `tensor` as tpembed takes it (bf16: uint16 bits) and its keyword."""
    if tensor.dtype == torch.bfloat16:
        return tensor.cpu().view(torch.int16).numpy().view(np.uint16), "bf16"
    return tensor.cpu().numpy(), None


def problem(tokens, grad_dtype, seed, hidden=H):
    g = torch.Generator(device="cuda").manual_seed(seed)
    ids = torch.randint(0, V, (tokens,), device="cuda", generator=g)
    hot = torch.rand(tokens, device="cuda", generator=g) < 0.5
    ids = torch.where(hot, ids % 5, ids)  # a few rows of many chunks
    if tokens > 2:
        ids[0], ids[1] = -1, V + 2
    scale = 2.0 ** torch.randint(-8, 8, (tokens, hidden), device="cuda", generator=g)
    grad = (torch.randn(tokens, hidden, device="cuda", generator=g) * scale)
    return ids, grad.to(TORCH_DTYPES[grad_dtype])


def cpu_backward(ids, grad, out_dtype, old=None):
    host_grad, declared = on_host(grad)
    weight = None
    if old is not None:
        weight, _ = on_host(old)
        weight = np.array(weight)
    result = tpembed.embedding_backward(ids.cpu().numpy(), host_grad, V, grad_weight=weight,
                                        accumulate=old is not None, out_dtype=out_dtype,
                                        grad_out_dtype=declared)
    return np.asarray(result).view({"f32": np.uint32}.get(out_dtype, np.uint16))


def assert_same_bits(gpu, cpu_bits):
    got = bits(gpu).cpu().numpy().view(cpu_bits.dtype)
    np.testing.assert_array_equal(got, cpu_bits)


@pytest.mark.parametrize("grad_dtype,out_dtype,accumulate", list(itertools.product(
    ["f32", "f16", "bf16"], ["f32", "f16", "bf16"], [False, True])))
def test_the_gpu_gives_the_cpus_bits(grad_dtype, out_dtype, accumulate):
    ids, grad = problem(3000, grad_dtype, seed=7)
    old = None
    if accumulate:
        old = torch.randn(V, H, device="cuda").to(TORCH_DTYPES[out_dtype])
    into = None if old is None else old.clone()
    got = tpembed.embedding_backward(ids, grad, V, grad_weight=into, accumulate=accumulate,
                                     out_dtype=out_dtype)
    assert got.device == grad.device and got.dtype == TORCH_DTYPES[out_dtype]
    torch.cuda.synchronize()
    assert_same_bits(got, cpu_backward(ids, grad, out_dtype, old))


@pytest.mark.parametrize("tokens,hidden", [(0, H), (1, 1), (65536, 3), (65536, 733),
                                           (200000, 64)])
def test_large_and_odd_cases_and_repeats(tokens, hidden):
    g = torch.Generator(device="cuda").manual_seed(tokens + hidden)
    ids = torch.randint(0, V, (tokens,), device="cuda", generator=g)
    ids = torch.where(torch.rand(tokens, device="cuda", generator=g) < 0.7, ids % 3, ids)
    grad = torch.randn(tokens, hidden, device="cuda", generator=g).to(torch.bfloat16)
    first = tpembed.embedding_backward(ids, grad, V)
    for _ in range(9):
        assert torch.equal(bits(tpembed.embedding_backward(ids, grad, V)), bits(first))
    host_grad, declared = on_host(grad)
    want = tpembed.embedding_backward(ids.cpu().numpy(), host_grad, V, grad_out_dtype=declared)
    assert_same_bits(first, want.view(np.uint32))


def test_a_workspace_and_a_cuda_graph():
    """With a workspace nothing is allocated: captured once, replayed with new ids and grad_out."""
    tokens = 4096
    ids, grad = problem(tokens, "bf16", seed=11)
    weight = torch.empty(V, H, device="cuda")
    counts = torch.zeros(4, dtype=torch.int64, device="cuda")
    workspace = torch.empty(tpembed.gradient_workspace_bytes(tokens, V, H), dtype=torch.uint8,
                            device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        tpembed.embedding_backward(ids, grad, V, grad_weight=weight, workspace=workspace,
                                   counts=counts)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            tpembed.embedding_backward(ids, grad, V, grad_weight=weight, workspace=workspace,
                                       counts=counts)
    for seed in (12, 13):
        new_ids, new_grad = problem(tokens, "bf16", seed=seed)
        ids.copy_(new_ids)
        grad.copy_(new_grad)
        weight.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert_same_bits(weight, cpu_backward(ids, grad, "f32"))
        assert counts.tolist() == [tokens - 2, 0, 2, 0]


def test_captured_without_a_workspace():
    """The stream-ordered allocator's scratch is captured as graph memory nodes."""
    ids, grad = problem(2048, "f32", seed=21)
    weight = torch.empty(V, H, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        tpembed.embedding_backward(ids, grad, V, grad_weight=weight)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            tpembed.embedding_backward(ids, grad, V, grad_weight=weight)
    weight.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert_same_bits(weight, cpu_backward(ids, grad, "f32"))


def test_a_cuda_layer_backward():
    table = torch.randn(V, H, device="cuda").to(torch.bfloat16)
    layer = tpembed.ParallelEmbedding(table)
    ids, grad = problem(1000, "bf16", seed=31)
    got = layer.backward(ids, grad)
    assert got.device == table.device and got.dtype == torch.float32 and got.shape == (V, H)
    assert torch.equal(bits(got), bits(tpembed.embedding_backward(ids, grad, V)))
    assert layer.last_gradient_counts() == {"accumulated": 998, "unowned": 0, "out_of_range": 2,
                                            "ignored": 0}


def test_refuses_mixed_devices_and_a_short_workspace():
    ids, grad = problem(100, "f32", seed=41)
    with pytest.raises(tpembed.ArgumentError, match="cuda|cpu"):
        tpembed.embedding_backward(ids, grad, V, grad_weight=torch.empty(V, H))
    with pytest.raises(tpembed.ArgumentError, match="cuda|cpu"):
        tpembed.embedding_backward(ids.cpu(), grad, V)
    with pytest.raises(tpembed.ArgumentError, match="counts"):
        tpembed.embedding_backward(ids, grad, V, counts=torch.zeros(4, dtype=torch.int64))
    needed = tpembed.gradient_workspace_bytes(100, V, H)
    assert needed > 0
    with pytest.raises(tpembed.ArgumentError, match="workspace"):
        tpembed.embedding_backward(ids, grad, V, workspace=torch.empty(
            needed - 1, dtype=torch.uint8, device="cuda"))
    with pytest.raises(tpembed.ArgumentError, match="workspace"):
        tpembed.embedding_backward(ids, grad, V, workspace=torch.empty(
            needed + 256, dtype=torch.uint8, device="cuda")[1:])
