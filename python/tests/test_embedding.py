"""tpembed.embedding and a one-rank ParallelEmbedding on NumPy arrays, against reference.py."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

import tpembed
from reference import (QUANTIZED, TABLE_DTYPES, bits, f32_to_bf16_bits, lookup,
                       make_scale, make_table, pack_int4)

V, H = 37, 13  # odd sizes: i4 rows end on a half-filled byte


def ids_with_bad(rng, id_dtype, shape=(3, 5), valid=V):
    ids = rng.integers(0, valid, shape).astype(id_dtype)
    ids.flat[1] = -1          # negative: a zero row
    ids.flat[-1] = valid      # one past the end: a zero row
    return ids


def output_bits(out):
    """Outputs in the reference's encoding: bf16 as uint16 bits (also from ml_dtypes arrays)."""
    if out.dtype.name == "bfloat16":
        out = out.view(np.uint16)
    return bits(out)


# ---- every table dtype x id dtype x output dtype x scale dtype ----------------------------------

MATRIX = [
    (table, ids, out, scale)
    for table, ids, out, scale in itertools.product(
        TABLE_DTYPES, ["int32", "int64"], [None, "f32", "f16", "bf16"],
        [None, "f32", "f16", "bf16"])
    # quantized tables need a scale and a named output dtype
    if not (table in QUANTIZED and (scale is None or out is None))
]


@pytest.mark.parametrize("table_dtype,id_dtype,out_dtype,scale_dtype", MATRIX)
def test_matrix_matches_reference(table_dtype, id_dtype, out_dtype, scale_dtype):
    case = (table_dtype, id_dtype, out_dtype, scale_dtype)
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    table = make_table(table_dtype, V, H, rng)
    ids = ids_with_bad(rng, id_dtype)
    kwargs = dict(table.kwargs)
    scale_values = None
    if scale_dtype is not None:
        scale, scale_values, scale_kwargs = make_scale(scale_dtype, V, rng)
        kwargs.update(scale_kwargs, per_token_scale=scale)
    out = tpembed.embedding(ids, table.array, out_dtype=out_dtype, **kwargs)
    expected = lookup(ids, table.values, scale_values, out_dtype or table_dtype)
    assert out.shape == ids.shape + (H,)
    np.testing.assert_array_equal(output_bits(out), bits(expected))


@pytest.mark.parametrize("table_dtype", TABLE_DTYPES)
def test_padding_rows_follow_the_table(table_dtype):
    rng = np.random.default_rng(7)
    table = make_table(table_dtype, V, H, rng)
    padding = make_table(table_dtype, 3, H, rng)
    kwargs = dict(table.kwargs)
    scale = scale_values = padding_scale = padding_scale_values = None
    out_dtype = "f32" if table_dtype in QUANTIZED else None
    if table_dtype in QUANTIZED:
        scale, scale_values, _ = make_scale("f32", V, rng)
        padding_scale, padding_scale_values, _ = make_scale("f32", 3, rng)
    ids = np.array([[0, V - 1, V, V + 1], [V + 2, V + 3, -5, 4]], np.int64)  # V+3: past padding
    out = tpembed.embedding(ids, table.array, padding=padding.array, per_token_scale=scale,
                            padding_scale=padding_scale, out_dtype=out_dtype, **kwargs)
    expected = lookup(ids, table.values, scale_values, out_dtype or table_dtype,
                      padding=padding.values, padding_scale=padding_scale_values)
    np.testing.assert_array_equal(output_bits(out), bits(expected))


def test_bad_ids_give_zero_rows_and_strict_mode_raises_index_error():
    rng = np.random.default_rng(1)
    table = make_table("f32", V, H, rng)
    ids = np.array([[3, -7], [V + 9, 2]], np.int64)
    out = tpembed.embedding(ids, table.array)
    assert np.all(out[0, 1] == 0) and np.all(out[1, 0] == 0)
    assert not np.signbit(out[0, 1]).any()  # +0.0
    with pytest.raises(tpembed.OutOfRangeError) as raised:
        tpembed.embedding(ids, table.array, strict=True)
    error = raised.value
    assert isinstance(error, IndexError)
    assert (error.first_bad_id, error.position, error.count) == (-7, 1, 2)
    assert "-7" in str(error) and "out of range" in str(error)


def test_writes_into_out_and_returns_it():
    rng = np.random.default_rng(2)
    table = make_table("f16", V, H, rng)
    ids = np.arange(6, dtype=np.int32).reshape(2, 3)
    out = np.full((2, 3, H), 7.0, np.float32)
    result = tpembed.embedding(ids, table.array, out=out, out_dtype="f32")
    assert result is out
    np.testing.assert_array_equal(out, table.values[ids])


