"""Scenarios of ranks that disagree, for test_agreement_mpi.py: run under mpirun, one per launch.

    mpirun -np 2 python3 agreement_scenarios.py <scenario> <folder> [role]

Every rank runs the scenario and writes, for each step of it, one JSON line
``{"rank": r, "step": ..., "error": type or null, "types": [the error's classes], "message": ...,
"ok": ...}`` to <folder>/rank<r>.jsonl (files, not stdout, whose lines mpirun may interleave),
which the test reads for every rank. `role` picks what an MPMD launch gives each program
(``-np 1 ... a : -np 1 ... b``); without it, behaviour depends on the rank.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from mpi4py import MPI

import tpembed

WORLD = MPI.COMM_WORLD
RANK, SIZE = WORLD.Get_rank(), WORLD.Get_size()
V, H = 11, 5  # neither divides by 2 or 3: uneven shards
TABLE = (np.arange(V * H, dtype=np.float32).reshape(V, H) - 20.0) / 4.0
IDS = np.array([[3, 0, 10], [7, 7, 1]], dtype=np.int64)


def report(step: str, call) -> None:
    """Runs `call` and prints what it gave on this rank: its result (`ok`) or its error."""
    line = {"rank": RANK, "step": step, "error": None, "types": [], "message": "", "ok": None}
    try:
        line["ok"] = call()
    except Exception as error:  # the test asserts the type on every rank
        line["error"] = type(error).__name__
        line["types"] = [cls.__name__ for cls in type(error).__mro__]
        line["message"] = str(error)
    with open(os.path.join(sys.argv[2], f"rank{RANK}.jsonl"), "a") as results:
        results.write(json.dumps(line) + "\n")


def shard_layer(comm=WORLD, **kwargs) -> tpembed.ParallelEmbedding:
    """This rank's packed vocab shard of TABLE over `comm`."""
    offset, rows = tpembed.shard_range(V, comm.Get_size(), comm.Get_rank(), "packed")
    return tpembed.ParallelEmbedding(TABLE[offset:offset + rows], comm=comm, placement="packed",
                                     **kwargs)


def rows_match(layer, ids=IDS) -> bool:
    """A forward on every rank gives the rows of the whole table."""
    return bool(np.array_equal(layer.forward(ids), TABLE[ids]))


# ---- forward: one rank's arguments are refused ------------------------------------------------

def _strided_ids():
    return np.repeat(IDS, 2, axis=1)[:, ::2]  # the same ids, every other element


def _ids_under_out():
    # ids and out in one buffer: the ids' bytes are the start of out's
    buffer = np.zeros(IDS.size * H, np.float32)
    ids = buffer.view(np.int64)[:IDS.size].reshape(IDS.shape)
    ids[...] = IDS
    return ids, buffer.reshape(IDS.shape + (H,))


FORWARD_REFUSALS = {
    # step: (the failing rank, what it passes to forward instead of (IDS, None))
    "float64_ids": (1, lambda layer: layer.forward(IDS.astype(np.float64))),
    "noncontiguous_ids": (0, lambda layer: layer.forward(_strided_ids())),
    "float64_out": (1, lambda layer: layer.forward(IDS, out=np.empty(IDS.shape + (H,)))),
    "readonly_out": (0, lambda layer: layer.forward(
        IDS, out=np.broadcast_to(np.float32(0), IDS.shape + (H,)))),
    "ids_not_an_array": (1, lambda layer: layer.forward(IDS.tolist())),
    "none_ids": (0, lambda layer: layer.forward(None)),
    "negative_stream": (1, lambda layer: layer.forward(IDS, stream=-1)),
    "out_overlaps_the_table": (1, lambda layer: layer.forward(IDS, out=layer.overlapping_out)),
    "out_overlaps_ids": (0, lambda layer: layer.forward(*_ids_under_out())),
}


def forward_refusals(role):
    """Each refusal on one rank raises on both; afterwards the layer still gives the right rows."""
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    # The shard and, after it, room for an `out` that starts inside its last row.
    buffer = np.zeros((rows + IDS.size) * H, np.float32)
    weight = buffer[:rows * H].reshape(rows, H)
    weight[...] = TABLE[offset:offset + rows]
    layer = tpembed.ParallelEmbedding(weight, comm=WORLD, placement="packed")
    layer.overlapping_out = buffer[(rows - 1) * H:(rows - 1 + IDS.size) * H].reshape(
        IDS.shape + (H,))
    for step, (failing_rank, bad_call) in FORWARD_REFUSALS.items():
        report(step, lambda: bad_call(layer) if RANK == failing_rank else rows_match(layer))
        report(step + "/after", lambda: rows_match(layer))


def skipped_forward(role):
    """Rank 1 skips a forward: rank 0 raises within comm_timeout instead of waiting forever."""
    layer = shard_layer(comm_timeout=3)
    report("forward", lambda: rows_match(layer) if RANK == 0 else "skipped")


