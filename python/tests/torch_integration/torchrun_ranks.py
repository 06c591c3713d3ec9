"""One rank of a torchrun job (no mpirun, no mpi4py) for test_torchrun.py:

    torchrun --nproc-per-node N torchrun_ranks.py <scenario>[,<scenario>...] <folder> [backend]

Each step's outcome goes to <folder>/rank<R>.jsonl (its result, or its error's types and message),
so the test asserts what EVERY rank got. References are built on every rank from the same seed: the
unsharded table's F.embedding for the forward, tpembed's CPU gradient of the unsharded table (and
F.embedding's, within the sum order's bound) for the backward.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist

import tpembed
import tpembed.torch as tpt

F = torch.nn.functional
SCENARIO, FOLDER = sys.argv[1], sys.argv[2]
BACKEND = sys.argv[3] if len(sys.argv) > 3 else "gloo"
dist.init_process_group(BACKEND)
RANK, SIZE = dist.get_rank(), dist.get_world_size()
DEVICE = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if BACKEND == "nccl" \
    else torch.device("cpu")
if DEVICE.type == "cuda":
    torch.cuda.set_device(DEVICE)
V, H = 37, 12  # neither divides by 2, 3 or 4: uneven shards


def report(step, call):
    line = {"rank": RANK, "step": step, "error": None, "types": [], "message": "", "ok": None}
    try:
        line["ok"] = call()
    except Exception as error:
        line["error"] = type(error).__name__
        line["types"] = [cls.__name__ for cls in type(error).__mro__]
        line["message"] = str(error)
    with open(os.path.join(FOLDER, f"rank{RANK}.jsonl"), "a") as results:
        results.write(json.dumps(line) + "\n")


def table(dtype=torch.float32, seed=5):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(V, H, generator=generator).to(dtype)


def shard_of(full, dim, placement="packed"):
    """This rank's shard of `full`, its first row (or column) and how many it holds of `full`. An
    equal vocab shard that reaches past V is zero-padded to its size (vocab_size=V says so)."""
    total = full.shape[dim]
    offset, size = tpembed.shard_range(total, SIZE, RANK, placement)
    held = max(0, min(size, total - offset))
    shard = full.narrow(dim, min(offset, total), held).clone()
    if held < size:
        shard = torch.cat([shard, shard.new_zeros((size - held, full.shape[1]))])
    return shard, offset, held


def ids_for(shape, seed, dtype=torch.int64, low=0, high=V):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=generator, dtype=dtype)


def reference_gradient(ids, grad_out, full):
    """tpembed's CPU gradient of the unsharded table: the order gradient.hpp documents."""
    return tpembed.embedding_backward(ids, grad_out, full.shape[0], out_dtype=full.dtype)


def check_layer(dim, dtype, placement, exchange, id_dtype):
    full = table(dtype)
    shard, offset, size = shard_of(full, dim, placement)
    layer = tpt.ParallelEmbedding(shard.to(DEVICE), sharding_dim=dim, placement=placement,
                                  vocab_exchange=exchange,
                                  vocab_size=V if placement == "equal" and dim == 0 else None)
    for step, shape in enumerate([(0,), (1,), (4, 9), (3, 5, 2)]):
        ids = ids_for(shape, 100 + step, id_dtype)
        out = layer(ids.to(DEVICE))
        expected = F.embedding(ids.long(), full)
        if not torch.equal(out.cpu(), expected):
            return f"forward {shape}: max error {(out.cpu() - expected).abs().max()}"
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(step)).to(dtype)
        layer.weight.grad = None
        out.backward(grad_out.to(DEVICE))
        whole = reference_gradient(ids, grad_out, full)
        want = whole.narrow(dim, offset, size)
        got = layer.weight.grad.cpu().narrow(dim, 0, size)
        if not torch.equal(got.view(torch.int16 if dtype != torch.float32 else torch.int32),
                           want.view(torch.int16 if dtype != torch.float32 else torch.int32)):
            return f"gradient {shape}: not the reference's bits"
        # PyTorch's own gradient of the unsharded table, within fp32 rounding of a sum.
        weight = full.float().clone().requires_grad_(True)
        F.embedding(ids.long(), weight).backward(grad_out.float())
        torch.testing.assert_close(got.float(), weight.grad.narrow(dim, offset, size),
                                   atol=1e-2 if dtype != torch.float32 else 1e-5, rtol=1e-2)
    return True


def matrix():
    for dim in (0, 1):
        for placement in ("packed", "equal"):
            exchanges = ("all_reduce", "owned_rows") if dim == 0 else ("auto",)
            for exchange in exchanges:
                for dtype in (torch.float32, torch.bfloat16):
                    for id_dtype in (torch.int32, torch.int64):
                        if dim == 1 and placement == "equal" and H % SIZE:
                            continue  # equal hidden shards must divide H (refused: tested apart)
                        report(f"layer dim{dim} {placement} {exchange} {dtype} {id_dtype}",
                               lambda: check_layer(dim, dtype, placement, exchange, id_dtype))


