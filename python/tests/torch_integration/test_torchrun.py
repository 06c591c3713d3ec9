"""tpembed.torch.ParallelEmbedding under torchrun with 2 and 3 ranks over gloo (no mpirun, no
mpi4py): every layout, exchange and dtype bit for bit against the unsharded table, the gradient
against tpembed's CPU gradient of the unsharded table, torch.compile fullgraph with dynamic token
counts, the Llama drop-in, and ranks that refuse or never come.

Each case launches ``timeout 120 torchrun --standalone --nproc-per-node N torchrun_ranks.py
<scenario> <folder>``, so a hang fails the test instead of stalling the run, and asserts what every
rank wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rank_results import rank_results

torch = pytest.importorskip("torch", reason="SKIPPED: PyTorch is not installed")

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = os.path.join(HERE, "torchrun_ranks.py")
LIMIT_S = 120



def launch(tmp_path, scenario, ranks=2, backend="gloo"):
    """Runs `scenario` on `ranks` torchrun ranks; {rank: {step: result}} for every rank."""
    folder = str(tmp_path)
    command = ["timeout", str(LIMIT_S), sys.executable, "-m", "torch.distributed.run",
               "--standalone", f"--nproc-per-node={ranks}", RANKS, scenario, folder, backend]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=LIMIT_S + 30)
    return rank_results(done, scenario, LIMIT_S, folder, ranks)


def assert_ok(results, step=None):
    """Every rank's `step` (every step when None) returned True."""
    for rank, steps in results.items():
        for name, got in steps.items():
            if step is None or name == step:
                assert got["error"] is None and got["ok"] is True, f"rank {rank}, {name}: {got}"


def assert_raised(results, step, error, *fragments):
    for rank, steps in results.items():
        got = steps[step]
        assert error in got["types"], f"rank {rank}, {step}: expected {error}, got {got}"
        for fragment in fragments:
            assert fragment in got["message"], f"rank {rank}, {step}: {got['message']!r}"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One 2-rank job for the scenarios that end normally (torch takes seconds to start)."""
    return launch(tmp_path_factory.mktemp("two"),
                  "matrix,scattered,quantized,deepcopied,compiled,llama,refusals")


def test_every_layout_exchange_and_dtype_matches_the_unsharded_table(two_ranks):
    steps = [step for step in two_ranks[0] if step.startswith("layer ")]
    assert len(steps) >= 12
    for step in steps:
        assert_ok(two_ranks, step)


def test_three_uneven_shards(tmp_path):
    results = launch(tmp_path, "matrix,scattered", ranks=3)
    assert len(results[0]) >= 40
    assert_ok(results)


def test_scattered_layouts_give_each_rank_its_chunk_and_the_unsharded_gradient(two_ranks):
    steps = [step for step in two_ranks[0] if step.startswith("scattered")]
    assert len(steps) == 25  # 3 exchanges x 4 id shapes x 2 input layouts, and compiled
    for step in steps:
        assert_ok(two_ranks, step)


def test_int8_tables_dequantize_exactly_and_add_no_gradient(two_ranks):
    assert_ok(two_ranks, "int8 forward")
    assert_ok(two_ranks, "int8 output needs no gradient")


def test_deepcopy_on_every_rank_sets_up_a_second_layer(two_ranks):
    assert_ok(two_ranks, "deepcopy: the original")
    assert_ok(two_ranks, "deepcopy: the copy")


def test_compiled_fullgraph_with_dynamic_token_counts(two_ranks):
    assert_ok(two_ranks, "compiled fullgraph dynamic")


def test_llama_drop_in_on_two_ranks(two_ranks):
    pytest.importorskip("transformers", reason="SKIPPED: transformers is not installed")
    assert_ok(two_ranks, "llama logits")
    assert_ok(two_ranks, "llama embedding gradient")


def test_one_ranks_refusal_raises_on_every_rank(two_ranks):
    assert_raised(two_ranks, "bad output_layout on rank 1", "ValueError", "rank 1",
                  "output_layout 'bogus' is neither 'replicated' nor 'scattered'")
    assert_raised(two_ranks, "rank 1's weight is a list", "ValueError",
                  "rank 1: weight_shard must be a torch.Tensor (this rank's shard), got list")
    assert_raised(two_ranks, "rank 0's comm_timeout is negative", "ValueError",
                  "rank 0: comm_timeout must be a number of seconds > 0, got -1")
    assert_raised(two_ranks, "rank 0's shard is wider", "ValueError", "rank 0")
    assert_raised(two_ranks, "other sharding_dim on rank 1", "ValueError",
                  "rank 1 shards dim 1 but rank 0 shards dim 0")
    assert_raised(two_ranks, "rank 1 swapped its weight's data", "RuntimeError",
                  "rank 1: tpembed.torch.ParallelEmbedding: its weight (or scales, or padding) is "
                  "no longer the tensor its set-up reads")
    assert_ok(two_ranks, "usable after refusals")


def test_a_rank_that_never_comes_makes_the_other_raise_on_time(tmp_path):
    results = launch(tmp_path, "missing_rank")
    assert_raised({0: results[0]}, "rank 1 never comes", "RuntimeError",
                  "did not complete within 3 s")
    assert_ok(results, "raised on time")
