"""What `comm=` may be, and how it reaches the extension module (an engine description string).

A communicator is checked here, on each rank alone: a rank whose `comm` is not a usable communicator
has no group through which to tell the others. They are protected by the MPI engine's timeout
instead (MpiOptions, ParallelEmbedding's comm_timeout): the duplicate it makes of the
communicator, and every agreement after it, wait for the other ranks for a bounded time, so a rank
that never comes (it passed another communicator, failed before set-up, or died) makes the others
raise.
"""

from __future__ import annotations

from typing import Any

from ._tpembed import ArgumentError


class NcclCommunicator:
    """An NCCL communicator for ParallelEmbedding(comm=...): this process is `rank` of `size`, on
    CUDA device `device`, joined through `unique_id` (from nccl_unique_id() on one rank). Set-up and
    collectives that do not finish within `timeout` seconds abort it and raise RuntimeError on this
    rank instead of hanging. The library creates the communicator when a ParallelEmbedding is built,
    and an NCCL unique id sets up one communicator: give each ParallelEmbedding its own
    NcclCommunicator, with a new nccl_unique_id() handed to every rank (a second use raises)."""

    def __init__(self, unique_id: bytes, rank: int, size: int, device: int = 0,
                 timeout: float = 300.0):
        from ._arguments import integer, positive_seconds
        if not isinstance(unique_id, (bytes, bytearray)):
            raise ArgumentError("unique_id must be bytes (from tpembed.nccl_unique_id()), got "
                                f"{type(unique_id).__name__}")
        self.unique_id = bytes(unique_id)
        self.size = integer(size, "size", 1, bits=32)
        self.rank = integer(rank, "rank", 0, bits=32)
        if self.rank >= self.size:
            raise ArgumentError(f"rank {self.rank} is outside [0, size = {self.size})")
        self.device = integer(device, "device", 0, bits=32)
        self.timeout = positive_seconds(timeout, "timeout")
        self._used = False

    def _engine(self) -> str:
        if self._used:
            raise RuntimeError("this NcclCommunicator already set up a ParallelEmbedding, and an "
                               "NCCL unique id serves one set-up: make a new NcclCommunicator, "
                               "with a new tpembed.nccl_unique_id() handed to every rank, for "
                               "each layer")
        self._used = True
        return (f"nccl:{self.rank}:{self.size}:{self.device}:{self.timeout!r}:"
                f"{self.unique_id.hex()}")


class HostGroup:
    """Collectives that another framework runs for tpembed over host memory (tpembed.torch's
    torch.distributed groups): ParallelEmbedding(comm=...) then needs no MPI. Subclasses set `rank`,
    `size` and `name` and implement the two collectives, which take host addresses (ints): every
    rank calls them in the same order; each raises when its collective fails or times out (the
    layer then raises RuntimeError and can no longer be used)."""

    rank: int = 0
    size: int = 1
    name: str = "host"

    def all_reduce_sum(self, send: int, recv: int, count: int, dtype: str) -> None:
        """Sums `count` elements of `dtype` ("f32", "f16", "bf16", "i32", "i64") over the ranks
        into `recv` (send == recv: in place)."""
        raise NotImplementedError

    def all_gather(self, send: int, recv: int, bytes_per_rank: int) -> None:
        """Rank r's `bytes_per_rank` bytes at `send` land at recv + r * bytes_per_rank."""
        raise NotImplementedError


_ACCEPTED = ("comm must be None (one rank), 'mpi' (MPI_COMM_WORLD), an mpi4py intracommunicator "
             "(MPI.COMM_WORLD, a Split of it...) or a tpembed.NcclCommunicator")


def _live_mpi():
    """mpi4py's MPI module when MPI is running; raises when MPI was finalised."""
    from mpi4py import MPI
    if MPI.Is_finalized():
        raise RuntimeError("comm is an mpi4py communicator but MPI has been finalised "
                           "(MPI.Finalize() was called, or the interpreter is exiting): set up "
                           "layers while MPI runs")
    if not MPI.Is_initialized():
        raise RuntimeError("comm is an mpi4py communicator but MPI is not initialised")
    return MPI


def engine(comm: Any) -> Any:
    """The engine description the core takes for `comm`: "single", "mpi", "mpi@<address of the
    MPI_Comm>", "nccl:..." or a HostGroup itself; raises TypeError or ValueError for anything
    else."""
    if comm is None or (isinstance(comm, str) and comm == "single"):
        return "single"
    if isinstance(comm, NcclCommunicator):
        return comm._engine()
    if isinstance(comm, HostGroup):
        return comm  # the core runs its collectives (host engine)
    if isinstance(comm, str) and comm == "mpi":
        return "mpi"
    if isinstance(comm, str):
        raise ArgumentError(f"{_ACCEPTED}; got the string {comm!r}")
    if not type(comm).__module__.startswith("mpi4py"):
        raise ArgumentError(f"{_ACCEPTED}; got {type(comm).__name__}")
    MPI = _live_mpi()
    if not isinstance(comm, MPI.Comm):
        # A Group, Win, Datatype, Info, Request...: MPI would take its handle for an MPI_Comm.
        raise ArgumentError(f"{_ACCEPTED}; got an mpi4py {type(comm).__name__}, which is not a "
                            "communicator")
    if comm == MPI.COMM_NULL:
        raise ArgumentError(f"{_ACCEPTED}; got MPI.COMM_NULL (for example the result of a Split "
                            "with MPI.UNDEFINED): this rank is in no group")
    if not isinstance(comm, MPI.Intracomm) or comm.Is_inter():
        raise ArgumentError(f"{_ACCEPTED}; got an intercommunicator ({type(comm).__name__}), whose "
                            "two groups cannot share one table")
    if MPI.Comm.Compare(comm, MPI.COMM_WORLD) == MPI.IDENT:
        return "mpi"
    # Any other communicator: the library duplicates it (collective over `comm`).
    return f"mpi@{MPI._addressof(comm)}"

