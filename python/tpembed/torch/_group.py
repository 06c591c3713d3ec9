"""tpembed's communicators from a torch.distributed process group: processes started by torchrun
need neither mpirun nor mpi4py.

- CUDA tables over a group with the nccl backend (and a tpembed built with NCCL): tpembed's own NCCL
  communicator, its unique id made on the group's rank 0 and handed out through the group.
- Anything else (CPU tables over gloo, or CUDA tables without NCCL): the host engine, whose
  collectives are the group's own, run here on host buffers (CUDA tables are staged by the core).

Which engine a layer gets is agreed over the group first, with every rank's refusal of its own
arguments, so that ranks that differ (one CPU table, one CUDA table) raise together instead of
waiting in different collectives.
"""

from __future__ import annotations

import ctypes
import datetime
import os
from typing import Any, Optional, Sequence

import numpy
import torch
import torch.distributed as dist

import tpembed
from tpembed._communicators import HostGroup

from ._dtypes import TORCH


def default_timeout(timeout: Optional[float]) -> float:
    """`timeout`, else TPEMBED_COMM_TIMEOUT_SECONDS, else 300 s (as the MPI engine's)."""
    if timeout is None:
        timeout = float(os.environ.get("TPEMBED_COMM_TIMEOUT_SECONDS", "300"))
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise tpembed.ArgumentError(f"comm_timeout must be a number of seconds > 0, got "
                                    f"{timeout!r}")
    return float(timeout)


def _host_bytes(address: int, nbytes: int) -> torch.Tensor:
    """A uint8 CPU tensor over `nbytes` bytes of host memory at `address` (no copy)."""
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8)
    buffer = (ctypes.c_uint8 * nbytes).from_address(address)
    return torch.from_numpy(numpy.ctypeslib.as_array(buffer))


class TorchGroupCollectives(HostGroup):
    """The collectives of a torch.distributed process group, on host buffers, for tpembed's host
    engine. With a group whose backend runs only CUDA tensors (nccl), the buffers travel through
    `device`. Each collective waits at most `timeout` seconds, then raises."""

    def __init__(self, group: Any, timeout: float, device: Optional[torch.device] = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.timeout = datetime.timedelta(seconds=timeout)
        self.device = device if device is not None else torch.device("cpu")
        self.name = f"torch:{dist.get_backend(group)}"

    def _wait(self, work: Any, what: str) -> None:
        try:
            work.wait(self.timeout)
        except Exception as error:
            raise RuntimeError(f"torch.distributed {what} did not complete within "
                               f"{self.timeout.total_seconds():g} s (a rank of the group has not "
                               f"reached it, or failed): {error}") from error

    def all_reduce_sum(self, send: int, recv: int, count: int, dtype: str) -> None:
        element = torch.empty(0, dtype=TORCH[dtype]).element_size()
        out = _host_bytes(recv, count * element)
        if send != recv:
            out.copy_(_host_bytes(send, count * element))
        values = out.view(TORCH[dtype])
        # f16 and bf16 are summed in f32 and rounded once, as tpembed's other engines do.
        wide = values.float() if dtype in ("f16", "bf16") else values
        moved = wide.to(self.device)
        self._wait(dist.all_reduce(moved, op=dist.ReduceOp.SUM, group=self.group, async_op=True),
                   "all_reduce")
        if moved is not values:  # summed in place when it is the buffer itself (f32, i32, i64)
            values.copy_(moved.to("cpu"))

    def all_gather(self, send: int, recv: int, bytes_per_rank: int) -> None:
        if bytes_per_rank == 0:
            return  # every rank passes the same count: nobody waits
        mine = _host_bytes(send, bytes_per_rank).to(self.device)
        if self.device.type == "cpu":
            blocks = list(_host_bytes(recv, bytes_per_rank * self.size).split(bytes_per_rank))
            # `send` may be this rank's own block of `recv`: gloo gets a copy to read from.
            self._wait(dist.all_gather(blocks, mine.clone(), group=self.group, async_op=True),
                       "all_gather")
            return
        out = torch.empty(bytes_per_rank * self.size, dtype=torch.uint8, device=self.device)
        self._wait(dist.all_gather_into_tensor(out, mine, group=self.group, async_op=True),
                   "all_gather")
        _host_bytes(recv, bytes_per_rank * self.size).copy_(out.cpu())


def agree(collectives: TorchGroupCollectives, error: Optional[BaseException],
          facts: Sequence[int] = ()) -> list:
    """Every rank's `facts` (ints), once no rank of the group failed: when any rank passes an
    `error`, every rank raises the library's agreed error naming each failing rank and its reason
    (ValueError when the lowest failing rank's was a TypeError or ValueError, else RuntimeError)."""
    argument_error = isinstance(error, (TypeError, ValueError))
    message = None if error is None else (str(error) if argument_error
                                          else f"{type(error).__name__}: {error}")
    mine = numpy.asarray(facts, dtype=numpy.int64).tobytes()
    gathered = tpembed._tpembed._agree(collectives, argument_error, message, mine)
    return [numpy.frombuffer(record, dtype=numpy.int64).tolist() for record in gathered]


def world_group(group: Any) -> Any:
    """`group`, or the default (world) group; raises when torch.distributed is not initialised."""
    if not dist.is_available():
        raise RuntimeError("this torch has no torch.distributed")
    if not dist.is_initialized():
        raise RuntimeError("tpembed.torch.ParallelEmbedding needs torch.distributed: call "
                           "torch.distributed.init_process_group() first (torchrun sets up its "
                           "environment), or pass group= (for one process: "
                           "init_process_group('gloo', rank=0, world_size=1, store=...))")
    if group is None:
        return dist.group.WORLD
    if dist.get_rank(group) < 0:
        raise tpembed.ArgumentError("group does not contain this process (its rank in it is -1): "
                                    "every rank passes the group it belongs to")
    return group


def communicator(group: Any, on_cuda: bool, device_index: int, timeout: float,
                 local_error: Optional[BaseException]) -> Any:
    """The `comm` for tpembed.ParallelEmbedding over `group`; collective over the group. Raises on
    every rank when any rank passes a `local_error` or the ranks' tables are on different kinds of
    device."""
    backend = str(dist.get_backend(group))
    staging = None
    if "gloo" not in backend and "nccl" in backend:
        staging = torch.device("cuda", torch.cuda.current_device())  # only CUDA collectives
    host = TorchGroupCollectives(group, timeout, staging)
    use_nccl = on_cuda and "nccl" in backend and tpembed.nccl_available()
    facts = agree(host, local_error, [int(on_cuda), int(use_nccl)])
    kinds = {tuple(f[:2]) for f in facts}
    if len(kinds) > 1:
        where = ", ".join(f"rank {r}: {'CUDA' if f[0] else 'CPU'}" for r, f in enumerate(facts))
        raise tpembed.ArgumentError(f"the ranks' tables are not on the same kind of device "
                                    f"({where}): every rank's shard must be on the CPU, or "
                                    "every rank's on a CUDA device")
    if not use_nccl:
        return host
    unique_id = [tpembed.nccl_unique_id() if host.rank == 0 else None]
    dist.broadcast_object_list(unique_id, src=dist.get_global_rank(group, 0), group=group)
    return tpembed.NcclCommunicator(unique_id[0], rank=host.rank, size=host.size,
                                    device=device_index, timeout=timeout)
