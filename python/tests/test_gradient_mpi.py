"""ParallelEmbedding.backward over MPI ranks: the shards' gradients, laid side by side, are the
unsharded tpembed.embedding_backward() bit for bit (which test_gradient.py checks against the
documented order), for vocab and hidden shards of uneven sizes.

Run under MPI (test_gradient.py launches it on 2 ranks; the tests skip in a single process):
    mpirun -np 2 --oversubscribe --allow-run-as-root \\
        python3 -m pytest python/tests/test_gradient_mpi.py
Every test is collective: all ranks construct and call the same layers in the same order.
"""

from __future__ import annotations

import numpy as np
import pytest

import tpembed
from reference import bits, make_table, round_to

WORLD = pytest.importorskip("mpi4py.MPI").COMM_WORLD
RANK, SIZE = WORLD.Get_rank(), WORLD.Get_size()
pytestmark = pytest.mark.skipif(SIZE < 2 or not tpembed.mpi_available(),
                                reason="needs tpembed built with MPI, under mpirun -np 2 or more")

V, H = 37, 13  # neither divides by 2, 3 or 4: uneven shards


def problem(seed, grad_dtype):
    """The same table, ids (hot rows, bad ids, the padding_idx) and grad_out on every rank."""
    rng = np.random.default_rng(seed)
    table = make_table("bf16", V, H, rng)
    ids = np.where(rng.random(600) < 0.5, 3, rng.integers(0, V, 600)).reshape(40, 15)
    ids[0, :3] = [-1, V, 11]
    # Many binades, so that a sum in another order would round differently (even for bf16).
    values = rng.standard_normal((40, 15, H)) * 2.0 ** rng.integers(-12, 12, (40, 15, H))
    grad_out = round_to(values.astype(np.float32), grad_dtype)
    declared = {"grad_out_dtype": "bf16"} if grad_dtype == "bf16" else {}
    return table, ids, grad_out, declared


def side_by_side(shard, axis):
    return np.concatenate(WORLD.allgather(np.asarray(shard)), axis=axis)


def vocab_backward(placement, grad_dtype, out_dtype):
    """(this rank's gradient, its layer, the problem, its shard's offset and rows)."""
    table, ids, grad_out, declared = problem(5, grad_dtype)
    offset, rows = tpembed.shard_range(V, SIZE, RANK, placement)
    shard = np.zeros((rows, H), table.array.dtype)
    shard[:max(0, min(rows, V - offset))] = table.array[offset:offset + rows]
    extra = {"vocab_size": V} if placement == "equal" else {}
    layer = tpembed.ParallelEmbedding(shard, comm=WORLD, placement=placement,
                                      weight_dtype="bf16", **extra)
    got = layer.backward(ids, grad_out, padding_idx=11, out_dtype=out_dtype, **declared)
    assert got.shape == (rows, H)
    return got, layer, (ids, grad_out, declared), offset, rows


@pytest.mark.parametrize("placement", ["packed", "equal"])
@pytest.mark.parametrize("grad_dtype,out_dtype", [("f32", "f32"), ("bf16", "f32"),
                                                  ("bf16", "bf16")])
def test_a_vocab_shard_is_the_op_on_its_rows(placement, grad_dtype, out_dtype):
    got, layer, (ids, grad_out, declared), offset, rows = vocab_backward(placement, grad_dtype,
                                                                         out_dtype)
    want = tpembed.embedding_backward(ids, grad_out, rows, row_offset=offset, valid_ids=V,
                                      padding_idx=11, out_dtype=out_dtype, **declared)
    np.testing.assert_array_equal(bits(got), bits(want))
    if offset + rows > V:
        assert (bits(got[V - offset:]) == 0).all()  # an equal last shard's rows past the vocab
    counts = layer.last_gradient_counts()
    total = {key: sum(WORLD.allgather(value)) for key, value in counts.items()}
    unowned = total.pop("unowned")
    assert total == {"accumulated": 600 - 2 - int((ids == 11).sum()), "out_of_range": 2 * SIZE,
                     "ignored": int((ids == 11).sum()) * SIZE}
    assert unowned == (SIZE - 1) * total["accumulated"]


@pytest.mark.parametrize("placement", ["packed", "equal"])
@pytest.mark.parametrize("grad_dtype", ["f32", "bf16"])
def test_vocab_shards_side_by_side_are_the_unsharded_gradient(placement, grad_dtype):
    got, _, (ids, grad_out, declared), _, _ = vocab_backward(placement, grad_dtype, "f32")
    want = tpembed.embedding_backward(ids, grad_out, V, padding_idx=11, **declared)
    laid = side_by_side(got, 0)
    ok = np.array_equal(bits(laid[:V]), bits(want))
    assert all(WORLD.allgather(ok)), "some shard's rows differ from the unsharded gradient's"


@pytest.mark.parametrize("whole", [True, False])
def test_hidden_shards_are_the_unsharded_gradient(whole):
    """Each rank's columns, from the whole grad_out or from its own columns of it, accumulated
    into a bf16 gradient."""
    table, ids, grad_out, declared = problem(9, "bf16")
    offset, cols = tpembed.shard_range(H, SIZE, RANK, "packed")
    layer = tpembed.ParallelEmbedding(np.ascontiguousarray(table.array[:, offset:offset + cols]),
                                      comm=WORLD, sharding_dim=1, placement="packed",
                                      weight_dtype="bf16")
    rng = np.random.default_rng(17)
    start = round_to(rng.standard_normal((V, H)).astype(np.float32), "bf16")
    into = np.ascontiguousarray(start[:, offset:offset + cols])
    mine = grad_out if whole else np.ascontiguousarray(grad_out[..., offset:offset + cols])
    assert layer.backward(ids, mine, into, accumulate=True, out_dtype="bf16", **declared) is into
    want = np.array(start)
    tpembed.embedding_backward(ids, grad_out, V, grad_weight=want, accumulate=True,
                               out_dtype="bf16", **declared)
    np.testing.assert_array_equal(side_by_side(into, 1), want)
    assert layer.last_gradient_counts() == {"accumulated": 598, "unowned": 0, "out_of_range": 2,
                                            "ignored": 0}


def test_repeats_give_the_same_bits_on_every_rank():
    table, ids, grad_out, declared = problem(13, "bf16")
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    layer = tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                      placement="packed", weight_dtype="bf16")
    first = layer.backward(ids, grad_out, **declared)
    for _ in range(9):
        np.testing.assert_array_equal(bits(layer.backward(ids, grad_out, **declared)), bits(first))


def test_an_argument_refused_on_one_rank_raises_on_every_rank():
    table, ids, grad_out, declared = problem(21, "f32")
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    layer = tpembed.ParallelEmbedding(table.array[offset:offset + rows], comm=WORLD,
                                      placement="packed", weight_dtype="bf16", comm_timeout=30)
    bad = grad_out.astype(np.float64) if RANK == SIZE - 1 else grad_out
    with pytest.raises(tpembed.ArgumentError, match=f"rank {SIZE - 1}.*grad_out"):
        layer.backward(ids, bad)
    # The layer still works on every rank afterwards.
    assert layer.backward(ids, grad_out).shape == (rows, H)