def chunk_of(tensor, dim):
    """This rank's chunk of `tensor` along `dim` (torch.tensor_split's rule)."""
    return torch.tensor_split(tensor, SIZE, dim=dim)[RANK]


def check_scattered(dim, exchange, scatter_dim, input_layout, shape):
    """A scattered output (and input): this rank's chunk of the unsharded lookup, bit for bit; the
    backward of its chunk of grad_out: the shard of the unsharded gradient, bit for bit."""
    full = table()
    shard, offset, size = shard_of(full, dim)
    layer = tpt.ParallelEmbedding(shard.to(DEVICE), sharding_dim=dim, vocab_exchange=exchange,
                                  output_layout="scattered", input_layout=input_layout,
                                  scatter_dim=scatter_dim)
    ids = ids_for(shape, 7 + len(shape))
    given = chunk_of(ids, scatter_dim) if input_layout == "scattered" else ids
    out = layer(given.to(DEVICE))
    expected = chunk_of(F.embedding(ids, full), scatter_dim)
    if not torch.equal(out.cpu(), expected):
        return f"forward: shape {tuple(out.shape)} vs {tuple(expected.shape)}"
    grad_out = torch.randn(*shape, H, generator=torch.Generator().manual_seed(3))
    out.backward(chunk_of(grad_out, scatter_dim).to(DEVICE))
    want = reference_gradient(ids, grad_out, full).narrow(dim, offset, size)
    if not torch.equal(layer.weight.grad.cpu().view(torch.int32), want.view(torch.int32)):
        return "gradient: not the reference's bits"
    return True


def scattered():
    for dim in (0, 1):
        for exchange in (("all_reduce", "owned_rows") if dim == 0 else ("auto",)):
            for scatter_dim, shape in ((0, (7, 3)), (1, (2, 5)), (0, (1,)), (0, (0, 4))):
                for input_layout in ("replicated", "scattered"):
                    report(f"scattered dim{dim} {exchange} scatter_dim {scatter_dim} {shape} "
                           f"{input_layout} ids",
                           lambda: check_scattered(dim, exchange, scatter_dim, input_layout, shape))
    # Compiled, with dynamic token counts: the fake kernel's chunk shape is the real one's.
    full = table()
    shard, _, _ = shard_of(full, 0)
    layer = tpt.ParallelEmbedding(shard.to(DEVICE), output_layout="scattered")
    compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend="aot_eager")
    results = []
    for n in (5, 8, 1):
        ids = ids_for((n,), n)
        torch._dynamo.mark_dynamic(ids, 0)
        results.append(bool(torch.equal(compiled(ids.to(DEVICE)).cpu(),
                                        chunk_of(F.embedding(ids, full), 0))))
    report("scattered compiled dynamic", lambda: all(results))


def quantized():
    """An int8 vocab shard with its scales: the rows are dequantized exactly (fp32 product, one
    rounding); the table is frozen, so the output needs no gradient."""
    generator = torch.Generator().manual_seed(9)
    full = torch.randint(-128, 128, (V, H), generator=generator, dtype=torch.int8)
    scales = torch.rand(V, generator=generator) + 0.5
    shard, offset, size = shard_of(full, 0)
    layer = tpt.ParallelEmbedding(shard.to(DEVICE), per_token_scale=scales[offset:offset + size].to(DEVICE),
                                  out_dtype=torch.bfloat16)
    ids = ids_for((6, 7), 3)
    out = layer(ids.to(DEVICE)).cpu()
    expected = (full.float() * scales[:, None])[ids].to(torch.bfloat16)
    report("int8 forward", lambda: bool(torch.equal(out, expected)))
    report("int8 output needs no gradient", lambda: out.requires_grad is False
           and layer.weight.requires_grad is False)


def deepcopied():
    """copy.deepcopy on every rank: a second layer over the same group, its own shard copy."""
    import copy

    full = table()
    shard, offset, size = shard_of(full, 0)
    layer = tpt.ParallelEmbedding(shard.to(DEVICE))
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.mul_(2.0)
    ids = ids_for((5, 3), 8)
    report("deepcopy: the original", lambda: bool(torch.equal(layer(ids.to(DEVICE)).cpu(),
                                                              F.embedding(ids, full))))
    report("deepcopy: the copy", lambda: bool(torch.equal(twin(ids.to(DEVICE)).cpu(),
                                                          F.embedding(ids, full * 2.0))))


