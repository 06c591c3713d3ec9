"""ParallelEmbedding over MPI with mpi4py: every rank's output against the unsharded reference.

Run under MPI (the tests skip in a single process):
    mpirun -np 2 --oversubscribe --allow-run-as-root \
        python3 -m pytest python/tests/test_parallel_mpi.py
Every test is collective: all ranks construct and call the same layers in the same order.
"""

from __future__ import annotations

import numpy as np
import pytest

import tpembed
from reference import (QUANTIZED, TABLE_DTYPES, bits, lookup, make_scale, make_table, pack_int4,
                       unpack_int4)

MPI = pytest.importorskip("mpi4py.MPI")
WORLD = MPI.COMM_WORLD
RANK, SIZE = WORLD.Get_rank(), WORLD.Get_size()

pytestmark = [
    pytest.mark.skipif(not tpembed.mpi_available(), reason="tpembed was built without MPI"),
    pytest.mark.skipif(SIZE < 2, reason="needs mpirun -np 2 (or more)"),
]

V, H = 37, 13  # neither divides by 2 or 4: uneven shards


def full_problem(table_dtype, seed):
    """The same table, scales and ids on every rank (same seed)."""
    rng = np.random.default_rng(seed)
    table = make_table(table_dtype, V, H, rng)
    scale = make_scale("f32", V, rng) if table_dtype in QUANTIZED else None
    ids = rng.integers(0, V, (4, 5)).astype(np.int64)
    ids[0, 0], ids[3, 4] = -2, V + 3  # bad ids: zero rows on every rank
    return table, scale, ids


def zero_padded_rows(array, offset, rows):
    shard = np.zeros((rows,) + array.shape[1:], array.dtype)
    available = array[offset:offset + rows]
    shard[:available.shape[0]] = available
    return shard


def columns(table, first, count):
    """Columns [first, first + count) of a table in its encoding (i4 repacked)."""
    if table.dtype == "i4":
        return pack_int4(unpack_int4(table.array, H)[:, first:first + count])
    return np.ascontiguousarray(table.array[:, first:first + count])


@pytest.mark.parametrize("placement", ["packed", "equal"])
@pytest.mark.parametrize("table_dtype", TABLE_DTYPES)
def test_vocab_sharding_matches_the_unsharded_lookup(table_dtype, placement):
    table, scale, ids = full_problem(table_dtype, seed=11)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, placement)
    kwargs = dict(table.kwargs)
    if scale is not None:
        kwargs["per_token_scale"] = zero_padded_rows(scale[0], offset, rows)
    if placement == "equal":
        kwargs["vocab_size"] = V
    out_dtype = "bf16" if table_dtype in QUANTIZED else None
    layer = tpembed.ParallelEmbedding(zero_padded_rows(table.array, offset, rows), comm=WORLD,
                                      placement=placement, out_dtype=out_dtype, **kwargs)
    assert layer.layout.tp_size == SIZE and layer.layout.global_rows == V
    out = layer.forward(ids)
    expected = lookup(ids, table.values, None if scale is None else scale[1],
                      out_dtype or table_dtype)
    np.testing.assert_array_equal(bits(out), bits(expected))
    assert layer.last_bad_id_count() == 2


@pytest.mark.parametrize("exchange", ["all_reduce", "owned_rows", "auto"])
def test_every_vocab_exchange_matches_the_unsharded_lookup(exchange):
    table, scale, ids = full_problem("i8", seed=21)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    layer = tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                      per_token_scale=scale[0][offset:offset + rows],
                                      placement="packed", out_dtype="f32", vocab_exchange=exchange,
                                      collective_checks=False)
    # Host tables over MPI: auto picks the owned-row exchange.
    assert layer.layout.vocab_exchange == ("owned_rows" if exchange == "auto" else exchange)
    out = layer.forward(ids)
    np.testing.assert_array_equal(bits(out), bits(lookup(ids, table.values, scale[1], "f32")))
    assert layer.last_bad_id_count() == 2


def test_peer_rows_with_host_tables_raises_on_every_rank():
    table, _, _ = full_problem("f32", seed=22)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    with pytest.raises(RuntimeError, match="peer_rows vocab exchange cannot run: rank 0 of the tp "
                                           "group cannot share its table: its table is in host memory"):
        tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                  placement="packed", vocab_exchange="peer_rows")


def test_an_unknown_vocab_exchange_is_a_value_error():
    table, _, _ = full_problem("f32", seed=23)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    with pytest.raises(ValueError, match="vocab_exchange 'ring' is none of 'auto', 'all_reduce'"):
        tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                  placement="packed", vocab_exchange="ring")
    with pytest.raises(TypeError, match="vocab_exchange must be a str"):
        tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                  placement="packed", vocab_exchange=1)


