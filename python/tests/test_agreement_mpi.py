"""Every rank agrees or fails together (issue 12), from Python: under real mpirun ranks.

Run by pytest in one process (python3 -m pytest python/tests): each multi-rank case launches
    timeout 60 mpirun -np N python3 agreement_scenarios.py <scenario> <folder> [role]
(MPMD, ``-np 1 ... a : -np 1 ... b``, where the programs must differ), so a hang fails the test
instead of stalling the run, and asserts the error type and message that EVERY rank got. The
single-process cases check the messages of refused arguments and shard_range's arithmetic.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tpembed
from mpi_jobs import job_environment, mpi_ready
from rank_results import rank_results

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "agreement_scenarios.py")
LIMIT_S = 60  # per launch: every scenario ends in seconds when nothing hangs
needs_mpirun = pytest.mark.skipif(bool(mpi_ready()), reason=f"SKIPPED: {mpi_ready()}")


def launch(tmp_path, scenario, ranks=2, roles=None):
    """Runs `scenario` on `ranks` ranks (or one rank per role, MPMD) and returns
    {rank: {step: result}} with a result for every rank."""
    folder = str(tmp_path)
    command = ["timeout", str(LIMIT_S), "mpirun", "--oversubscribe", "--allow-run-as-root"]
    if roles:
        for i, role in enumerate(roles):
            command += ([":"] if i else []) + ["-np", "1", sys.executable, SCENARIOS, scenario,
                                               folder, role]
        ranks = len(roles)
    else:
        command += ["-np", str(ranks), sys.executable, SCENARIOS, scenario, folder]
    done = subprocess.run(command, capture_output=True, text=True, env=job_environment(HERE),
                          timeout=LIMIT_S + 30)
    return rank_results(done, scenario, LIMIT_S, folder, ranks)


def assert_every_rank(results, step, error, *fragments):
    """Every rank raised `error` (a class name among the error's classes) at `step`, with each of
    `fragments` in its message; or, with error None, every rank's step returned True."""
    for rank, steps in results.items():
        assert step in steps, f"rank {rank} did not reach {step}"
        got = steps[step]
        if error is None:
            assert got["error"] is None and got["ok"] is True, f"rank {rank}, {step}: {got}"
            continue
        assert error in got["types"], f"rank {rank}, {step}: expected {error}, got {got}"
        for fragment in fragments:
            assert fragment in got["message"], f"rank {rank}, {step}: {got['message']!r}"


# ---- one rank's forward arguments are refused: every rank raises, the layer stays usable -------

FORWARD = {
    "float64_ids": "rank 1: ids has dtype float64, which tpembed does not take",
    "noncontiguous_ids": "rank 0: ids is not C-contiguous (strides [6, 2] in elements)",
    "float64_out": "rank 1: out has dtype float64",
    "readonly_out": "rank 0: out is read-only",
    "ids_not_an_array": "rank 1: ids must be an array (NumPy, PyTorch, CuPy or another DLPack "
                        "producer), got list",
    "none_ids": "rank 0: ids must be an array",
    "negative_stream": "rank 1: stream must be a cudaStream_t handle, an integer in [0, 2**64)",
    "out_overlaps_the_table": "rank 1: out shares memory with weight",
    "out_overlaps_ids": "rank 0: out shares memory with ids",
}


@pytest.fixture(scope="module")
def forward_refusals(tmp_path_factory):
    if mpi_ready():
        pytest.skip(f"SKIPPED: {mpi_ready()}")
    return launch(tmp_path_factory.mktemp("forward"), "forward_refusals")


@needs_mpirun
@pytest.mark.parametrize("step", sorted(FORWARD))
def test_a_forward_argument_refused_on_one_rank_raises_on_every_rank(forward_refusals, step):
    # ArgumentError is a ValueError and a TypeError: whichever a caller catches, on every rank.
    assert_every_rank(forward_refusals, step, "ArgumentError", FORWARD[step])
    assert_every_rank(forward_refusals, step, "TypeError")
    assert_every_rank(forward_refusals, step, "ValueError")
    assert_every_rank(forward_refusals, step + "/after", None)


@needs_mpirun
def test_a_rank_that_skips_a_forward_never_leaves_the_others_waiting(tmp_path):
    results = launch(tmp_path, "skipped_forward")
    assert_every_rank({0: results[0]}, "forward", "RuntimeError",
                      "rank 0 of 2: all_gather on the MPI communicator did not complete within "
                      "3 s", "skipped the call")
    assert results[1]["forward"]["ok"] == "skipped"


@needs_mpirun
def test_without_collective_checks_a_refusal_stays_on_its_rank_and_the_others_time_out(tmp_path):
    # What collective_checks=False gives up, as documented: no agreement, so rank 1 alone raises
    # (its message names no rank) and rank 0 waits in the exchange until comm_timeout.
    results = launch(tmp_path, "unchecked_refusal")
    assert_every_rank({1: results[1]}, "forward", "ArgumentError", "ids has dtype float64")
    assert not results[1]["forward"]["message"].startswith("rank ")
    assert_every_rank({0: results[0]}, "forward", "RuntimeError",
                      "did not complete within 3 s")


@needs_mpirun
def test_different_ids_of_the_same_count_raise_on_every_rank(tmp_path):
    results = launch(tmp_path, "different_ids")
    assert_every_rank(results, "different_ids", "ValueError",
                      "rank 1 of the tp group looks up other ids than rank 0")
    assert_every_rank(results, "different_ids/after", None)


@needs_mpirun
def test_ranks_that_opened_different_checkpoints_are_refused(tmp_path):
    results = launch(tmp_path, "different_checkpoints")
    assert_every_rank(results, "different_files", "ValueError",
                      "rank 1 has table fingerprint", "come from different tables")
    assert_every_rank(results, "copies_of_one_file", None)
    assert_every_rank(results, "name_refused_on_one_rank", "ArgumentError",
                      "rank 1: tensor must be a str, got b'embed' (bytes)")


# ---- set-up: one rank's arguments, settings that differ, communicators that differ ------------

SETUP = {
    "float64_weight": "rank 1: weight has dtype float64",
    "string_tp_size": "rank 1: tp_size must be an integer, got '2' (str)",
    "float_hidden": "rank 1: hidden must be an integer, got 5.0 (float)",
    "negative_hidden": "rank 1: hidden must be the number of columns of weight (i4), a count >= 0,"
                       " got hidden=-3",
    "scale_not_an_array": "rank 1: per_token_scale must be an array",
    "object_padding": "rank 1: padding is an array of Python objects (dtype object)",
    "big_endian_weight": "rank 1: weight has byte-swapped dtype '>f4'",
    "tp_group_of_strings": "rank 1: tp_group[0] must be an integer, got '0' (str)",
    "strict_none": "rank 1: strict must be True or False, got None",
}


@needs_mpirun
def test_a_set_up_argument_refused_on_one_rank_raises_on_every_rank(tmp_path):
    results = launch(tmp_path, "setup_refusals")
    for step, message in SETUP.items():
        assert_every_rank(results, step, "ArgumentError", message)
    assert_every_rank(results, "after", None)


SETTINGS = {
    "strict": ("ValueError", "rank 1 sets strict off but rank 0 sets it on"),
    "collective_checks": ("ValueError", "rank 1 sets collective_checks off but rank 0 sets it on"),
    "tp_size": ("ValueError", "rank 0 passes tp_size 2 and tp group [0,1] but rank 1 passes "
                              "tp_size 1"),
    "tp_group": ("ValueError", "rank 0 passes tp_size 2 and tp group [0,1] but rank 1 passes "
                               "tp_size 1"),
    "out_dtype": ("ValueError", "rank 1 asks for f16 output but rank 0 for f32"),
    "vocab_exchange": ("ValueError", "rank 1 asks for the owned_rows vocab exchange but rank 0 for "
                                     "all_reduce"),
    "placement": ("ValueError", "rank 1 uses equal shard placement but rank 0 uses packed"),
}


@needs_mpirun
def test_settings_that_differ_between_programs_raise_on_every_rank(tmp_path):
    results = launch(tmp_path, "settings_differ", roles=["a", "b"])
    for setting, (error, message) in SETTINGS.items():
        assert_every_rank(results, setting, error, message)
    assert_every_rank(results, "after", None)


DUPLICATE_TIMED_OUT = ("duplicating the MPI communicator (collective over its 2 ranks) did not "
                       "complete within 3 s: some rank did not make a communicator from the same "
                       "MPI communicator")


@needs_mpirun
def test_comm_world_against_comm_self_never_hangs(tmp_path):
    # Program a (COMM_SELF) is a group of its own and gets the whole table's rows; program b
    # (COMM_WORLD) waits for a peer that never comes, and raises within comm_timeout.
    results = launch(tmp_path, "world_and_self", roles=["a", "b"])
    assert_every_rank({0: results[0]}, "setup", None)
    assert_every_rank({1: results[1]}, "setup", "RuntimeError", DUPLICATE_TIMED_OUT)


@needs_mpirun
def test_a_rank_whose_comm_is_refused_never_leaves_the_others_waiting(tmp_path):
    results = launch(tmp_path, "one_rank_without_communicator", roles=["a", "b"])
    assert_every_rank({0: results[0]}, "setup", "RuntimeError", DUPLICATE_TIMED_OUT)
    assert_every_rank({1: results[1]}, "setup", "ArgumentError", "got MPI.COMM_NULL")


NOT_COMMUNICATORS = {
    "group": "got an mpi4py Group, which is not a communicator",
    "win_null": "got an mpi4py Win, which is not a communicator",
    "datatype": "got an mpi4py Datatype, which is not a communicator",
    "info_null": "got an mpi4py Info, which is not a communicator",
    "request_null": "got an mpi4py Request, which is not a communicator",
    "comm_null": "got MPI.COMM_NULL",
    "intercomm": "got an intercommunicator (Intercomm)",
    "string": "got the string 'world'",
    "integer": "got int",
}


@needs_mpirun
def test_objects_that_are_not_intracommunicators_are_refused(tmp_path):
    results = launch(tmp_path, "not_communicators")
    for step, message in NOT_COMMUNICATORS.items():
        assert_every_rank(results, step, "ArgumentError", "comm must be None (one rank), 'mpi'",
                          message)
    assert_every_rank(results, "after", None)


@needs_mpirun
def test_a_communicator_after_mpi_finalize_is_a_clear_error(tmp_path):
    results = launch(tmp_path, "after_finalize")
    assert_every_rank(results, "comm_world", "RuntimeError", "MPI has been finalised")
    assert_every_rank(results, "mpi", "RuntimeError", "MPI has already been finalized")


@needs_mpirun
@pytest.mark.parametrize("ranks", [3, 4])
def test_partitions_with_groups_of_one_agree_over_the_world(tmp_path, ranks):
    # [0, 1], [2] (and [3]): each group gives the whole table's rows; a refusal by a rank that is
    # a group of its own reaches every rank, and so do settings or partitions that differ.
    results = launch(tmp_path, "partition", ranks=ranks)
    last = ranks - 1
    assert_every_rank(results, "rows", None)
    assert_every_rank(results, "python_refusal_in_a_group_of_one", "ArgumentError",
                      f"rank {last}: strict must be True or False, got 'no'")
    assert_every_rank(results, "dtype_refusal_in_a_group_of_one", "ArgumentError",
                      f"rank {last}: weight has dtype float64")
    assert_every_rank(results, "strict_differs_in_a_group_of_two", "ValueError",
                      "in the tp group of ranks 0,1", "strict")
    assert_every_rank(results, "partitions_differ", "ValueError",
                      f"rank {last} passes tp_size 2 and tp group [{last - 1},{last}]")
    assert_every_rank(results, "after", None)


# ---- one process: what a refused argument says, shard_range's arithmetic ----------------------

TABLE = np.arange(12, dtype=np.float32).reshape(4, 3)
IDS = np.array([0, 3, 1])
I4 = dict(weight_dtype="i4", per_token_scale=np.ones(4, np.float32), out_dtype="f32")

class RefusesExport:
    """A DLPack producer that will not export (as PyTorch does for a tensor that requires grad)."""

    def __dlpack__(self, stream=None):
        raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")

    def __dlpack_device__(self):
        return (1, 0)


class RefusesExportOnCuda(RefusesExport):
    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA: exported by the Python layer, before the core


REFUSED = [
    ("CUDA producer refuses", lambda: tpembed.embedding(IDS, RefusesExportOnCuda()),
     "weight must be an array tpembed can import; got RefusesExportOnCuda on CUDA, whose "
     "__dlpack__() says: Can't export tensors that require gradient"),
    ("producer refuses", lambda: tpembed.embedding(RefusesExport(), TABLE),
     "ids must be an array (NumPy, or a DLPack tensor such as PyTorch's or CuPy's) of a dtype "
     "tpembed takes, in native byte order; got test_agreement_mpi.RefusesExport, whose "
     "__dlpack__() says: Can't export tensors that require gradient"),
    # (what the call gets wrong, the call, what the message must say)
    ("ids None", lambda: tpembed.embedding(None, TABLE), "ids must be an array"),
    ("weight None", lambda: tpembed.embedding(IDS, None), "weight must be an array"),
    ("object ids", lambda: tpembed.embedding(IDS.astype(object), TABLE),
     "ids is an array of Python objects (dtype object)"),
    ("big-endian ids", lambda: tpembed.embedding(IDS.astype(">i8"), TABLE),
     "ids has byte-swapped dtype '>i8'"),
    ("big-endian out", lambda: tpembed.embedding(IDS, TABLE, out=np.zeros((3, 3), ">f4")),
     "out has byte-swapped dtype '>f4'"),
    ("hidden=4.0", lambda: tpembed.embedding(IDS, np.zeros((4, 2), np.uint8), hidden=4.0, **I4),
     "hidden must be an integer, got 4.0 (float)"),
    ("hidden='4'", lambda: tpembed.embedding(IDS, np.zeros((4, 2), np.uint8), hidden="4", **I4),
     "hidden must be an integer, got '4' (str)"),
    ("hidden=-3", lambda: tpembed.embedding(IDS, np.zeros((4, 2), np.uint8), hidden=-3, **I4),
     "hidden must be the number of columns of weight (i4), a count >= 0, got hidden=-3"),
    ("stream=-1", lambda: tpembed.embedding(IDS, TABLE, stream=-1),
     "stream must be a cudaStream_t handle, an integer in [0, 2**64) (0: the default stream), "
     "got -1"),
    ("stream='0'", lambda: tpembed.embedding(IDS, TABLE, stream="0"),
     "stream must be an integer cudaStream_t or an object with `cuda_stream`"),
    ("strict='yes'", lambda: tpembed.embedding(IDS, TABLE, strict="yes"),
     "strict must be True or False, got 'yes' (str)"),
    ("out_dtype=3", lambda: tpembed.embedding(IDS, TABLE, out_dtype=3),
     "out_dtype 3 is not a tpembed dtype"),
    ("tp_size='2'", lambda: tpembed.ParallelEmbedding(TABLE, tp_size="2"),
     "tp_size must be an integer, got '2' (str)"),
    ("tp_size=2.0", lambda: tpembed.ParallelEmbedding(TABLE, tp_size=2.0),
     "tp_size must be an integer, got 2.0 (float)"),
    ("tp_group=3", lambda: tpembed.ParallelEmbedding(TABLE, tp_group=3),
     "tp_group must be a sequence of ranks (e.g. [0, 1]), got 3 (int)"),
    ("sharding_dim='1'", lambda: tpembed.ParallelEmbedding(TABLE, sharding_dim="1"),
     "sharding_dim must be an integer, got '1' (str)"),
    ("vocab_size=True", lambda: tpembed.ParallelEmbedding(TABLE, vocab_size=True),
     "vocab_size must be an integer, got True (bool)"),
    ("placement=0", lambda: tpembed.ParallelEmbedding(TABLE, placement=0),
     "placement must be a str ('equal', 'packed'), got 0 (int)"),
    ("comm_timeout=0", lambda: tpembed.ParallelEmbedding(TABLE, comm_timeout=0),
     "comm_timeout must be a positive number of seconds, got 0"),
    ("comm_timeout='5'", lambda: tpembed.ParallelEmbedding(TABLE, comm_timeout="5"),
     "comm_timeout must be a number of seconds, got '5' (str)"),
    ("comm=3", lambda: tpembed.ParallelEmbedding(TABLE, comm=3), "got int"),
    ("forward(None)", lambda: tpembed.ParallelEmbedding(TABLE).forward(None),
     "ids must be an array"),
    ("forward(float ids)", lambda: tpembed.ParallelEmbedding(TABLE).forward(IDS * 1.0),
     "ids has dtype float64"),
    ("path=3", lambda: tpembed.ParallelEmbedding.from_checkpoint(3, "t"),
     "path must be a str or os.PathLike, got int"),
    ("tensor=None", lambda: tpembed.ParallelEmbedding.from_checkpoint("x", None),
     "tensor must be a str"),
    ("tensor with a NUL", lambda: tpembed.ParallelEmbedding.from_checkpoint("x", "embed\0.w"),
     "tensor 'embed\\x00.w' holds a NUL character"),
    ("path with a NUL", lambda: tpembed.ParallelEmbedding.from_checkpoint("m\0.st", "embed"),
     "path 'm\\x00.st' holds a NUL character"),
    ("shard_range(2**64)", lambda: tpembed.shard_range(2**64, 3, 2),
     "total must be an integer in [0, 9223372036854775807], got 18446744073709551616"),
    ("shard_range('3')", lambda: tpembed.shard_range(10, "3", 2),
     "tp_size must be an integer, got '3' (str)"),
]


@pytest.mark.parametrize("case,call,message", REFUSED, ids=[case for case, _, _ in REFUSED])
def test_a_refused_argument_says_which_what_and_what_is_taken(case, call, message):
    with pytest.raises(tpembed.ArgumentError) as raised:
        call()
    text = str(raised.value)
    assert message in text
    assert "incompatible function arguments" not in text


def test_numpy_scalars_are_taken_where_python_ones_are():
    out = tpembed.embedding(IDS, TABLE, strict=np.True_)
    np.testing.assert_array_equal(out, TABLE[IDS])
    layer = tpembed.ParallelEmbedding(TABLE, tp_size=np.int64(1), sharding_dim=np.int32(0),
                                      strict=np.bool_(False))
    np.testing.assert_array_equal(layer.forward(IDS), TABLE[IDS])
    assert tpembed.shard_range(np.int64(10), np.int32(4), np.int8(3), "equal") == (9, 3)


def test_argument_errors_are_value_and_type_errors():
    assert issubclass(tpembed.ArgumentError, ValueError)
    assert issubclass(tpembed.ArgumentError, TypeError)


def _one_buffer(table_rows, out_rows, out_first_row):
    """A table and an out cut from one buffer, out starting at row `out_first_row`."""
    buffer = np.arange((max(table_rows, out_first_row + out_rows)) * 3, dtype=np.float32)
    table = buffer[:table_rows * 3].reshape(table_rows, 3)
    out = buffer[out_first_row * 3:(out_first_row + out_rows) * 3].reshape(out_rows, 3)
    return table, out


@pytest.mark.parametrize("make", ["table", "tail_of_table", "scale", "padding", "ids"])
def test_an_out_that_overlaps_an_input_is_refused(make):
    scale = np.ones(4, np.float32)
    kwargs, ids, table = {}, IDS, TABLE
    if make == "table":
        table, out = _one_buffer(4, 3, 0)
    elif make == "tail_of_table":  # out starts inside the last row
        table, out = _one_buffer(4, 3, 3)
    elif make == "scale":
        out = np.zeros((3, 3), np.float32)
        kwargs["per_token_scale"] = out.reshape(-1)[:4]
    elif make == "padding":
        out = np.zeros((3, 3), np.float32)
        kwargs["padding"] = out[1:2]
    else:
        out = np.zeros((3, 3), np.float32)
        ids = out.reshape(-1).view(np.int32)[:3]
        ids[...] = IDS
    names = {"table": "weight", "tail_of_table": "weight", "scale": "per_token_scale"}
    name = names.get(make, make)
    with pytest.raises(tpembed.ArgumentError, match=f"out shares memory with {name} "):
        tpembed.embedding(ids, table, out=out, **kwargs)
    layer = tpembed.ParallelEmbedding(table, **kwargs)
    with pytest.raises(tpembed.ArgumentError, match=f"out shares memory with {name} "):
        layer.forward(ids, out=out)
    # An out next to the inputs but sharing no byte is taken, and holds the rows.
    separate = np.zeros((3, 3), np.float32)
    layer.forward(IDS, out=separate)
    expected = table[IDS] * (kwargs["per_token_scale"][IDS, None] if "per_token_scale" in kwargs
                             else 1)
    np.testing.assert_array_equal(separate, expected)


def test_adjacent_buffers_are_not_overlaps():
    buffer = np.arange(24, dtype=np.float32)
    table, out = buffer[:12].reshape(4, 3), buffer[12:21].reshape(3, 3)  # out ends where nothing is
    tpembed.embedding(IDS, table, out=out)
    np.testing.assert_array_equal(out, np.arange(12, dtype=np.float32).reshape(4, 3)[IDS])


def test_shard_range_near_the_largest_index_does_not_overflow():
    largest = 2**63 - 1
    assert tpembed.shard_range(largest, 3, 1, "equal") == (3074457345618258603,
                                                           3074457345618258603)
    with pytest.raises(tpembed.ArgumentError,
                       match="reach past the largest 64-bit index at tp_rank 2; use placement "
                             "'packed'"):
        tpembed.shard_range(largest, 3, 2, "equal")
    packed = [tpembed.shard_range(largest, 3, rank, "packed") for rank in range(3)]
    assert all(offset >= 0 and size >= 0 for offset, size in packed)
    assert packed[2][0] + packed[2][1] == largest
    assert sum(size for _, size in packed) == largest