def compiled():
    """torch.compile(fullgraph=True) with dynamic token counts: the forward and the backward of a
    vocab-parallel layer inside a small model, traced by AOTAutograd (backend aot_eager; the
    inductor backend is test_module.py's, in one process: its C++ builds take a minute here)."""
    full = table()
    shard, offset, size = shard_of(full, 0)
    layer = tpt.ParallelEmbedding(shard.to(DEVICE))
    head = torch.nn.Linear(H, 3).to(DEVICE)

    def model(ids):
        return head(layer(ids)).square().sum()

    step = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    results = []
    for n in (5, 9, 17):
        ids = ids_for((n,), n)
        torch._dynamo.mark_dynamic(ids, 0)
        layer.weight.grad = None
        loss = step(ids.to(DEVICE))
        loss.backward()
        eager_grad = layer.weight.grad.clone()
        layer.weight.grad = None
        model(ids.to(DEVICE)).backward()
        results.append(bool(torch.equal(eager_grad, layer.weight.grad)))
    report("compiled fullgraph dynamic", lambda: all(results))


def llama():
    """The drop-in: a tiny random Llama whose embed_tokens becomes a vocab-parallel layer gives the
    same logits and, after one training step, the same embedding gradient."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        report("llama", lambda: "skipped: transformers is not installed")
        return
    config = LlamaConfig(vocab_size=V * 3, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(DEVICE)
    reference = LlamaForCausalLM(config).to(DEVICE)
    reference.load_state_dict(model.state_dict())
    full = model.model.embed_tokens.weight.detach()
    shard, offset, size = shard_of(full, 0)
    model.model.embed_tokens = tpt.ParallelEmbedding(torch.nn.Parameter(shard))
    ids = ids_for((2, 11), 42, high=config.vocab_size).to(DEVICE)
    logits = model(input_ids=ids, use_cache=False).logits
    expected = reference(input_ids=ids, use_cache=False).logits
    report("llama logits", lambda: bool(torch.equal(logits, expected)))
    logits.square().mean().backward()
    expected.square().mean().backward()
    got = model.model.embed_tokens.weight.grad
    want = reference.model.embed_tokens.weight.grad.narrow(0, offset, size)
    report("llama embedding gradient", lambda: bool(torch.allclose(got, want, atol=1e-6,
                                                                   rtol=1e-5)))


def refusals(role=None):
    """A rank's bad argument, or ranks that disagree, raise on every rank, naming the rank."""
    full = table()
    shard, _, _ = shard_of(full, 0)
    report("bad output_layout on rank 1", lambda: tpt.ParallelEmbedding(
        shard, output_layout="bogus" if RANK == 1 else "replicated") and True)
    # Refused by the module itself, before any communicator exists: agreed through the group.
    report("rank 1's weight is a list", lambda: tpt.ParallelEmbedding(
        shard.tolist() if RANK == 1 else shard) and True)
    report("rank 0's comm_timeout is negative", lambda: tpt.ParallelEmbedding(
        shard, comm_timeout=-1 if RANK == 0 else None) and True)
    wider = torch.randn(shard.shape[0], H + (1 if RANK == 0 else 0))
    report("rank 0's shard is wider", lambda: tpt.ParallelEmbedding(wider) and True)
    report("other sharding_dim on rank 1", lambda: tpt.ParallelEmbedding(
        shard, sharding_dim=1 if RANK == 1 else 0) and True)
    # After the refusals the group still works.
    layer = tpt.ParallelEmbedding(shard)
    ids = ids_for((3, 4), 8)
    if RANK == 1:
        layer.weight.data = shard.clone()  # behind the module's back, on one rank only
    report("rank 1 swapped its weight's data", lambda: layer(ids) is None)
    layer = tpt.ParallelEmbedding(shard)
    report("usable after refusals", lambda: bool(torch.equal(layer(ids), F.embedding(ids, full))))


def missing_rank():
    """Rank 1 never sets the layer up: rank 0 raises within comm_timeout, instead of waiting."""
    full = table()
    shard, _, _ = shard_of(full, 0)
    if RANK == 0:
        start = time.monotonic()
        report("rank 1 never comes", lambda: tpt.ParallelEmbedding(shard, comm_timeout=3) and True)
        report("raised on time", lambda: time.monotonic() - start < 20)
    else:
        time.sleep(8)
        report("rank 1 never comes", lambda: "stayed away")
        report("raised on time", lambda: True)
    os._exit(0)  # the group is out of step: leave without its destructor's collectives


SCENARIOS = {"matrix": matrix, "scattered": scattered, "quantized": quantized, "deepcopied": deepcopied,
             "compiled": compiled, "llama": llama,
             "refusals": refusals, "missing_rank": missing_rank}

if __name__ == "__main__":
    for name in SCENARIO.split(","):  # several in one job: torchrun and torch take seconds to start
        SCENARIOS[name]()
    dist.barrier()
    dist.destroy_process_group()