def test_peer_rows_on_the_gpu_matches_f_embedding_and_is_capturable():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("SKIPPED: no CUDA device (peer_rows needs GPU tables)")
    torch.cuda.set_device(RANK % torch.cuda.device_count())
    generator = torch.Generator().manual_seed(24)
    full = torch.randn(1000, 256, generator=generator).to(torch.bfloat16)
    offset, rows = tpembed.shard_range(1000, SIZE, RANK, "packed")
    shard = full[offset:offset + rows].cuda()
    auto = tpembed.ParallelEmbedding(shard, comm=WORLD, placement="packed")
    assert auto.layout.vocab_exchange == "owned_rows"  # auto never picks peer_rows
    del auto
    layer = tpembed.ParallelEmbedding(shard, comm=WORLD, placement="packed",
                                      vocab_exchange="peer_rows", collective_checks=False)
    assert layer.layout.vocab_exchange == "peer_rows"
    ids = torch.randint(0, 1000, (64,), generator=generator).cuda()
    out = torch.empty(64, 256, dtype=torch.bfloat16, device="cuda")
    layer.forward(ids, out)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layer.forward(ids, out)
    for seed in (1, 2):
        ids.copy_(torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(seed)))
        out.fill_(7)
        graph.replay()
        torch.cuda.synchronize()
        expected = torch.nn.functional.embedding(ids.cpu(), full)
        assert torch.equal(out.cpu().view(torch.int16), expected.view(torch.int16))
    del graph
    del layer  # collective (a barrier): every rank drops its layer here


@pytest.mark.parametrize("table_dtype", TABLE_DTYPES)
def test_hidden_sharding_with_padding_matches_the_unsharded_lookup(table_dtype):
    table, scale, ids = full_problem(table_dtype, seed=12)
    rng = np.random.default_rng(13)
    padding = make_table(table_dtype, 2, H, rng)
    padding_scale = make_scale("f32", 2, rng) if scale is not None else None
    ids[1, 1], ids[2, 2] = V, V + 1  # the padding rows
    first, count = tpembed.shard_range(H, SIZE, RANK, "packed")
    kwargs = dict(table.kwargs, hidden=count) if table_dtype == "i4" else dict(table.kwargs)
    if scale is not None:  # scales are per row: every hidden shard holds all of them
        kwargs.update(per_token_scale=scale[0], padding_scale=padding_scale[0])
    out_dtype = "f32" if table_dtype in QUANTIZED else None
    layer = tpembed.ParallelEmbedding(columns(table, first, count), comm=WORLD, sharding_dim=1,
                                      placement="packed", out_dtype=out_dtype,
                                      padding=columns(padding, first, count), **kwargs)
    assert layer.layout.global_cols == H and layer.layout.padding_rows == 2
    out = layer.forward(ids)
    expected = lookup(ids, table.values, None if scale is None else scale[1],
                      out_dtype or table_dtype, padding=padding.values,
                      padding_scale=None if scale is None else padding_scale[1])
    np.testing.assert_array_equal(bits(out), bits(expected))


def test_groups_of_one_rank_in_one_world():
    table, _, ids = full_problem("f16", seed=14)
    layer = tpembed.ParallelEmbedding(table.array, comm="mpi", tp_group=[RANK])
    assert (layer.layout.tp_size, layer.layout.tp_rank) == (1, 0)
    np.testing.assert_array_equal(bits(layer(ids)), bits(lookup(ids, table.values, None, "f16")))


def test_strict_mode_raises_on_every_rank():
    table, _, ids = full_problem("f32", seed=15)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    layer = tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                      placement="packed", strict=True)
    with pytest.raises(tpembed.OutOfRangeError) as raised:
        layer.forward(ids)
    assert raised.value.first_bad_id == -2 and raised.value.position == 0
    good = np.clip(ids, 0, V - 1)
    np.testing.assert_array_equal(layer.forward(good), table.values[good])


def test_a_shard_that_does_not_fit_raises_on_every_rank():
    table, _, _ = full_problem("f32", seed=16)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    shard = table.array[offset:offset + rows]
    if RANK == 1:
        shard = shard.astype(np.float16)
    with pytest.raises(ValueError, match="rank 1 holds a f16 table but rank 0 holds a f32 table"):
        tpembed.ParallelEmbedding(shard, comm=WORLD, placement="packed")


def test_different_id_counts_raise_on_every_rank():
    table, _, ids = full_problem("f32", seed=17)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    layer = tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                      placement="packed")
    with pytest.raises(ValueError, match="same ids"):
        layer.forward(ids[:RANK + 1])


def test_a_sub_communicator_is_a_tp_group():
    # Ranks split by parity: each half shards the table over its own members (a singleton half
    # holds the whole table) and must give the whole table's rows.
    half = WORLD.Split(RANK % 2, RANK)
    try:
        table, _, ids = full_problem("f32", seed=23)
        offset, rows = tpembed.shard_range(V, half.Get_size(), half.Get_rank(), "packed")
        layer = tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=half,
                                          placement="packed")
        out = layer.forward(ids)
        flat = ids.reshape(-1)
        valid = (flat >= 0) & (flat < V)
        expected = np.zeros((flat.size, H), np.float32)
        expected[valid] = table.array[flat[valid]]
        assert out.shape == ids.shape + (H,)
        assert np.array_equal(out.reshape(-1, H).view(np.uint32), expected.view(np.uint32))
    finally:
        half.Free()


