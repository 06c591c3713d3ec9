"""ParallelEmbedding.from_checkpoint: safetensors tables of every dtype, their default scales, and
messages that name from_checkpoint's own keywords (on one rank; equal hidden shards under mpirun)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tpembed
from checkpoints import STORED_DTYPE, write_safetensors
from mpi_jobs import job_environment, mpi_ready
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
    with pytest.raises(tpembed.ArgumentError, match=r"which tpembed reads as packed int4: pass "
                                                   r"hidden \(the logical column count\)") as error:
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME, scale_tensor="scale", out_dtype="f32")
    assert "as_int4_columns" not in str(error.value) and "--int4-columns" not in str(error.value)
    with pytest.raises(tpembed.ArgumentError, match=r"hidden = 20 does not fit rows of 7 bytes "
                                                   r"\(expected 13 or 14\)"):
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME, scale_tensor="scale", hidden=20,
                                                  out_dtype="f32")
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


def write_quantized(path, table_dtype, rng, scale_name):
    """A quantized table and (under `scale_name`, when given) its f32 scales; int4 without the
    int4_columns metadata."""
    table = make_table(table_dtype, V, H, rng)
    scale, scale_values, _ = make_scale("f32", V, rng)
    tensors = {NAME: (STORED_DTYPE[table_dtype], table.array)}
    if scale_name:
        tensors[scale_name] = ("F32", scale)
    write_safetensors(path, tensors)
    return table, scale_values


@pytest.mark.parametrize("table_dtype", sorted(QUANTIZED))
def test_a_quantized_table_finds_tensor_scale_by_itself(tmp_path, table_dtype):
    """As the CLI does: scale_tensor=None reads "<tensor>_scale" when the checkpoint holds it."""
    rng = np.random.default_rng(22)
    path = tmp_path / "model.safetensors"
    table, scale_values = write_quantized(path, table_dtype, rng, NAME + "_scale")
    hidden = {"hidden": H} if table_dtype == "i4" else {}
    layer = tpembed.ParallelEmbedding.from_checkpoint(path, NAME, out_dtype="f32", **hidden)
    ids = np.array([0, 3, V - 1, -1, V, 20], np.int64)
    np.testing.assert_array_equal(bits(layer.forward(ids)),
                                  bits(lookup(ids, table.values, scale_values, "f32")))


def test_a_float_table_uses_tensor_scale_too(tmp_path):
    rng = np.random.default_rng(23)
    table = make_table("f32", V, H, rng)
    scale, scale_values, _ = make_scale("f32", V, rng)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {NAME: ("F32", table.array), NAME + "_scale": ("F32", scale)})
    ids = np.arange(V, dtype=np.int64)
    np.testing.assert_array_equal(
        bits(tpembed.ParallelEmbedding.from_checkpoint(path, NAME).forward(ids)),
        bits(lookup(ids, table.values, scale_values, "f32")))


def test_a_quantized_table_without_scales_names_scale_tensor(tmp_path):
    path = tmp_path / "model.safetensors"
    write_quantized(path, "i8", np.random.default_rng(24), None)
    with pytest.raises(tpembed.ArgumentError,
                       match=r"tensor 'model\.embed_tokens\.weight' is i8 and needs its row scales: "
                             r"pass scale_tensor \(the checkpoint has no "
                             r"'model\.embed_tokens\.weight_scale'\)") as error:
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME, out_dtype="f32")
    assert "per_token_scale" not in str(error.value)
    # Named scales that the checkpoint lacks, or the table itself.
    with pytest.raises(RuntimeError, match="no tensor named 'scales'"):
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME, scale_tensor="scales", out_dtype="f32")
    with pytest.raises(tpembed.ArgumentError, match="scale_tensor 'model.embed_tokens.weight' "
                                                   "names the table itself"):
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME, scale_tensor=NAME, out_dtype="f32")


def test_hidden_for_a_table_that_is_not_int4_is_refused_by_name(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {NAME: ("F32", np.ones((V, H), np.float32))})
    with pytest.raises(tpembed.ArgumentError,
                       match="has dtype F32; hidden applies only to U8 tensors"):
        tpembed.ParallelEmbedding.from_checkpoint(path, NAME, hidden=H)


# Every rank of an mpirun job reads equal hidden shards of a table whose 13 columns do not divide by
# 3 and prints what it raised.
# Each rank writes what it raised to its own file: the ranks' stdout lines interleave under mpirun.
EQUAL_HIDDEN_JOB = """
import sys
from mpi4py import MPI
import tpembed
rank = MPI.COMM_WORLD.Get_rank()
try:
    tpembed.ParallelEmbedding.from_checkpoint(sys.argv[1], sys.argv[2], comm=MPI.COMM_WORLD,
                                              sharding_dim=1, placement="equal", comm_timeout=30)
    said = f"rank {rank} raised nothing"
except Exception as error:
    said = f"rank {rank} raised {type(error).__name__}: {error}"
with open(f"{sys.argv[3]}/rank{rank}.txt", "w") as result:
    result.write(said)
"""


@pytest.mark.skipif(bool(mpi_ready()), reason=f"SKIPPED: {mpi_ready()}")
def test_equal_hidden_shards_that_do_not_divide_say_so_on_every_rank(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {NAME: ("F32", np.ones((V, H), np.float32))})
    here = os.path.dirname(os.path.abspath(__file__))
    command = ["timeout", "120", "mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "3",
               sys.executable, "-c", EQUAL_HIDDEN_JOB, str(path), NAME, str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=job_environment(here),
                          timeout=150)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for rank in range(3):
        line = (tmp_path / f"rank{rank}.txt").read_text()
        assert line.startswith(f"rank {rank} raised ValueError: "), output[-4000:]
        assert ("tensor 'model.embed_tokens.weight' has 13 columns, which do not divide by "
                "tp_size 3: equal hidden shards need a column count that does; use "
                "placement='packed' for uneven shards") in line, line


def test_packed_is_the_default_placement_everywhere():
    """As the CLI's --placement and C++'s EmbeddingConfig: packed unless equal is asked for."""
    import inspect
    for function in (tpembed.ParallelEmbedding.__init__, tpembed.ParallelEmbedding.from_checkpoint,
                     tpembed.shard_range):
        assert inspect.signature(function).parameters["placement"].default == "packed", function
    assert tpembed.shard_range(10, 4, 3) == (8, 2)           # packed: 3, 3, 2, 2 rows
    assert tpembed.shard_range(10, 4, 3, "equal") == (9, 3)  # equal: 3 each, the last past 10