def test_bf16_output_without_ml_dtypes_is_uint16_bits_into_out():
    rng = np.random.default_rng(3)
    table = make_table("f32", V, H, rng)
    ids = np.array([1, 2, 3], np.int64)
    out = np.zeros((3, H), np.uint16)
    tpembed.embedding(ids, table.array, out=out, out_dtype="bf16")
    np.testing.assert_array_equal(out, f32_to_bf16_bits(table.values[ids]))


def test_empty_and_scalar_ids():
    rng = np.random.default_rng(4)
    table = make_table("i8", V, H, rng)
    scale, scale_values, _ = make_scale("f32", V, rng)
    empty = tpembed.embedding(np.zeros((0, 4), np.int64), table.array, per_token_scale=scale,
                              out_dtype="f16")
    assert empty.shape == (0, 4, H) and empty.dtype == np.float16
    one = tpembed.embedding(np.array(5, np.int32), table.array, per_token_scale=scale,
                            out_dtype=np.float32)
    assert one.shape == (H,)
    np.testing.assert_array_equal(one, table.values[5] * scale_values[5])


def test_read_only_inputs_are_taken_without_copy():
    rng = np.random.default_rng(5)
    table = make_table("f32", V, H, rng)
    weight = table.array.copy()
    weight.setflags(write=False)
    ids = np.array([0, 1], np.int64)
    ids.setflags(write=False)
    np.testing.assert_array_equal(tpembed.embedding(ids, weight), table.values[:2])


def test_dtype_aliases():
    rng = np.random.default_rng(6)
    table = make_table("f32", V, H, rng)
    ids = np.array([1], np.int64)
    for alias in ("f16", "float16", np.float16, np.dtype(np.float16)):
        assert tpembed.embedding(ids, table.array, out_dtype=alias).dtype == np.float16


# ---- refusals: never a silent conversion ---------------------------------------------------------

def refused(error_type, match, *args, **kwargs):
    with pytest.raises(error_type, match=match):
        tpembed.embedding(*args, **kwargs)


def test_refuses_dtypes_it_does_not_take():
    ids = np.array([0, 1], np.int64)
    table = np.ones((V, H), np.float32)
    refused(ValueError, "float64", ids, np.ones((V, H), np.float64))
    refused(ValueError, "ids", ids.astype(np.float32), table)  # the library's own check
    refused(ValueError, "float64", ids.astype(np.float64), table)
    refused(ValueError, "uint64", ids.astype(np.uint64), table)
    refused(ValueError, "uint8", ids, np.ones((V, H), np.uint8))  # fp8/i4 bits need declaring
    refused(ValueError, "declared f16", ids, np.ones((V, H), np.int8), weight_dtype="f16")
    refused(ValueError, "not a tpembed dtype", ids, table, out_dtype="f64")
    refused(ValueError, "not a tpembed dtype", ids, table, weight_dtype="int3")


def test_refuses_quantized_tables_without_scale_or_output_dtype():
    ids = np.array([0], np.int64)
    table = np.ones((V, H), np.int8)
    refused(ValueError, "per_token_scale", ids, table, out_dtype="f32")
    refused(ValueError, "out_dtype", ids, table, per_token_scale=np.ones(V, np.float32))
    refused(ValueError, "entries", ids, table, per_token_scale=np.ones(V - 1, np.float32),
            out_dtype="f32")


def test_refuses_int4_without_or_with_wrong_hidden():
    ids = np.array([0], np.int64)
    packed = pack_int4(np.zeros((V, H), np.int8))
    scale = np.ones(V, np.float32)
    refused(ValueError, "hidden", ids, packed, weight_dtype="i4", per_token_scale=scale,
            out_dtype="f32")
    refused(ValueError, "ceil", ids, packed, weight_dtype="i4", hidden=H + 2,
            per_token_scale=scale, out_dtype="f32")
    refused(ValueError, "i4 tables only", ids, np.ones((V, H), np.float32), hidden=H)


def test_refuses_non_contiguous_arrays():
    ids = np.array([0, 1], np.int64)
    table = np.ones((H, V), np.float32).T  # a transposed view
    refused(ValueError, "C-contiguous", ids, table)
    refused(ValueError, "C-contiguous", np.arange(8, dtype=np.int64)[::2],
            np.ones((V, H), np.float32))
    out = np.zeros((2, 2 * H), np.float32)[:, ::2]
    refused(ValueError, "C-contiguous", ids, np.ones((V, H), np.float32), out=out)