def unchecked_refusal(role):
    """collective_checks=False: rank 1's refusal stays on rank 1, and rank 0, alone in the
    exchange, raises within comm_timeout instead of waiting forever."""
    layer = shard_layer(comm_timeout=3, collective_checks=False)
    report("forward", lambda: rows_match(layer, IDS if RANK == 0 else IDS.astype(np.float64)))


def different_ids(role):
    """Ranks that pass different ids of the same count: the group's ids fingerprint refuses."""
    layer = shard_layer()
    ids = IDS.copy()
    if RANK == 1:
        ids[0, 0] = 4
    report("different_ids", lambda: layer.forward(ids))
    report("different_ids/after", lambda: rows_match(layer))


# ---- set-up: one rank's arguments are refused, or settings differ ----------------------------

def _setup_refusal(step):
    offset, rows = tpembed.shard_range(V, SIZE, RANK, "packed")
    shard = TABLE[offset:offset + rows]
    kwargs = {}
    if step == "float64_weight":
        shard = shard.astype(np.float64)
    elif step == "string_tp_size":
        kwargs["tp_size"] = "2"
    elif step == "float_hidden":
        shard, kwargs = np.zeros((rows, 3), np.uint8), {
            "weight_dtype": "i4", "hidden": 5.0, "per_token_scale": np.ones(rows, np.float32),
            "out_dtype": "f32"}
    elif step == "negative_hidden":
        shard, kwargs = np.zeros((rows, 3), np.uint8), {
            "weight_dtype": "i4", "hidden": -3, "per_token_scale": np.ones(rows, np.float32),
            "out_dtype": "f32"}
    elif step == "scale_not_an_array":
        kwargs["per_token_scale"] = [1.0] * rows
    elif step == "object_padding":
        kwargs["padding"] = np.zeros((1, H), dtype=object)
    elif step == "big_endian_weight":
        shard = shard.astype(">f4")
    elif step == "tp_group_of_strings":
        kwargs["tp_group"] = ["0", "1"]
    elif step == "strict_none":
        kwargs["strict"] = None
    return shard, kwargs


SETUP_REFUSALS = ["float64_weight", "string_tp_size", "float_hidden", "negative_hidden",
                  "scale_not_an_array", "object_padding", "big_endian_weight",
                  "tp_group_of_strings", "strict_none"]


def setup_refusals(role):
    """Rank 1 alone passes a bad argument: every rank raises it; then a good set-up works."""
    for step in SETUP_REFUSALS:
        good = tpembed.shard_range(V, SIZE, RANK, "packed")
        shard, kwargs = _setup_refusal(step) if RANK == 1 else (
            TABLE[good[0]:good[0] + good[1]], {})
        report(step, lambda: tpembed.ParallelEmbedding(shard, comm=WORLD, placement="packed",
                                                       **kwargs) and True)
    report("after", lambda: rows_match(shard_layer()))


SETTINGS = {  # setting: (program a's value, program b's value)
    "strict": (True, False),
    "collective_checks": (True, False),
    "tp_size": (2, 1),
    "tp_group": ([0, 1], [1]),
    "out_dtype": ("f32", "f16"),
    "vocab_exchange": ("all_reduce", "owned_rows"),
    "placement": ("packed", "equal"),
}


def settings_differ(role):
    """MPMD: program a and program b pass a different value of each setting in turn."""
    for setting, values in SETTINGS.items():
        value = values[0] if role == "a" else values[1]
        kwargs = {setting: value}
        placement = kwargs.pop("placement", "packed")
        offset, rows = tpembed.shard_range(V, SIZE, RANK, placement)
        shard = np.zeros((rows, H), np.float32)
        present = TABLE[offset:offset + rows]
        shard[:present.shape[0]] = present
        report(setting, lambda: tpembed.ParallelEmbedding(shard, comm=WORLD, placement=placement,
                                                          vocab_size=V if placement == "equal"
                                                          else None, **kwargs) and True)
    report("after", lambda: rows_match(shard_layer()))


def world_and_self(role):
    """MPMD: program a passes MPI.COMM_SELF (it works alone), program b MPI.COMM_WORLD (its peer
    never comes: it must raise within comm_timeout instead of waiting forever)."""
    comm = MPI.COMM_SELF if role == "a" else WORLD
    report("setup", lambda: rows_match(
        tpembed.ParallelEmbedding(TABLE, comm=comm, comm_timeout=3)))


