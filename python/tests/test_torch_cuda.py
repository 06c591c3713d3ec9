"""tpembed on PyTorch CUDA tensors: float tables bit for bit against torch.nn.functional.embedding,
quantized tables against gather-then-multiply, on the caller's stream and inside a captured CUDA
graph. Skips without PyTorch, a CUDA device, or a CUDA build of tpembed.
"""

from __future__ import annotations

import itertools

import pytest

import tpembed

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and tpembed.cuda_built() and tpembed.cuda_device_count() > 0),
    reason="needs PyTorch with CUDA, a visible GPU and tpembed built with CUDA")

V, H = 733, 257  # odd: int4 rows end on a half-filled byte, no vector width divides H
DEVICE = "cuda"
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
INT_VIEW = {4: torch.int32, 2: torch.int16, 1: torch.int8}


def _cases(*axes):
    """Every combination of the axes, as a list (pytest wants a collection)."""
    return list(itertools.product(*axes))


def bits(tensor):
    """Raw bits, so that -0.0 and +0.0 differ."""
    return tensor.contiguous().view(INT_VIEW[tensor.element_size()])


def assert_bit_equal(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert actual.device == expected.device
    mismatch = (bits(actual) != bits(expected)).nonzero()
    assert mismatch.numel() == 0, (
        f"{mismatch.shape[0]} elements differ; first at {mismatch[0].tolist()}: "
        f"{actual[tuple(mismatch[0])].item()} vs {expected[tuple(mismatch[0])].item()}")


def generator(seed):
    return torch.Generator(device=DEVICE).manual_seed(seed)


def float_table(dtype, rows=V, seed=0):
    g = generator(seed)
    table = torch.randn(rows, H, device=DEVICE, generator=g) * 4.0
    table[0, 0] = -0.0
    return table.to(TORCH_DTYPES[dtype])


def random_ids(id_dtype, shape=(7, 19), seed=1, high=V):
    return torch.randint(0, high, shape, device=DEVICE, generator=generator(seed), dtype=id_dtype)


# ---- quantized tables and their gather-then-multiply reference --------------------------------

def quantized_table(dtype, rows=V, seed=2):
    """(what tpembed takes, its kwargs, the table as float32 rows)."""
    g = generator(seed)
    if dtype == "i8":
        table = torch.randint(-128, 128, (rows, H), device=DEVICE, generator=g, dtype=torch.int8)
        return table, {}, table.float()
    if dtype == "fp8_e4m3":
        values = torch.randn(rows, H, device=DEVICE, generator=g) * 8.0
        table = values.to(torch.float8_e4m3fn)
        return table, {}, table.float()
    values = torch.randint(-8, 8, (rows, H + 1), device=DEVICE, generator=g, dtype=torch.int16)
    values[:, H] = 0
    nibbles = (values & 0xF).to(torch.uint8)
    packed = (nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)).contiguous()  # low nibble first
    return packed, {"weight_dtype": "i4", "hidden": H}, values[:, :H].float()


def scales(dtype, rows=V, seed=3):
    g = generator(seed)
    return ((torch.rand(rows, device=DEVICE, generator=g) * 4.0 - 2.0)).to(TORCH_DTYPES[dtype])


def gather_then_multiply(ids, rows_f32, scale, out_dtype):
    product = rows_f32[ids.long()] * scale.float()[ids.long()].unsqueeze(-1)
    return product.to(TORCH_DTYPES[out_dtype])


# ---- float tables: bit for bit against F.embedding -----------------------------------------------

@pytest.mark.parametrize("table_dtype,id_dtype", _cases(
    ["f32", "f16", "bf16"], [torch.int32, torch.int64]))
def test_float_tables_match_f_embedding_bit_for_bit(table_dtype, id_dtype):
    table = float_table(table_dtype)
    ids = random_ids(id_dtype)
    ids[0, 0] = 0  # the -0.0 element
    out = tpembed.embedding(ids, table)
    torch.cuda.synchronize()
    assert_bit_equal(out, F.embedding(ids, table))


@pytest.mark.parametrize("table_dtype,out_dtype,scale_dtype", _cases(
    ["f32", "f16", "bf16"], ["f32", "f16", "bf16"], [None, "f32", "bf16"]))