def test_refuses_outputs_that_do_not_fit():
    ids = np.array([0, 1], np.int64)
    table = np.ones((V, H), np.float32)
    refused(ValueError, "out", ids, table, out=np.zeros((2, H + 1), np.float32))
    refused(ValueError, "out", ids, table, out=np.zeros((2, H), np.float16))
    refused(ValueError, "out", ids, table, out=np.zeros((2, H), np.float64))
    read_only = np.zeros((2, H), np.float32)
    read_only.setflags(write=False)
    refused(ValueError, "writable", ids, table, out=read_only)


def test_refuses_non_arrays():
    with pytest.raises(TypeError, match="array"):
        tpembed.embedding([0, 1], np.ones((V, H), np.float32))


def test_refuses_bad_shapes():
    ids = np.array([0], np.int64)
    refused(ValueError, "2-D", ids, np.ones((V,), np.float32))
    refused(ValueError, "padding", ids, np.ones((V, H), np.float32),
            padding=np.ones((2, H + 1), np.float32))


# ---- ml_dtypes, where installed ------------------------------------------------------------------

def test_ml_dtypes_bf16_and_fp8_arrays():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(8)
    values = rng.standard_normal((V, H)).astype(np.float32)
    table = values.astype(ml_dtypes.bfloat16)
    ids = np.array([[4, 0], [V - 1, 9]], np.int64)
    out = tpembed.embedding(ids, table)
    assert out.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out.view(np.uint16), table.view(np.uint16)[ids])
    fp8 = values.astype(ml_dtypes.float8_e4m3fn)
    scale = np.ones(V, np.float32)
    out = tpembed.embedding(ids, fp8, per_token_scale=scale, out_dtype="f32")
    np.testing.assert_array_equal(out, fp8.astype(np.float32)[ids])


# ---- a one-rank ParallelEmbedding ---------------------------------------------------------------

def test_parallel_embedding_single_rank_forward_and_layout():
    rng = np.random.default_rng(9)
    table = make_table("i4", V, H, rng)
    scale, scale_values, _ = make_scale("bf16", V, rng)
    layer = tpembed.ParallelEmbedding(table.array, per_token_scale=scale, scale_dtype="bf16",
                                      out_dtype="f16", weight_dtype="i4", hidden=H)
    layout = layer.layout
    assert (layout.tp_size, layout.tp_rank, layout.global_rows, layout.global_cols) == (1, 0, V, H)
    assert (layout.table_dtype, layout.out_dtype, layout.offsets, layout.sizes) == (
        "i4", "f16", (0,), (V,))
    for step in range(3):
        ids = ids_with_bad(rng, np.int64, shape=(2, 4 + step))
        out = layer(ids)
        expected = lookup(ids, table.values, scale_values, "f16")
        np.testing.assert_array_equal(bits(out), bits(expected))
        assert layer.last_bad_id_count() == 2
    assert layer.bad_id_counter == 0
    assert "tp 0/1" in repr(layer)


def test_parallel_embedding_keeps_its_arrays_alive():
    rng = np.random.default_rng(10)
    table = make_table("f32", V, H, rng)
    layer = tpembed.ParallelEmbedding(table.array.copy())  # the only reference is the layer's
    ids = np.array([3, 1], np.int64)
    np.testing.assert_array_equal(layer.forward(ids), table.values[ids])


def test_parallel_embedding_without_communicator_is_one_rank():
    with pytest.raises(ValueError, match="tp_size 2"):
        tpembed.ParallelEmbedding(np.ones((V, H), np.float32), tp_size=2)
    with pytest.raises(TypeError, match="comm"):
        tpembed.ParallelEmbedding(np.ones((V, H), np.float32), comm=42)


def test_shard_range():
    assert tpembed.shard_range(10, 4, 1, "equal") == (3, 3)
    assert tpembed.shard_range(10, 4, 3, "equal") == (9, 3)  # rows 10, 11: zero padding
    assert tpembed.shard_range(10, 4, 1, "packed") == (3, 3)
    with pytest.raises(ValueError, match="placement"):
        tpembed.shard_range(10, 4, 1, "round-robin")


def test_build_queries():
    assert isinstance(tpembed.cuda_built(), bool)
    assert tpembed.cuda_device_count() >= 0
    assert isinstance(tpembed.mpi_available(), bool)



def test_nccl_communicator_arguments_are_checked():
    with pytest.raises(TypeError, match="unique_id must be bytes"):
        tpembed.NcclCommunicator("not bytes", 0, 1)


def test_an_nccl_communicator_sets_up_one_layer_only():
    comm = tpembed.NcclCommunicator(bytes(128), 0, 1)
    tpembed._communicator(comm)  # what the first ParallelEmbedding's set-up does: the id is taken
    with pytest.raises(RuntimeError, match="already set up a ParallelEmbedding.*new tpembed.nccl_unique_id"):
        tpembed._communicator(comm)
