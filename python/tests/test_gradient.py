"""tpembed.embedding_backward and ParallelEmbedding.backward on NumPy arrays.

Every result is checked three ways: bit for bit against gradient_reference.documented_order (an
independent NumPy implementation of the order gradient.hpp documents), within the documented
error bound of a float64 np.add.at sum, and with its counts. Repeats must give the same bits.
The multi-rank cases (test_gradient_mpi.py) run from here under mpirun, on 2 and 3 ranks.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

import tpembed
from gradient_reference import (GRADIENT_DTYPES, Problem, check_within_bound, decode,
                                documented_order, encode, sequential_sum)
from mpi_jobs import job_environment, mpi_ready
from reference import bits, make_table, round_to

V, H = 37, 13
HERE = os.path.dirname(os.path.abspath(__file__))


def rng_for(*case):
    return np.random.default_rng(zlib.crc32(repr(case).encode()))


def gradient_values(rng, shape, grad_dtype):
    """Values of grad_out that `grad_dtype` holds exactly, spanning a few binades, with a -0.0."""
    values = rng.standard_normal(shape) * 2.0 ** rng.integers(-3, 4, shape)
    values = decode(encode(values.astype(np.float32), grad_dtype)[0], grad_dtype)
    if values.size:
        values.flat[0] = -0.0
    return values


def result_bits(array):
    array = np.asarray(array)
    return bits(array.view(np.uint16) if array.dtype.name == "bfloat16" else array)


def backward(problem, grad_dtype, out_dtype, old=None, old_padding=None, **kwargs):
    """tpembed's (grad_weight, grad_padding, counts) for `problem`, grad_out in grad_dtype."""
    grad_out, declared = encode(problem.grad, grad_dtype)
    counts = np.full(4, -1, np.int64)
    extra = dict(declared, counts=counts, out_dtype=out_dtype, **kwargs)
    if problem.padding_rows:
        extra["grad_padding"] = (np.array(old_padding) if old_padding is not None else
                                 np.empty((problem.padding_rows, problem.cols),
                                          round_to(np.zeros(1), out_dtype).dtype))
    if problem.scale is not None:
        extra["per_token_scale"] = problem.scale
        if problem.padding_scale is not None:
            extra["padding_scale"] = problem.padding_scale
    if problem.padding_idx is not None:
        extra["padding_idx"] = problem.padding_idx
    grad_weight = None if old is None else np.array(old)
    result = tpembed.embedding_backward(
        problem.ids, grad_out, problem.rows, row_offset=problem.row_offset,
        grad_weight=grad_weight, accumulate=old is not None, valid_ids=problem.valid_ids,
        column_offset=problem.column_offset, num_cols=problem.cols, **extra)
    assert grad_weight is None or result is grad_weight
    assert result.shape == (problem.rows, problem.cols)
    names = ("accumulated", "unowned", "out_of_range", "ignored")
    return result, extra.get("grad_padding"), dict(zip(names, counts.tolist()))


def check(problem, grad_dtype="f32", out_dtype="f32", old=None, old_padding=None, **kwargs):
    """tpembed against both references; returns the result's bits."""
    weight, padding, counts = backward(problem, grad_dtype, out_dtype, old, old_padding, **kwargs)
    want_weight, want_padding = documented_order(problem, out_dtype, old, old_padding)
    np.testing.assert_array_equal(result_bits(weight), bits(want_weight))
    if problem.padding_rows:
        np.testing.assert_array_equal(result_bits(padding), bits(want_padding))
    stacked = [decode(weight, out_dtype)]
    previous = None
    if old is not None:
        previous = [decode(old, out_dtype)]
    if problem.padding_rows:
        stacked.append(decode(padding, out_dtype))
        if old is not None:
            previous.append(decode(old_padding, out_dtype))
    check_within_bound(problem, out_dtype, np.concatenate(stacked),
                       None if previous is None else np.concatenate(previous))
    assert counts == problem.verdicts()[1]
    return result_bits(weight)


