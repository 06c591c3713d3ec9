"""tpembed.torch.embedding and the registered operators on one rank (CPU): the forward bit for bit
against F.embedding (float tables) or a dequantize-then-round written here (int8, fp8, int4); the
gradient bit for bit against tpembed's CPU gradient and within rounding of F.embedding's;
torch.library.opcheck on every operator; torch.compile with the inductor backend, fullgraph and
dynamic token counts; and the refusals.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="SKIPPED: PyTorch is not installed")

import tpembed  # noqa: E402
import tpembed.torch as tpt  # noqa: E402

F = torch.nn.functional
V, H = 53, 13  # odd: int4 rows end in half a byte
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
INT_VIEW = {4: torch.int32, 2: torch.int16, 1: torch.int8}


def bits(tensor):
    return tensor.contiguous().view(INT_VIEW[tensor.element_size()])


def assert_bits(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.equal(bits(actual), bits(expected))


def generator(seed):
    return torch.Generator().manual_seed(seed)


def random_ids(shape, seed, dtype=torch.int64, low=0, high=V):
    return torch.randint(low, high, shape, generator=generator(seed), dtype=dtype)


SHAPES = [(0,), (1,), (7,), (3, 5), (2, 3, 4)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("shape", SHAPES)
def test_float_tables_match_f_embedding_bit_for_bit(dtype, id_dtype, shape):
    weight = torch.randn(V, H, generator=generator(1)).to(dtype)
    ids = random_ids(shape, 2, id_dtype)
    assert_bits(tpt.embedding(ids, weight), F.embedding(ids.long(), weight))


def test_out_of_range_ids_give_zero_rows():
    weight = torch.randn(V, H, generator=generator(1))
    ids = torch.tensor([0, -1, V, V + 100, 5, -(2**40)])
    out = tpt.embedding(ids, weight)
    expected = torch.zeros(len(ids), H)
    expected[0], expected[4] = weight[0], weight[5]
    assert_bits(out, expected)


def dequantized(values, scales, out_dtype):
    """The documented rule: fp32 product of the value and its row's scale, rounded once."""
    return (values.float() * scales.float()[:, None]).to(out_dtype)


def int4_values(packed, cols):
    """Signed nibbles, low nibble first, of uint8 [rows, ceil(cols/2)]."""
    low = (packed & 0xF).to(torch.int16)
    high = (packed >> 4).to(torch.int16)
    values = torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)[:, :cols]
    return torch.where(values >= 8, values - 16, values)


@pytest.mark.parametrize("out_dtype", FLOATS)
@pytest.mark.parametrize("scale_dtype", FLOATS)
def test_quantized_tables_dequantize_exactly(out_dtype, scale_dtype):
    scales = (torch.rand(V, generator=generator(3)) + 0.25).to(scale_dtype)
    ids = random_ids((4, 6), 4)
    table_i8 = torch.randint(-128, 128, (V, H), generator=generator(5), dtype=torch.int8)
    assert_bits(tpt.embedding(ids, table_i8, per_token_scale=scales, out_dtype=out_dtype),
                dequantized(table_i8, scales, out_dtype)[ids])
    table_fp8 = (torch.randn(V, H, generator=generator(6)) * 4).to(torch.float8_e4m3fn)
    assert_bits(tpt.embedding(ids, table_fp8, per_token_scale=scales, out_dtype=out_dtype),
                dequantized(table_fp8, scales, out_dtype)[ids])
    packed = torch.randint(0, 256, (V, (H + 1) // 2), generator=generator(7), dtype=torch.uint8)
    assert_bits(tpt.embedding(ids, packed, per_token_scale=scales, out_dtype=out_dtype,
                              weight_dtype="i4", hidden=H),
                dequantized(int4_values(packed, H), scales, out_dtype)[ids])


def test_padding_rows_follow_the_table():
    weight = torch.randn(V, H, generator=generator(8))
    padding = torch.randn(3, H, generator=generator(9))
    ids = torch.tensor([[V + 2, 0], [V, V + 3]])
    expected = F.embedding(torch.where(ids < V + 3, ids, 0), torch.cat([weight, padding]))
    expected[1, 1] = 0  # V + 3 is past the padding
    assert_bits(tpt.embedding(ids, weight, padding=padding), expected)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(0,), (1,), (64,), (5, 37)])