def test_float_tables_with_conversion_and_scales(table_dtype, out_dtype, scale_dtype):
    table = float_table(table_dtype, seed=4)
    ids = random_ids(torch.int64, seed=5)
    if scale_dtype is None:
        out = tpembed.embedding(ids, table, out_dtype=out_dtype)
        expected = F.embedding(ids, table).float().to(TORCH_DTYPES[out_dtype])
    else:
        scale = scales(scale_dtype)
        out = tpembed.embedding(ids, table, per_token_scale=scale, out_dtype=out_dtype)
        expected = gather_then_multiply(ids, table.float(), scale, out_dtype)
    torch.cuda.synchronize()
    assert_bit_equal(out, expected)


# ---- quantized tables: against gather-then-multiply ----------------------------------------------

@pytest.mark.parametrize("table_dtype,out_dtype,scale_dtype", _cases(
    ["i8", "fp8_e4m3", "i4"], ["f32", "f16", "bf16"], ["f32", "f16", "bf16"]))
def test_quantized_tables_match_gather_then_multiply(table_dtype, out_dtype, scale_dtype):
    table, kwargs, rows_f32 = quantized_table(table_dtype)
    scale = scales(scale_dtype)
    ids = random_ids(torch.int32, seed=6)
    out = tpembed.embedding(ids, table, per_token_scale=scale, out_dtype=out_dtype, **kwargs)
    torch.cuda.synchronize()
    assert_bit_equal(out, gather_then_multiply(ids, rows_f32, scale, out_dtype))


# ---- bad ids, strict mode, padding ------------------------------------------------------------

def test_bad_ids_give_zero_rows_and_are_counted():
    table = float_table("bf16")
    layer = tpembed.ParallelEmbedding(table)
    ids = random_ids(torch.int64)
    ids[0, 0], ids[3, 7], ids[6, 18] = -1, V, 2**40
    out = layer.forward(ids)
    valid = (ids >= 0) & (ids < V)
    expected = torch.where(valid.unsqueeze(-1), F.embedding(ids.clamp(0, V - 1), table),
                           torch.zeros((), dtype=table.dtype, device=DEVICE))
    assert_bit_equal(out, expected)
    assert layer.last_bad_id_count() == 3
    assert layer.bad_id_counter != 0


def test_strict_mode_raises_out_of_range_error():
    table = float_table("f32")
    ids = random_ids(torch.int64)
    ids[2, 3] = V + 5
    with pytest.raises(tpembed.OutOfRangeError) as raised:
        tpembed.embedding(ids, table, strict=True)
    assert raised.value.first_bad_id == V + 5 and raised.value.position == 2 * 19 + 3
    assert isinstance(raised.value, IndexError)


def test_padding_rows():
    table, padding = float_table("f16"), float_table("f16", rows=4, seed=9)
    ids = torch.tensor([[0, V, V + 3], [V + 4, 5, V + 1]], device=DEVICE)
    out = tpembed.embedding(ids, table, padding=padding)
    whole = torch.cat([table, padding])
    expected = F.embedding(ids.clamp(max=V + 3), whole)
    expected[1, 0] = 0.0  # V + 4: past the padding
    assert_bit_equal(out, expected)


# ---- streams ----------------------------------------------------------------------------------

def test_runs_on_the_current_and_on_a_given_stream():
    table = float_table("bf16")
    ids = random_ids(torch.int64)
    expected = F.embedding(ids, table)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the default: the current stream
        out_current = tpembed.embedding(ids, table)
    out_object = torch.empty_like(expected)
    out_handle = torch.empty_like(expected)
    tpembed.embedding(ids, table, out=out_object, stream=side)  # an object with cuda_stream
    tpembed.embedding(ids, table, out=out_handle, stream=side.cuda_stream)  # an integer handle
    side.synchronize()
    for out in (out_current, out_object, out_handle):
        assert_bit_equal(out, expected)


# ---- CUDA graphs ------------------------------------------------------------------------------