def skewed_ids(rng, count, rows, shape=None):
    """Half the positions on a few hot rows (several chunks each), the rest uniform, some bad."""
    ids = np.where(rng.random(count) < 0.5, rng.integers(0, 3, count) * 7,
                   rng.integers(0, rows, count))
    ids[rng.integers(0, count, max(1, count // 50))] = -3
    ids[rng.integers(0, count, max(1, count // 50))] = rows + 5
    return ids.reshape(shape or (count,))


# ---- every grad_out dtype x gradient dtype x mode x id dtype ------------------------------------

@pytest.mark.parametrize("grad_dtype,out_dtype,accumulate,id_dtype", list(itertools.product(
    GRADIENT_DTYPES, GRADIENT_DTYPES, [False, True], ["int32", "int64"])))
def test_matches_the_documented_order_and_its_bound(grad_dtype, out_dtype, accumulate, id_dtype):
    rng = rng_for(grad_dtype, out_dtype, accumulate, id_dtype)
    ids = skewed_ids(rng, 300, V, (20, 15)).astype(id_dtype)
    problem = Problem(ids, gradient_values(rng, (20, 15, H), grad_dtype), V)
    old = None
    if accumulate:
        old = round_to(rng.standard_normal((V, H)).astype(np.float32) * 4, out_dtype)
    check(problem, grad_dtype, out_dtype, old)


@pytest.mark.parametrize("hidden", [1, 3, 7, 127, 733])
def test_odd_widths(hidden):
    rng = rng_for("width", hidden)
    problem = Problem(skewed_ids(rng, 160, V), gradient_values(rng, (160, hidden), "bf16"), V)
    check(problem, "bf16", "f32")
    check(problem, "bf16", "bf16", old=round_to(rng.standard_normal((V, hidden)), "bf16"))


def test_every_id_the_same_sums_chunk_by_chunk():
    """1000 positions of one row: 32 chunks whose sums are added in order, which is not the
    sequential sum (checked, so that the test tells them apart)."""
    rng = rng_for("same")
    ids = np.full(1000, 5, np.int64)
    problem = Problem(ids, gradient_values(rng, (1000, 64), "f32"), V)
    got = check(problem)
    chunked = got[5].view(np.float32)
    assert not np.array_equal(chunked, sequential_sum(problem, 5)), "chunks indistinguishable"
    other_rows = np.delete(got, 5, axis=0)
    assert (other_rows == 0).all()  # +0.0 bits: overwritten


def test_the_same_bits_on_every_run_and_thread_count(monkeypatch):
    """10 repeats of a case worth several threads (8192 x 128 elements), on 1, 2 and all cores
    (TPEMBED_CPU_THREADS, read at each call)."""
    rng = rng_for("repeats")
    ids = rng.zipf(1.1, 8192) - 1
    ids[ids >= 1000] = rng.integers(0, 1000, int((ids >= 1000).sum()))
    problem = Problem(ids, gradient_values(rng, (8192, 128), "bf16"), 1000)
    first = check(problem, "bf16", "f32")
    for repeat in range(9):
        monkeypatch.setenv("TPEMBED_CPU_THREADS", str(1 + repeat % 3))
        weight, _, _ = backward(problem, "bf16", "f32")
        np.testing.assert_array_equal(result_bits(weight), first)


def test_empty_ids():
    for shape in [(0,), (3, 0)]:
        problem = Problem(np.zeros(shape, np.int64), np.zeros(shape + (H,), np.float32), V)
        got = check(problem)
        assert (got == 0).all()
        old = round_to(np.arange(V * H, dtype=np.float32).reshape(V, H), "f16")
        np.testing.assert_array_equal(check(problem, "f32", "f16", old=old), bits(old))


def test_one_id():
    rng = rng_for("one")
    problem = Problem(np.array([4]), gradient_values(rng, (1, H), "f16"), V)
    got = check(problem, "f16", "f16")
    np.testing.assert_array_equal(got[4], bits(round_to(problem.grad[0], "f16")))


def test_shard_edges_and_bad_ids():
    """A vocab shard [10, 18): ids just outside it are another shard's, negative ids and ids
    past valid_ids are out of range; padding rows follow the shard."""
    rng = rng_for("edges")
    ids = np.array([9, 10, 17, 18, 19, 20, -1, -100, 45, 46, 10, 17, 0, 44])
    problem = Problem(ids, gradient_values(rng, (ids.size, H), "f32"), 8, row_offset=10,
                      padding_rows=2, valid_ids=45)
    check(problem)
    assert problem.verdicts()[1] == {"accumulated": 6, "unowned": 4, "out_of_range": 4,
                                     "ignored": 0}
    check(problem, "f32", "bf16", old=round_to(rng.standard_normal((8, H)), "bf16"),
          old_padding=round_to(rng.standard_normal((2, H)), "bf16"))


def test_a_vocab_shard_is_the_unsharded_gradients_rows():
    """What ParallelEmbedding's vocab shards need to be laid side by side bit for bit (an order
    that chunked the whole sorted list, not each row, failed this)."""
    rng = rng_for("shard rows")
    ids = np.where(rng.random(600) < 0.5, 3, rng.integers(0, V, 600))
    grad = gradient_values(rng, (600, H), "f32")
    whole = tpembed.embedding_backward(ids, grad, V)
    shard = tpembed.embedding_backward(ids, grad, V - 19, row_offset=19, valid_ids=V)
    np.testing.assert_array_equal(bits(shard), bits(whole[19:]))


def test_padding_idx_adds_nothing():
    rng = rng_for("padding_idx")
    ids = skewed_ids(rng, 200, V)
    ids[::5] = 7
    problem = Problem(ids, gradient_values(rng, (200, H), "f32"), V, padding_idx=7)
    got = check(problem)
    assert (got[7] == 0).all() and problem.verdicts()[1]["ignored"] >= 40
    # An ignored id of another shard is still counted as ignored, not unowned.
    shard = Problem(ids, problem.grad, 5, row_offset=20, padding_idx=7, valid_ids=V)
    check(shard)


def test_scales_and_padding_rows():
    rng = rng_for("scales")
    ids = skewed_ids(rng, 240, V + 3)
    scale = (rng.uniform(-2, 2, V) * 2.0 ** rng.integers(-3, 3, V)).astype(np.float32)
    padding_scale = np.array([0.5, -3.0, 1.25], np.float32)
    problem = Problem(ids, gradient_values(rng, (240, H), "bf16"), V, padding_rows=3,
                      scale=scale, padding_scale=padding_scale)  # values bf16 holds: both runs
    check(problem, "f32", "f32")
    check(problem, "bf16", "f16", old=round_to(rng.standard_normal((V, H)), "f16"),
          old_padding=round_to(rng.standard_normal((3, H)), "f16"))


def test_columns_of_a_wider_grad_out():
    """A hidden shard given the whole gradient takes its columns: the whole result's columns."""
    rng = rng_for("columns")
    ids = skewed_ids(rng, 150, V)
    whole = Problem(ids, gradient_values(rng, (150, H), "f32"), V)
    full = check(whole)
    shard = Problem(ids, whole.grad, V, column_offset=7, cols=4)
    np.testing.assert_array_equal(check(shard), full[:, 7:11])


def test_misaligned_buffers():
    """grad_out, ids and grad_weight views that start one element into their buffers."""
    rng = rng_for("misaligned")
    for grad_dtype, out_dtype in [("f32", "f32"), ("f16", "bf16"), ("bf16", "f16")]:
        problem = Problem(skewed_ids(rng, 96, V), gradient_values(rng, (96, H), grad_dtype), V)
        grad_out, declared = encode(problem.grad, grad_dtype)
        shifted = np.empty(grad_out.size + 1, grad_out.dtype)[1:].reshape(grad_out.shape)
        shifted[...] = grad_out
        ids = np.empty(problem.ids.size + 1, np.int64)[1:]
        ids[...] = problem.ids
        zeros = round_to(np.zeros((V, H), np.float32), out_dtype)
        weight = np.empty(zeros.size + 1, zeros.dtype)[1:].reshape(V, H)
        weight[...] = zeros
        tpembed.embedding_backward(ids, shifted, V, grad_weight=weight, out_dtype=out_dtype,
                                   accumulate=True, **declared)
        np.testing.assert_array_equal(result_bits(weight),
                                      bits(documented_order(problem, out_dtype, zeros)[0]))


def test_ml_dtypes_bfloat16_arrays():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = rng_for("ml_dtypes")
    problem = Problem(skewed_ids(rng, 64, V), gradient_values(rng, (64, H), "bf16"), V)
    grad_out = problem.grad.astype(ml_dtypes.bfloat16)
    got = tpembed.embedding_backward(problem.ids, grad_out, V, out_dtype="bf16")
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(result_bits(got), bits(documented_order(problem, "bf16")[0]))


def test_allocated_gradients_default_to_f32():
    got = tpembed.embedding_backward(np.array([1, 1]), np.ones((2, 3), np.float16), 4)
    assert got.dtype == np.float32 and got.shape == (4, 3)
    np.testing.assert_array_equal(got, [[0] * 3, [2] * 3, [0] * 3, [0] * 3])


def test_the_readme_example_runs(capsys):
    """README.md's "Gradient (backward)" example, as written, and what it prints."""
    text = open(os.path.join(HERE, "..", "..", "README.md"), encoding="utf-8").read()
    section = text[text.index("## Gradient (backward)"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == [
        "[2. 2. 0. 2. 0.]", "{'accumulated': 4, 'unowned': 0, 'out_of_range': 2, 'ignored': 0}"]


# ---- ParallelEmbedding, one rank ---------------------------------------------------------------

def test_a_layer_backward_is_the_unsharded_gradient():
    rng = rng_for("layer")
    table = make_table("bf16", V, H, rng)
    padding = make_table("bf16", 2, H, rng)
    layer = tpembed.ParallelEmbedding(table.array, padding=padding.array, weight_dtype="bf16")
    ids = skewed_ids(rng, 120, V + 2, (8, 15))
    ids[0, 0] = 3
    grad_out, declared = encode(gradient_values(rng, (8, 15, H), "bf16"), "bf16")
    grad_padding = np.empty((2, H), np.float32)
    got = layer.backward(ids, grad_out, padding_idx=3, grad_padding=grad_padding, **declared)
    want_padding = np.empty((2, H), np.float32)
    want = tpembed.embedding_backward(ids, grad_out, V, padding_idx=3, grad_padding=want_padding,
                                      **declared)
    assert got.dtype == np.float32 and got.shape == (V, H)
    np.testing.assert_array_equal(bits(got), bits(want))
    np.testing.assert_array_equal(bits(grad_padding), bits(want_padding))
    counts = layer.last_gradient_counts()
    assert counts == Problem(ids, np.zeros((8, 15, H)), V, padding_rows=2,
                             padding_idx=3).verdicts()[1]
    # Accumulating into a given bf16 gradient.
    into = round_to(rng.standard_normal((V, H)), "bf16")
    want = np.array(into)
    assert layer.backward(ids, grad_out, into, accumulate=True, out_dtype="bf16",
                          **declared) is into
    tpembed.embedding_backward(ids, grad_out, V, grad_weight=want, accumulate=True,
                               out_dtype="bf16", **declared)
    np.testing.assert_array_equal(into, want)


def test_a_quantized_layer_has_no_gradient():
    rng = rng_for("quantized")
    table = make_table("i8", V, H, rng)
    layer = tpembed.ParallelEmbedding(table.array, per_token_scale=np.ones(V, np.float32),
                                      out_dtype="bf16")
    with pytest.raises(RuntimeError, match="(?i)quantized"):
        layer.backward(np.array([1]), np.ones((1, H), np.float32))


def test_layer_argument_errors():
    layer = tpembed.ParallelEmbedding(np.zeros((V, H), np.float32))
    with pytest.raises(ValueError):
        layer.backward(np.array([1]), np.ones((1, H), np.float32), np.zeros((V + 1, H),
                                                                             np.float32))
    with pytest.raises(tpembed.ArgumentError, match="accumulate"):
        layer.backward(np.array([1]), np.ones((1, H), np.float32), accumulate=True)
    with pytest.raises(tpembed.ArgumentError, match="grad_out"):
        layer.backward(np.array([1]), [[1.0] * H])
    weight, aliased = GRAD_ALIAS
    with pytest.raises(tpembed.ArgumentError, match="grad_weight shares memory with grad_out"):
        layer.backward(IDS, aliased, weight)
    with pytest.raises(tpembed.ArgumentError, match="out_dtype"):
        layer.backward(IDS, GRAD, out_dtype="i4")


# ---- refusals ----------------------------------------------------------------------------------

IDS = np.array([1, 2, 3])
GRAD = np.ones((3, H), np.float32)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda: tpembed.embedding_backward(IDS, np.ones((3, 2, H), np.float32), V), ValueError,
     "grad_out"),
    (lambda: tpembed.embedding_backward(IDS, np.ones((4, H), np.float32), V), ValueError,
     "grad_out"),
    (lambda: tpembed.embedding_backward(IDS, np.ones((3, H), np.int32), V),
     tpembed.ArgumentError, "grad_out"),
    (lambda: tpembed.embedding_backward(IDS, np.ones((3, H), np.float64), V),
     tpembed.ArgumentError, "grad_out"),
    (lambda: tpembed.embedding_backward(IDS, np.ones((3, H), np.uint16), V),
     tpembed.ArgumentError, "grad_out_dtype='bf16'"),
    (lambda: tpembed.embedding_backward(IDS.astype(np.float32), GRAD, V), tpembed.ArgumentError,
     "ids"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, -1), tpembed.ArgumentError, "num_rows"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, 2.0), tpembed.ArgumentError, "num_rows"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_weight=np.zeros((V, H + 1),
                                                                          np.float32)),
     ValueError, "14 columns"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_weight=np.zeros((V - 1, H),
                                                                          np.float32)),
     ValueError, "num_rows"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_weight=np.zeros((V, H))),
     tpembed.ArgumentError, "grad_weight"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_weight=np.zeros((V, H), np.float16),
                                        out_dtype="f32"), tpembed.ArgumentError,
     "grad_weight is f16 but out_dtype is f32"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_padding=np.zeros((2, H), np.float16)),
     tpembed.ArgumentError, "grad_padding is f16 but grad_weight's dtype is f32"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_weight=np.zeros((V, H), np.uint16)),
     tpembed.ArgumentError, "out_dtype='bf16'"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_weight=read_only((V, H))),
     tpembed.ArgumentError, "read-only"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, grad_weight=np.zeros((H, V), np.float32).T),
     tpembed.ArgumentError, "contiguous"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, accumulate=True), tpembed.ArgumentError,
     "accumulate"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, accumulate=1), tpembed.ArgumentError,
     "accumulate"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, out_dtype="i8"), tpembed.ArgumentError,
     "out_dtype"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, out_dtype="f64"), tpembed.ArgumentError,
     "out_dtype"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, padding_idx=-1), tpembed.ArgumentError,
     "padding_idx"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, column_offset=H + 1), ValueError,
     "column_offset"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, counts=np.zeros(3, np.int64)),
     tpembed.ArgumentError, "counts"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, counts=np.zeros(4, np.float64)),
     tpembed.ArgumentError, "counts"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, per_token_scale=np.ones(V + 1, np.float32)),
     ValueError, "per_token_scale"),
    (lambda: tpembed.embedding_backward(IDS, GRAD_ALIAS[1], V, grad_weight=GRAD_ALIAS[0]),
     tpembed.ArgumentError, "shares memory with grad_out"),
    (lambda: tpembed.embedding_backward(None, GRAD, V), tpembed.ArgumentError, "ids"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, counts=[0, 0, 0, 0]), tpembed.ArgumentError,
     "counts must be an array"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, workspace=b"x" * 256),
     tpembed.ArgumentError, "workspace must be an array"),
    (lambda: tpembed.embedding_backward(IDS, GRAD, V, stream="default"), tpembed.ArgumentError,
     "stream"),
])
def test_refusals_name_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def read_only(shape):
    array = np.zeros(shape, np.float32)
    array.flags.writeable = False
    return array