def test_gradient_is_tpembeds_bits_and_f_embeddings_value(dtype, shape):
    weight = torch.randn(V, H, generator=generator(10)).to(dtype).requires_grad_(True)
    ids = random_ids(shape, 11, high=V // 4)  # repeated ids: sums of several positions
    out = tpt.embedding(ids, weight)
    grad_out = torch.randn(out.shape, generator=generator(12)).to(dtype)
    out.backward(grad_out)
    want = tpembed.embedding_backward(ids, grad_out, V, out_dtype=dtype)
    assert_bits(weight.grad, want)
    reference = weight.detach().float().requires_grad_(True)
    F.embedding(ids, reference).backward(grad_out.float())
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(weight.grad.float(), reference.grad, atol=tolerance,
                               rtol=tolerance)


def test_scaled_float_table_gradient_is_scaled_and_padding_rows_get_theirs():
    weight = torch.randn(V, H, generator=generator(13)).requires_grad_(True)
    scales = torch.rand(V, generator=generator(14)) + 0.5
    padding = torch.randn(2, H, generator=generator(15)).requires_grad_(True)
    padding_scale = torch.tensor([2.0, 0.5])
    ids = torch.tensor([[1, V, 1], [V + 1, 7, V]])
    out = tpt.embedding(ids, weight, per_token_scale=scales, padding=padding,
                        padding_scale=padding_scale)
    grad_out = torch.randn(out.shape, generator=generator(16))
    out.backward(grad_out)
    expected = torch.zeros(V, H)
    expected[1] = (grad_out[0, 0] + grad_out[0, 2]) * scales[1]
    expected[7] = grad_out[1, 1] * scales[7]
    assert_bits(weight.grad, expected)
    expected_padding = torch.stack([(grad_out[0, 1] + grad_out[1, 2]) * 2.0,
                                    grad_out[1, 0] * 0.5])
    assert_bits(padding.grad, expected_padding)


def test_padding_idx_adds_nothing_to_the_gradient():
    weight = torch.randn(V, H, generator=generator(17)).requires_grad_(True)
    ids = torch.tensor([3, 0, 3, 0, 9])
    tpt.embedding(ids, weight, padding_idx=0).sum().backward()
    reference = weight.detach().clone().requires_grad_(True)
    F.embedding(ids, reference, padding_idx=0).sum().backward()
    assert_bits(weight.grad, reference.grad)


def test_frozen_and_quantized_tables_record_no_backward():
    ids = random_ids((5,), 18)
    frozen = torch.randn(V, H, generator=generator(19))
    assert tpt.embedding(ids, frozen).grad_fn is None
    table = torch.randint(-8, 8, (V, H), dtype=torch.int8)
    out = tpt.embedding(ids, table, per_token_scale=torch.ones(V), out_dtype=torch.float32)
    assert out.grad_fn is None and not out.requires_grad


def test_opcheck_every_operator():
    weight = torch.randn(V, H, generator=generator(20)).requires_grad_(True)
    ids = random_ids((3, 4), 21)
    torch.library.opcheck(torch.ops.tpembed.embedding.default,
                          (ids, weight, None, None, None, None, None, None, None))
    scales = torch.rand(V, generator=generator(22))
    torch.library.opcheck(torch.ops.tpembed.embedding.default,
                          (ids, torch.randint(-5, 5, (V, H), dtype=torch.int8), scales, None,
                           None, torch.bfloat16, None, None, None))
    grad_out = torch.randn(3, 4, H, generator=generator(23))
    torch.library.opcheck(torch.ops.tpembed.embedding_backward.default,
                          (ids, grad_out, V, 0, None, None, None, torch.float32))


def test_compiled_with_inductor_fullgraph_and_dynamic_token_counts():
    torch._dynamo.reset()
    weight = torch.randn(V, H, generator=generator(24)).requires_grad_(True)
    # A loss whose gradient reaches the lookup exactly (grad_out = column_weights on every row), so
    # the compiled and eager gradients are the same bits: tpembed's backward, compiled or not.
    column_weights = torch.randn(H, generator=generator(25))
    compiles = []

    def backend(graph, example_inputs):
        compiles.append(graph)
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(graph, example_inputs)

    def loss(ids):
        return (tpt.embedding(ids, weight) * column_weights).sum()

    compiled = torch.compile(loss, backend=backend, fullgraph=True, dynamic=True)
    for n in (3, 8, 21):
        ids = random_ids((n,), n)
        torch._dynamo.mark_dynamic(ids, 0)
        weight.grad = None
        compiled_loss = compiled(ids)
        compiled_loss.backward()
        compiled_grad = weight.grad.clone()
        weight.grad = None
        eager_loss = loss(ids)
        eager_loss.backward()
        torch.testing.assert_close(compiled_loss, eager_loss)
        assert_bits(compiled_grad, weight.grad)
    assert len(compiles) == 1, f"{len(compiles)} compilations for three token counts"


def test_refusals_name_the_argument():
    weight = torch.randn(V, H)
    with pytest.raises(tpembed.ArgumentError, match="needs hidden="):
        tpt.embedding(torch.tensor([1]), torch.zeros(V, 4, dtype=torch.uint8), weight_dtype="i4",
                      per_token_scale=torch.ones(V), out_dtype=torch.float32)
    with pytest.raises(ValueError, match="ids"):
        tpt.embedding(torch.tensor([1.0]), weight)
    with pytest.raises(ValueError, match="out_dtype"):
        tpt.embedding(torch.tensor([1]), torch.zeros(V, H, dtype=torch.int8),
                      per_token_scale=torch.ones(V))


def test_import_tpembed_alone_does_not_import_torch():
    import subprocess
    import sys
    check = "import sys, tpembed; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_fake_kernels_refuse_what_the_real_ones_refuse():
    """Under torch.compile the fake kernel meets the arguments first: the same refusals."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        ids = torch.zeros(3, dtype=torch.int64)
        with pytest.raises(tpembed.ArgumentError, match=r"weight must be 2-D \[V, H\], got shape \(53,\)"):
            tpt.embedding(ids, torch.zeros(V))
        with pytest.raises(tpembed.ArgumentError, match="a torch.int8 table needs out_dtype"):
            tpt.embedding(ids, torch.zeros(V, H, dtype=torch.int8), per_token_scale=torch.ones(V))
        with pytest.raises(tpembed.ArgumentError, match=r"weight_dtype='i4'\) needs hidden="):
            tpt.embedding(ids, torch.zeros(V, 7, dtype=torch.uint8), weight_dtype="i4",
                          per_token_scale=torch.ones(V), out_dtype=torch.float32)