def different_checkpoints(role):
    """Ranks that opened different checkpoints (10 rows against 20, packed: their shards would fit
    together into a table of neither) are refused on every rank; copies of one file are one."""
    from checkpoints import write_safetensors
    folder = sys.argv[2]
    if RANK == 0:
        write_safetensors(os.path.join(folder, "small.safetensors"), {"embed": ("F32", TABLE[:10])})
        big = np.concatenate([TABLE, TABLE[:9]])
        write_safetensors(os.path.join(folder, "large.safetensors"), {"embed": ("F32", big)})
        write_safetensors(os.path.join(folder, "copy.safetensors"), {"embed": ("F32", TABLE[:10])})
    WORLD.Barrier()

    def open_rows(name):
        layer = tpembed.ParallelEmbedding.from_checkpoint(
            os.path.join(folder, name), "embed", comm=WORLD, placement="packed")
        ids = np.array([0, 9, 4])
        return bool(np.array_equal(layer.forward(ids), TABLE[ids]))

    report("different_files", lambda: open_rows("small.safetensors" if RANK == 0
                                                else "large.safetensors"))
    report("copies_of_one_file", lambda: open_rows("small.safetensors" if RANK == 0
                                                   else "copy.safetensors"))
    report("name_refused_on_one_rank", lambda: tpembed.ParallelEmbedding.from_checkpoint(
        os.path.join(folder, "small.safetensors"), "embed" if RANK == 0 else b"embed",
        comm=WORLD) and True)


# ---- communicators that are not -------------------------------------------------------------

def one_rank_without_communicator(role):
    """MPMD: program b passes MPI.COMM_NULL (refused on its rank: it has no group to tell), program
    a MPI.COMM_WORLD: it must raise within comm_timeout instead of waiting for b forever."""
    comm = WORLD if role == "a" else MPI.COMM_NULL
    report("setup", lambda: tpembed.ParallelEmbedding(TABLE, comm=comm, comm_timeout=3) and True)


def not_communicators(role):
    """Every rank passes the same non-communicator: refused on each rank, nothing waits."""
    group = WORLD.Get_group()
    inter = WORLD.Split(RANK % 2, RANK).Create_intercomm(0, WORLD, 1 - RANK % 2, tag=7)
    objects = {"group": group, "win_null": MPI.WIN_NULL, "datatype": MPI.INT,
               "info_null": MPI.INFO_NULL, "comm_null": MPI.COMM_NULL, "intercomm": inter,
               "request_null": MPI.REQUEST_NULL, "string": "world", "integer": 0}
    for step, comm in objects.items():
        report(step, lambda: tpembed.ParallelEmbedding(TABLE, comm=comm) and True)
    report("after", lambda: rows_match(shard_layer()))
    inter.Free()
    group.Free()


def after_finalize(role):
    """MPI finalised by mpi4py: a clear error, not an abort of the job."""
    MPI.Finalize()
    report("comm_world", lambda: tpembed.ParallelEmbedding(TABLE, comm=WORLD) and True)
    report("mpi", lambda: tpembed.ParallelEmbedding(TABLE, comm="mpi") and True)


# ---- partitions of the world into tp groups ---------------------------------------------------

def partition_groups():
    """[0, 1], [2], [3] (np 4) or [0, 1], [2] (np 3): groups of one among a group of two."""
    return [[0, 1]] + [[r] for r in range(2, SIZE)]


def partition(role):
    groups = partition_groups()
    mine = next(group for group in groups if RANK in group)
    offset, rows = tpembed.shard_range(V, len(mine), mine.index(RANK), "packed")

    def build(**kwargs):
        return tpembed.ParallelEmbedding(TABLE[offset:offset + rows], comm=WORLD,
                                         placement="packed", tp_group=mine, **kwargs)

    report("rows", lambda: rows_match(build()))
    # The last rank is a group of its own; its refusals still reach the group of two.
    last = SIZE - 1
    report("python_refusal_in_a_group_of_one",
           lambda: build(strict="no" if RANK == last else False) and True)
    shard = TABLE[offset:offset + rows]
    report("dtype_refusal_in_a_group_of_one", lambda: tpembed.ParallelEmbedding(
        shard.astype(np.float64) if RANK == last else shard, comm=WORLD, placement="packed",
        tp_group=mine) and True)
    report("strict_differs_in_a_group_of_two",
           lambda: build(strict=RANK == 0) and True)
    # Ranks that disagree on the partition: the last rank claims the group of the one before it.
    claimed = [last - 1, last] if RANK == last else mine
    report("partitions_differ", lambda: tpembed.ParallelEmbedding(
        TABLE, comm=WORLD, tp_group=claimed) and True)
    report("after", lambda: rows_match(build()))


SCENARIOS = {f.__name__: f for f in [
    forward_refusals, skipped_forward, unchecked_refusal, different_ids, different_checkpoints,
    setup_refusals, settings_differ, world_and_self, one_rank_without_communicator,
    not_communicators, after_finalize, partition]}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](sys.argv[3] if len(sys.argv) > 3 else None)