_ALIAS = np.zeros(V * H, np.float32)
GRAD_ALIAS = (_ALIAS.reshape(V, H), _ALIAS[:3 * H].reshape(3, H))


def test_an_aliased_grad_out_is_refused_before_anything_is_written():
    weight, grad_out = GRAD_ALIAS
    grad_out[...] = 1.0
    with pytest.raises(tpembed.ArgumentError, match="shares memory"):
        tpembed.embedding_backward(IDS, grad_out, V, grad_weight=weight)
    assert (grad_out == 1.0).all()


def test_workspace_sizes():
    assert tpembed.gradient_workspace_bytes(1000, V, H, device="cpu") == 0
    with pytest.raises(tpembed.ArgumentError, match="device"):
        tpembed.gradient_workspace_bytes(1000, V, H, device="tpu")
    with pytest.raises(tpembed.ArgumentError, match="num_ids"):
        tpembed.gradient_workspace_bytes(-1, V, H)


# ---- over MPI ranks ----------------------------------------------------------------------------

@pytest.mark.skipif(bool(mpi_ready()), reason=f"SKIPPED: {mpi_ready()}")
@pytest.mark.parametrize("ranks", [2, 3])
def test_shards_over_mpi_ranks(ranks):
    """test_gradient_mpi.py on 2 and 3 ranks (it skips in a single process)."""
    limit = 120
    done = subprocess.run(["timeout", str(limit), "mpirun", "--oversubscribe",
                           "--allow-run-as-root", "-np", str(ranks), sys.executable, "-m", "pytest", "-q", "--color=no",
                           "-p", "no:cacheprovider", os.path.join(HERE, "test_gradient_mpi.py")],
                          capture_output=True, text=True, env=job_environment(HERE),
                          timeout=limit + 10)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
