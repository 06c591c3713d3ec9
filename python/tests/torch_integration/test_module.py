"""tpembed.torch.ParallelEmbedding as a torch.nn.Module, in this process (a gloo group of one
rank; test_torchrun.py runs real groups): the parameter and buffers, state_dict, load_state_dict,
an optimizer's in-place steps, weight tying, moving the module (set up again), a .data swap that is
refused, torch.compile with the inductor backend (forward and backward), from_pretrained reading
a safetensors checkpoint (float and int8 with scales), and set-up without torch.distributed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="SKIPPED: PyTorch is not installed")
dist = torch.distributed

import tpembed  # noqa: E402
import tpembed.torch as tpt  # noqa: E402
from checkpoints import write_safetensors  # noqa: E402

F = torch.nn.functional
V, H = 41, 6


@pytest.fixture
def group():
    """A gloo group of this one process."""
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield dist.group.WORLD
    dist.destroy_process_group()


def table(seed=0, dtype=torch.float32):
    return torch.randn(V, H, generator=torch.Generator().manual_seed(seed)).to(dtype)


def ids(*shape, seed=1):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def test_without_torch_distributed_the_module_says_what_to_do():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        tpt.ParallelEmbedding(table())


def test_weight_is_the_shard_parameter_and_state_dict_holds_it(group):
    layer = tpt.ParallelEmbedding(table())
    assert isinstance(layer.weight, torch.nn.Parameter) and layer.weight.requires_grad
    assert list(layer.state_dict()) == ["weight"]
    ids_ = ids(4, 3)
    assert torch.equal(layer(ids_), F.embedding(ids_, table()))
    # load_state_dict copies in place: the same memory, read by the next forward.
    layer.load_state_dict({"weight": table(seed=7)})
    assert torch.equal(layer(ids_), F.embedding(ids_, table(seed=7)))
    assert layer.layout.tp_size == 1 and layer.layout.global_rows == V
    assert "tp 0/1" in repr(layer)


def test_an_optimizer_step_updates_what_the_next_forward_reads(group):
    layer = tpt.ParallelEmbedding(table())
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    ids_ = ids(9)
    layer(ids_).square().sum().backward()
    reference = table().requires_grad_(True)
    F.embedding(ids_, reference).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.grad)
    optimizer.step()
    with torch.no_grad():
        reference -= 0.5 * reference.grad
    torch.testing.assert_close(layer(ids_), F.embedding(ids_, reference))


def test_weight_tying_shares_the_parameter_and_its_gradient(group):
    layer = tpt.ParallelEmbedding(table())
    head = torch.nn.Linear(H, V, bias=False)
    head.weight = layer.weight  # an LM head tied to the embedding
    ids_ = ids(5)
    head(layer(ids_)).sum().backward()
    reference = table().requires_grad_(True)
    (F.embedding(ids_, reference) @ reference.t()).sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.grad)


def test_moving_the_module_sets_it_up_again(group):
    layer = tpt.ParallelEmbedding(table())
    layer.half()
    assert layer.weight.dtype == torch.float16 and layer.layout.table_dtype == "f16"
    ids_ = ids(6)
    assert torch.equal(layer(ids_), F.embedding(ids_, table().half()))
    with pytest.raises(ValueError, match="float64"):
        layer.double()


def test_deepcopy_gives_a_layer_of_its_own_with_ties_kept(group):
    import copy
    import io

    layer = tpt.ParallelEmbedding(table())
    model = torch.nn.ModuleDict({"embed": layer, "head": torch.nn.Linear(H, V, bias=False)})
    model["head"].weight = layer.weight  # tied, as an LM head
    twin = copy.deepcopy(model)
    assert twin["embed"] is not layer and twin["embed"].weight is twin["head"].weight
    assert twin["embed"].weight.data_ptr() != layer.weight.data_ptr()
    ids_ = ids(9)
    assert torch.equal(twin["embed"](ids_), layer(ids_))
    with torch.no_grad():
        twin["embed"].weight.add_(1.0)  # the copy's table only
    assert torch.equal(layer(ids_), F.embedding(ids_, table()))
    assert torch.equal(twin["embed"](ids_), F.embedding(ids_, table() + 1.0))
    twin["embed"](ids_).sum().backward()
    assert layer.weight.grad is None and twin["head"].weight.grad is not None
    with pytest.raises(TypeError, match="save and load its state_dict"):
        torch.save(layer, io.BytesIO())


def test_a_swapped_data_tensor_is_refused_not_read(group):
    layer = tpt.ParallelEmbedding(table())
    layer.weight.data = table(seed=3)
    with pytest.raises(RuntimeError, match="no longer the tensor its set-up reads"):
        layer(ids(2))


def test_quantized_and_frozen_tables_are_buffers_without_gradient(group):
    values = torch.randint(-100, 100, (V, H), dtype=torch.int8)
    scales = torch.rand(V) + 0.5
    layer = tpt.ParallelEmbedding(values, per_token_scale=scales, out_dtype=torch.bfloat16)
    assert not layer.weight.requires_grad
    assert sorted(layer.state_dict()) == ["per_token_scale", "weight"]
    ids_ = ids(3, 4)
    out = layer(ids_)
    assert out.grad_fn is None
    assert torch.equal(out, (values.float() * scales[:, None])[ids_].bfloat16())


def test_compiled_with_inductor_forward_and_backward(group):
    torch._dynamo.reset()
    layer = tpt.ParallelEmbedding(table())
    column_weights = torch.randn(H, generator=torch.Generator().manual_seed(4))

    def loss(ids_):
        return (layer(ids_) * column_weights).sum()

    compiled = torch.compile(loss, fullgraph=True, dynamic=True)  # inductor
    for n in (4, 13):
        ids_ = ids(n, seed=n)
        torch._dynamo.mark_dynamic(ids_, 0)
        layer.weight.grad = None
        compiled(ids_).backward()
        got = layer.weight.grad.clone()
        layer.weight.grad = None
        loss(ids_).backward()
        assert torch.equal(got, layer.weight.grad)


def test_from_pretrained_reads_the_shard_and_its_scales(group, tmp_path):
    full = table(seed=11).numpy()
    values = np.random.default_rng(5).integers(-128, 128, (V, H), dtype=np.int8)
    scales = (np.random.default_rng(6).random(V) + 0.5).astype(np.float32)
    path = os.path.join(tmp_path, "model.safetensors")
    write_safetensors(path, {"model.embed_tokens.weight": ("F32", full),
                             "q.weight": ("I8", values), "q.weight_scale": ("F32", scales)})
    layer = tpt.ParallelEmbedding.from_pretrained(path)
    ids_ = ids(7)
    assert layer.weight.requires_grad
    assert torch.equal(layer(ids_), F.embedding(ids_, torch.from_numpy(full)))
    # The scales are found by their default name, <tensor>_scale.
    quantized = tpt.ParallelEmbedding.from_pretrained(path, "q.weight", out_dtype=torch.float32)
    expected = torch.from_numpy(values).float() * torch.from_numpy(scales)[:, None]
    assert torch.equal(quantized(ids_), expected[ids_])
    with pytest.raises(RuntimeError, match="no.such"):
        tpt.ParallelEmbedding.from_pretrained(path, "no.such")


def test_a_deleted_modules_operator_handle_is_refused(group):
    layer = tpt.ParallelEmbedding(table())
    handle, weight = layer._handle, layer.weight
    del layer
    import gc
    gc.collect()
    with pytest.raises(RuntimeError, match=f"tpembed layer {handle} no longer exists"):
        torch.ops.tpembed.parallel_embedding(ids(2), weight, None, None, None, handle)
