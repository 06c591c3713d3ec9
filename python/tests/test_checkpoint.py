"""ParallelEmbedding.from_checkpoint on one rank: safetensors tables of every dtype."""

from __future__ import annotations

import numpy as np
import pytest

import tpembed
from checkpoints import STORED_DTYPE, write_safetensors
from reference import QUANTIZED, TABLE_DTYPES, bits, lookup, make_scale, make_table

V, H = 37, 13
NAME = "model.embed_tokens.weight"


@pytest.mark.parametrize("table_dtype", TABLE_DTYPES)
def test_from_checkpoint_matches_the_reference(tmp_path, table_dtype):
    rng = np.random.default_rng(20)
    table = make_table(table_dtype, V, H, rng)
    tensors = {NAME: (STORED_DTYPE[table_dtype], table.array)}
    metadata = {f"tpembed.int4_columns.{NAME}": str(H)} if table_dtype == "i4" else None
    scale_values, kwargs = None, {}
    if table_dtype in QUANTIZED:
        scale, scale_values, _ = make_scale("f32", V, rng)
        tensors["model.embed_tokens.scale"] = ("F32", scale)
        kwargs = {"scale_tensor": "model.embed_tokens.scale", "out_dtype": "f32"}
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors, metadata)
    layer = tpembed.ParallelEmbedding.from_checkpoint(tmp_path, NAME, **kwargs)  # the directory
    assert (layer.layout.global_rows, layer.layout.global_cols) == (V, H)
    ids = np.array([[0, 5, V - 1], [-1, V, 17]], np.int64)
    expected = lookup(ids, table.values, scale_values, kwargs.get("out_dtype", table_dtype))
    out = layer.forward(ids)
    if out.dtype.name == "bfloat16":
        out = out.view(np.uint16)
    np.testing.assert_array_equal(bits(out), bits(expected))


def test_int4_columns_from_the_caller_when_the_file_does_not_record_them(tmp_path):
    rng = np.random.default_rng(21)
    table = make_table("i4", V, H, rng)
    scale, scale_values, _ = make_scale("f16", V, rng)
    path = tmp_path / "plain.safetensors"
    write_safetensors(path, {NAME: ("U8", table.array), "scale": ("F16", scale)})
    with pytest.raises(ValueError):
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME, scale_tensor="scale", out_dtype="f32")
    layer = tpembed.ParallelEmbedding.from_checkpoint(path, NAME, scale_tensor="scale", hidden=H,
                                                      out_dtype="bf16")
    ids = np.arange(V, dtype=np.int32)
    np.testing.assert_array_equal(bits(layer(ids).view(np.uint16)),
                                  bits(lookup(ids, table.values, scale_values, "bf16")))


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(RuntimeError, match="missing.safetensors"):
        tpembed.ParallelEmbedding.from_checkpoint(tmp_path / "missing.safetensors", NAME)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"other": ("F32", np.ones((2, 2), np.float32))})
    with pytest.raises(RuntimeError, match=NAME.replace(".", r"\.")):
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME)