# ---- from a checkpoint: each rank reads its shard ---------------------------------------------

def shared_checkpoint(tmp_path, tensors, metadata=None):
    """Rank 0 writes the file; every rank gets its path."""
    from checkpoints import write_safetensors
    path = str(tmp_path / "model.safetensors") if RANK == 0 else None
    if RANK == 0:
        write_safetensors(path, tensors, metadata)
    path = WORLD.bcast(path)
    WORLD.Barrier()
    return path


@pytest.mark.parametrize("sharding_dim,placement", [(0, "equal"), (0, "packed"), (1, "packed")])
@pytest.mark.parametrize("table_dtype", ["bf16", "i8", "i4"])
def test_from_checkpoint_each_rank_reads_its_shard(tmp_path, table_dtype, sharding_dim, placement):
    from checkpoints import STORED_DTYPE
    table, scale, ids = full_problem(table_dtype, seed=18)
    tensors = {"embed.weight": (STORED_DTYPE[table_dtype], table.array)}
    kwargs = {}
    if scale is not None:
        tensors["embed.scale"] = ("F32", scale[0])
        kwargs = {"scale_tensor": "embed.scale", "out_dtype": "f16"}
    metadata = {"tpembed.int4_columns.embed.weight": str(H)} if table_dtype == "i4" else None
    path = shared_checkpoint(tmp_path, tensors, metadata)
    layer = tpembed.ParallelEmbedding.from_checkpoint(path, "embed.weight", comm=WORLD,
                                                      sharding_dim=sharding_dim,
                                                      placement=placement, **kwargs)
    assert (layer.layout.global_rows, layer.layout.global_cols) == (V, H)
    expected = lookup(ids, table.values, None if scale is None else scale[1],
                      kwargs.get("out_dtype", table_dtype))
    out = layer.forward(ids)
    if out.dtype.name == "bfloat16":  # ml_dtypes
        out = out.view(np.uint16)
    np.testing.assert_array_equal(bits(out), bits(expected))


def test_a_checkpoint_error_on_one_rank_raises_on_every_rank(tmp_path):
    table, _, _ = full_problem("f32", seed=19)
    path = shared_checkpoint(tmp_path, {"embed.weight": ("F32", table.array)})
    name = "embed.weight" if RANK == 0 else "embed.missing"
    with pytest.raises(RuntimeError, match="embed.missing"):
        tpembed.ParallelEmbedding.from_checkpoint(path, name, comm=WORLD)


def chunk(array, dim):
    """This rank's chunk along `dim` (torch.tensor_split's rule: the first n % SIZE get one more)."""
    return np.array_split(array, SIZE, axis=dim)[RANK]


@pytest.mark.parametrize("input_layout", ["replicated", "scattered"])
@pytest.mark.parametrize("scatter_dim", [0, 1])
@pytest.mark.parametrize("sharding_dim,exchange", [(0, "all_reduce"), (0, "owned_rows"),
                                                   (1, "auto")])
@pytest.mark.parametrize("table_dtype", ["f32", "bf16", "i8"])
def test_scattered_layouts_give_each_rank_its_chunk(table_dtype, sharding_dim, exchange,
                                                    scatter_dim, input_layout):
    table, scale, ids = full_problem(table_dtype, seed=23)
    total = V if sharding_dim == 0 else H
    offset, size = tpembed.shard_range(total, SIZE, RANK, "packed")
    kwargs = dict(table.kwargs)
    if sharding_dim == 0:
        shard = table.array[offset:offset + size]
        if scale is not None:
            kwargs["per_token_scale"] = scale[0][offset:offset + size]
    else:
        shard = columns(table, offset, size)
        if table.dtype == "i4":
            kwargs["hidden"] = size
        if scale is not None:
            kwargs["per_token_scale"] = scale[0]
    layer = tpembed.ParallelEmbedding(shard, comm=WORLD, sharding_dim=sharding_dim,
                                      vocab_exchange=exchange, output_layout="scattered",
                                      input_layout=input_layout, scatter_dim=scatter_dim,
                                      out_dtype="f32" if table_dtype == "i8" else None, **kwargs)
    assert (layer.layout.output_layout, layer.layout.input_layout, layer.layout.scatter_dim) == \
        ("scattered", input_layout, scatter_dim)
    given = np.ascontiguousarray(chunk(ids, scatter_dim)) if input_layout == "scattered" else ids
    out = layer.forward(given)
    expected = chunk(lookup(ids, table.values, None if scale is None else scale[1],
                            "f32" if table_dtype == "i8" else table_dtype), scatter_dim)
    np.testing.assert_array_equal(bits(out), bits(np.ascontiguousarray(expected)))


def test_scattered_input_with_a_replicated_output_raises_on_every_rank():
    table, _, _ = full_problem("f32", seed=29)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    with pytest.raises(ValueError, match="scattered"):
        tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                  input_layout="scattered")