def test_captured_in_a_cuda_graph_and_replayed_with_new_ids():
    table, kwargs, rows_f32 = quantized_table("i8")
    scale = scales("bf16")
    layer = tpembed.ParallelEmbedding(table, per_token_scale=scale, out_dtype="bf16", **kwargs)
    float_weight = float_table("f16", seed=10)
    static_ids = random_ids(torch.int64, shape=(37,), seed=11)
    static_out = torch.empty(37, H, dtype=torch.float16, device=DEVICE)

    def queue_work():
        tpembed.embedding(static_ids, float_weight, out=static_out)
        return tpembed.embedding(static_ids, float_weight), layer.forward(static_ids)

    # Warm up on a side stream (PyTorch's recipe; it also sets up embedding()'s GPU state).
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        queue_work()
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        allocated_out, layer_out = queue_work()

    for replay in range(3):
        new_ids = random_ids(torch.int64, shape=(37,), seed=100 + replay)
        new_ids[replay] = -3  # a bad id: a zero row, counted on the device
        static_ids.copy_(new_ids)
        graph.replay()
        torch.cuda.synchronize()
        valid = (new_ids >= 0).unsqueeze(-1)
        zero = torch.zeros((), device=DEVICE)
        expected_float = torch.where(valid, F.embedding(new_ids.clamp(min=0), float_weight),
                                     zero.half())
        assert_bit_equal(static_out, expected_float)
        assert_bit_equal(allocated_out, expected_float)
        expected_quantized = torch.where(
            valid, gather_then_multiply(new_ids.clamp(min=0), rows_f32, scale, "bf16"),
            zero.bfloat16())
        assert_bit_equal(layer_out, expected_quantized)
        assert layer.last_bad_id_count() == 1


def test_captured_without_warm_up_for_tables_it_has_never_seen():
    # embedding() keeps nothing per table without strict, so the first call may be inside a capture
    # (what torch.compile's reduce-overhead does with a table that is not a parameter: it records
    # with a copy of the table at a new address). A set-up made there would cudaMalloc its counter
    # and invalidate the capture.
    float_weight = float_table("f32", seed=12)
    table, kwargs, rows_f32 = quantized_table("i8")
    scale = scales("f32")
    static_ids = random_ids(torch.int64, shape=(29,), seed=13)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        float_out = tpembed.embedding(static_ids, float_weight)
        quantized_out = tpembed.embedding(static_ids, table, per_token_scale=scale, out_dtype="f16",
                                          **kwargs)
    for replay in range(2):
        static_ids.copy_(random_ids(torch.int64, shape=(29,), seed=200 + replay))
        graph.replay()
        torch.cuda.synchronize()
        assert_bit_equal(float_out, F.embedding(static_ids, float_weight))
        assert_bit_equal(quantized_out, gather_then_multiply(static_ids, rows_f32, scale, "f16"))


# ---- refusals -------------------------------------------------------------------------------

def test_refuses_mixed_devices_non_contiguous_tensors_and_foreign_dtypes():
    table = float_table("f32")
    with pytest.raises(ValueError, match="ids are on cpu but the table is on cuda"):
        tpembed.embedding(torch.tensor([0, 1]), table)
    with pytest.raises(ValueError, match="C-contiguous"):
        tpembed.embedding(random_ids(torch.int64), table.t())
    with pytest.raises(ValueError, match="float64"):
        tpembed.embedding(random_ids(torch.int64), table.double())
    with pytest.raises(ValueError, match="out has dtype"):
        tpembed.embedding(random_ids(torch.int64), table,
                          out=torch.empty(7, 19, H, dtype=torch.float16, device=DEVICE))
    with pytest.raises(ValueError, match="ids must be i32 or i64"):
        tpembed.embedding(random_ids(torch.int64).float(), table)


def test_refuses_outputs_that_overlap_a_gpu_input_and_bad_streams():
    table = float_table("f32")
    ids = random_ids(torch.int64, shape=(5,))
    layer = tpembed.ParallelEmbedding(table)
    for call in (lambda out: tpembed.embedding(ids, table, out=out), lambda out: layer(ids, out)):
        with pytest.raises(tpembed.ArgumentError, match="out shares memory with weight"):
            call(table[3:8])  # rows 3..7 of the table itself
    with pytest.raises(tpembed.ArgumentError, match="stream must be a cudaStream_t handle"):
        layer(ids, stream=-1)
    with pytest.raises(tpembed.ArgumentError, match="whose __dlpack__\\(\\) says"):
        tpembed.embedding(ids, table.clone().requires_grad_())  # PyTorch will not export it
    out = torch.empty(5, H, device=DEVICE)
    layer(ids, out)  # a separate out is taken
    assert_bit_equal(out, F.embedding(ids, table))


def test_outputs_follow_the_table_framework_and_device():
    layer = tpembed.ParallelEmbedding(float_table("f16"), out_dtype=torch.float32)
    out = layer(random_ids(torch.int32, shape=(5,)))
    assert isinstance(out, torch.Tensor) and out.is_cuda and out.dtype == torch.float32
    assert out.shape == (5, H)
