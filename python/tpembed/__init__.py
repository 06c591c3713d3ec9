"""tpembed: embedding lookup with tensor parallelism, for NumPy arrays and CUDA tensors.

Tensors go in and out through DLPack, zero copy: NumPy arrays on the CPU, PyTorch or CuPy tensors on
the CPU or a CUDA device. The module does not link PyTorch.

    out = tpembed.embedding(ids, weight)                      # tp 1, a float table
    out = tpembed.embedding(ids, table_i8, per_token_scale=scale, out_dtype="bf16")
    layer = tpembed.ParallelEmbedding(shard, comm=MPI.COMM_WORLD, tp_size=2)   # under mpirun
    out = layer.forward(ids)                                   # the same full output on every rank
    grad = tpembed.embedding_backward(ids, grad_out, V)        # [V, H] f32, the same bits every run
    grad_shard = layer.backward(ids, grad_out)                 # each rank: its shard's gradient

Dtypes are never converted. Tables are f32, f16, bf16, i8, fp8_e4m3 or i4; ids int32 or int64;
scales f32, f16 or bf16; outputs f32, f16 or bf16 (a float table's own dtype by default, named with
`out_dtype` for a quantized one). Where DLPack or NumPy has no such dtype, pass the raw bits and
declare them: fp8_e4m3 as uint8 with ``weight_dtype="fp8_e4m3"``, int4 as uint8 ``[rows,
ceil(hidden/2)]`` (two signed values a byte, low nibble first) with ``weight_dtype="i4",
hidden=H``, bf16 as uint16 with ``weight_dtype="bf16"`` (or ``scale_dtype="bf16"``). ml_dtypes
bfloat16 and float8_e4m3fn arrays are recognised as such. A bf16 output on the CPU is an
ml_dtypes.bfloat16 array where ml_dtypes is installed, else a uint16 array of the bf16 bits.

Errors carry the library's message: bad arguments raise ArgumentError (a ValueError and a TypeError
both), saying which argument, what was given and what is accepted; shapes that do not fit raise
ValueError; ids out of range in strict mode raise OutOfRangeError (an IndexError with
``first_bad_id``, ``position`` and ``count``); communicator, backend and unsupported-feature
failures raise RuntimeError. Over a group, a refusal on one rank raises on every rank of it.

CUDA tensors run on the caller's stream: ``stream=`` takes an integer cudaStream_t handle or an
object with ``cuda_stream`` (a torch.cuda.Stream); by default the current PyTorch (or CuPy) stream
of the table's framework, else the legacy default stream. Nothing synchronises with the host
unless ``strict=True``, so a PyTorch CUDA graph can capture the call.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence, Tuple

from . import _tpembed as _core
from ._tpembed import ArgumentError, OutOfRangeError, cuda_built, cuda_device_count, mpi_available

__all__ = [
    "embedding",
    "ParallelEmbedding",
    "Layout",
    "OutOfRangeError",
    "ArgumentError",
    "shard_range",
    "cuda_built",
    "cuda_device_count",
    "mpi_available",
    "nccl_available",
    "nccl_unique_id",
    "NcclCommunicator",
    "clear_embedding_cache",
    "embedding_backward",
    "gradient_workspace_bytes",
]

from . import _arguments as _check
from ._communicators import NcclCommunicator
from ._communicators import engine as _communicator
from ._frameworks import allocator as _allocator
from ._frameworks import dtype_name as _dtype_name
from ._frameworks import prepare as _prepare
from ._frameworks import prepare_out as _prepare_out
from ._frameworks import stream_handle as _stream_handle
from ._gradient import embedding_backward, gradient_workspace_bytes
from . import _gradient


def _prepare_shard(weight, per_token_scale, padding, padding_scale, weight_dtype, scale_dtype):
    """The table, its scales and padding as the module takes them, with the dtypes they declare."""
    declared_table = _dtype_name(weight_dtype, "weight_dtype")
    declared_scale = _dtype_name(scale_dtype, "scale_dtype")
    table, declared_table = _prepare(weight, "weight", declared_table)
    scale, declared_scale = _prepare(per_token_scale, "per_token_scale", declared_scale)
    pad, declared_table = _prepare(padding, "padding", declared_table)
    pad_scale, declared_scale = _prepare(padding_scale, "padding_scale", declared_scale)
    return table, scale, pad, pad_scale, declared_table, declared_scale


def embedding(ids: Any, weight: Any, *, per_token_scale: Any = None, padding: Any = None,
              padding_scale: Any = None, out_dtype: Any = None, strict: bool = False,
              out: Any = None, stream: Any = None, weight_dtype: Any = None,
              scale_dtype: Any = None, hidden: Optional[int] = None) -> Any:
    """Looks up `ids` in `weight` (tp 1): returns ``out`` of shape ``ids.shape + (H,)``.

    ids: int32 or int64 array of any shape (empty allowed), on the table's device.
    weight: the table, ``[V, H]`` (i4: uint8 ``[V, ceil(H/2)]`` with ``weight_dtype="i4",
        hidden=H``).
    per_token_scale: one f32/f16/bf16 scale per table row; required for quantized tables.
        ``out[t] = float(weight[id]) * float(scale[id])`` in fp32, rounded once.
    padding: extra rows logically after the table (same dtype and columns; ids ``V..V+P-1``
        select them), with ``padding_scale`` (one per padding row) when the table has scales.
    out_dtype: "f32", "f16" or "bf16" (or a NumPy/PyTorch dtype); default the table's dtype,
        required for quantized tables.
    strict: raise OutOfRangeError when an id is negative or past the last row (the lookup itself
        writes zero rows for such ids in any mode). On a GPU this reads the count back: a host
        synchronisation.
    out: an output array to write (C-contiguous, right shape and dtype, on the table's device);
        by default one is allocated in the table's framework (NumPy for host arrays).
    stream: CUDA tables only: an integer cudaStream_t or an object with ``cuda_stream``; default
        the framework's current stream.
    weight_dtype, scale_dtype, hidden: declare what raw uint8/uint16 bits hold (see the module
        docstring).

    Returns ``out`` (the given one, or the new array).

    On a CUDA table without strict the call is one gather kernel on `stream` (after allocating
    ``out`` when it is not given): nothing else is allocated and nothing waits, so a CUDA graph can
    capture it (``torch.cuda.graph``, torch.compile's ``mode="reduce-overhead"``), for a table it
    has not seen before too; bad ids are not counted. With strict the set-up (its checks, and the
    device counter the count is read from) is kept per distinct table address, dtypes, shapes and
    options, so repeated strict calls do not allocate again; clear_embedding_cache() frees those.
    """
    table, scale, pad, pad_scale, declared_table, declared_scale = _prepare_shard(
        weight, per_token_scale, padding, padding_scale, weight_dtype, scale_dtype)
    ids_arg, _ = _prepare(ids, "ids")
    allocated = _core._embedding(
        ids_arg, table, _prepare_out(out), _allocator(weight), scale, pad, pad_scale,
        _dtype_name(out_dtype, "out_dtype"), declared_table, declared_scale,
        _check.optional_integer(hidden, "hidden"), _check.boolean(strict, "strict"),
        _stream_handle(stream, weight))
    return out if out is not None else allocated


def clear_embedding_cache() -> None:
    """Frees the CUDA set-ups that embedding(strict=True) keeps (one small device counter each).

    Only when no captured CUDA graph that replays an embedding() call is still in use.
    """
    _core._clear_embedding_cache()


def shard_range(total: int, tp_size: int, tp_rank: int,
                placement: str = "packed") -> Tuple[int, int]:
    """(offset, size) of the rows (or columns) of `total` that `tp_rank` of `tp_size` holds.

    "packed" (the default, as everywhere): the first total % tp_size ranks hold one more than the
    rest; "equal": ceil(total / tp_size) each, so the last shard may reach past `total` (pad it
    with zero rows and pass vocab_size=total to ParallelEmbedding).
    """
    return _core._shard_range(_check.integer(total, "total", 0),
                              _check.integer(tp_size, "tp_size", 1, bits=32),
                              _check.integer(tp_rank, "tp_rank", 0, bits=32),
                              _check.string(placement, "placement", _PLACEMENTS))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the shards of a ParallelEmbedding's group sit, as agreed at set-up."""

    sharding_dim: int          #: 0: vocab rows are sharded; 1: hidden columns
    tp_size: int
    tp_rank: int               #: this rank's shard index
    global_rows: int           #: V, the addressable rows (padding excluded)
    global_cols: int           #: H, the output's columns
    padding_rows: int          #: P, rows after V that ids may select (tp 1 or sharding_dim 1)
    offsets: Tuple[int, ...]   #: first row (dim 0) or column (dim 1) of each tp_rank
    sizes: Tuple[int, ...]     #: rows (dim 0) or columns (dim 1) of each tp_rank
    table_dtype: str
    out_dtype: str
    vocab_exchange: str        #: how vocab shards combine: all_reduce, owned_rows or peer_rows
    output_layout: str = "replicated"  #: every token on every rank, or the rank's chunk only
    input_layout: str = "replicated"   #: the ids every rank passes: all of them, or its chunk
    scatter_dim: int = 0               #: the dimension of the ids that scattered layouts split


def nccl_unique_id() -> bytes:
    """A new NCCL unique id: made by one rank (e.g. rank 0), then handed to every rank of the group
    (through mpi4py, torch.distributed, a file...)."""
    return _core.nccl_unique_id()


def nccl_available() -> bool:
    """True when this build of tpembed has the NCCL communicator."""
    return _core.nccl_available()


_PLACEMENTS = ("equal", "packed")
_EXCHANGES = ("auto", "all_reduce", "owned_rows", "peer_rows")
_LAYOUTS = ("replicated", "scattered")


def _group_arguments(tp_size, tp_group, sharding_dim, tp_rank, placement, vocab_size, out_dtype,
                     strict, vocab_exchange, collective_checks, output_layout, input_layout,
                     scatter_dim) -> tuple:
    """The group settings as the core takes them; their values (and whether every rank of the
    group passes the same) are checked by the core's set-up."""
    return (_check.optional_integer(tp_size, "tp_size", bits=32),
            _check.rank_list(tp_group, "tp_group"),
            _check.integer(sharding_dim, "sharding_dim", bits=32),
            _check.optional_integer(tp_rank, "tp_rank", bits=32),
            _check.string(placement, "placement", _PLACEMENTS),
            _check.optional_integer(vocab_size, "vocab_size"), _dtype_name(out_dtype, "out_dtype"),
            _check.boolean(strict, "strict"),
            _check.string(vocab_exchange, "vocab_exchange", _EXCHANGES),
            _check.boolean(collective_checks, "collective_checks"),
            _check.string(output_layout, "output_layout", _LAYOUTS),
            _check.string(input_layout, "input_layout", _LAYOUTS),
            _check.integer(scatter_dim, "scatter_dim", 0, bits=32))


def _refuse_setup(engine: str, comm_timeout: Optional[float], error: Exception) -> None:
    """Raises `error` (this rank's refusal of its own arguments) on every rank of the set-up."""
    if engine == "single":
        raise error  # nobody to tell
    _core._ParallelEmbedding.refuse_setup(engine, comm_timeout,
                                          isinstance(error, (TypeError, ValueError)),
                                          _reason(error))


def _reason(error: Exception) -> str:
    if isinstance(error, (TypeError, ValueError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _layout(impl: Any) -> Layout:
    info = impl.layout()
    info["offsets"] = tuple(info["offsets"])
    info["sizes"] = tuple(info["sizes"])
    return Layout(**info)


class ParallelEmbedding:
    """A rank's part of a tensor-parallel embedding: set up once, then forward(ids) many times.

    Construction is collective over the communicator: every rank calls it with its own shard,
    the tp groups are formed and the shards are checked against each other (a shard that does not
    fit raises the same error on every rank, naming the rank at fault).

    weight: this rank's shard ([rows, cols]; with sharding_dim=0 its rows of the vocab, with
        sharding_dim=1 its columns of every row). per_token_scale, padding, padding_scale,
        weight_dtype, scale_dtype, hidden: as for embedding().
    comm: None for one rank; "mpi" for MPI_COMM_WORLD, or any mpi4py communicator (run under
        mpirun; the library works on a duplicate of it); or a tpembed.NcclCommunicator (one
        process a GPU, joined through an NCCL unique id; the one-thread-a-GPU mode is C++ only).
    tp_size: ranks sharing the table; default len(tp_group), else the communicator's size.
    tp_group: world ranks of this rank's group, for several groups in one world.
    tp_rank: this rank's shard index; default its place in tp_group.
    sharding_dim: 0 (vocab rows) or 1 (hidden columns).
    placement: "packed" (the default: shards of any size, back to back in tp_rank order) or
        "equal" (the seed's shards: rank r starts at r * rows; hidden shards need the columns to
        divide by tp_size).
    vocab_size: equal vocab shards only: the real vocab, when the last shard is zero-padded.
    out_dtype, strict: as for embedding(); strict raises on every rank of the group.
    vocab_exchange: how vocab shards (sharding_dim=0, tp_size > 1) combine their rows: "all_reduce"
        (the seed's: zeros for rows owned elsewhere, then a sum), "owned_rows" (each row gathered
        from its owner only; plans on the host), "peer_rows" (GPU tables of one machine: every
        rank maps the others' tables at set-up and one kernel reads each row from its owner — no
        collective per call; destroying the layer is then collective: drop it on every rank in
        the same order, before MPI is finalised), or "auto" (all_reduce over NCCL, owned_rows
        over MPI; never peer_rows). layout.vocab_exchange says which runs.
    collective_checks: True (default): with tp_size > 1, forward() checks its arguments across
        the group first, so a bad argument on one rank raises on every rank. False: each rank
        checks only its own, and forward() queues nothing but the lookup and the exchange, so
        with peer_rows (or NCCL) a CUDA graph can capture it. Every rank must pass the same.
    comm_timeout: MPI communicators (mpi4py's or "mpi"): the longest wait, in seconds, for the other
        ranks in set-up, in every agreement (forward's check with collective_checks on) and in small
        collectives; past it this rank raises RuntimeError instead of hanging, and the layer can no
        longer be used (its ranks are out of step: end the run). A rank that passed another
        communicator (MPI.COMM_SELF, another group), failed before set-up, skipped a forward or
        died then makes the others raise. Default: the environment variable
        TPEMBED_COMM_TIMEOUT_SECONDS, else 300. An NcclCommunicator takes its own timeout.
    output_layout: "replicated" (every rank gets every token's row) or "scattered" (sequence
        parallelism: the ids are split along `scatter_dim` into tp chunks by torch.tensor_split's
        rule — the first n % tp chunks get one more — and the rank whose tp_rank is t gets chunk
        t's rows only: the chunk's shape + (H,)). all_reduce becomes a reduce-scatter, owned_rows
        sends each row only to the rank whose chunk holds its token, peer_rows looks up only the
        rank's own chunk, hidden shards exchange only each chunk's columns.
    input_layout: "replicated" (every rank passes the group's whole ids) or "scattered" (each rank
        passes only its chunk; needs output_layout="scattered").
    scatter_dim: the dimension of the ids that scattered layouts split (default 0).
    backward() of a scattered layer takes the rank's chunk of grad_out (``chunk shape + (H,)``).

    Any argument refused on one rank (a wrong type, dtype, device or value) raises the same error
    on every rank of the communicator, naming that rank; only a `comm` that is no communicator is
    refused on its rank alone (the others then meet comm_timeout).

    The arrays are kept (not copied): the layer keeps them alive and reads them at every forward.
    """

    def __init__(self, weight: Any, *, per_token_scale: Any = None, padding: Any = None,
                 padding_scale: Any = None, comm: Any = None, tp_size: Optional[int] = None,
                 tp_group: Optional[Sequence[int]] = None, tp_rank: Optional[int] = None,
                 sharding_dim: int = 0, placement: str = "packed",
                 vocab_size: Optional[int] = None, out_dtype: Any = None, strict: bool = False,
                 weight_dtype: Any = None, scale_dtype: Any = None,
                 hidden: Optional[int] = None, vocab_exchange: str = "auto",
                 collective_checks: bool = True, comm_timeout: Optional[float] = None,
                 output_layout: str = "replicated", input_layout: str = "replicated",
                 scatter_dim: int = 0) -> None:
        engine = _communicator(comm)
        timeout = None
        try:
            timeout = _check.optional_seconds(comm_timeout, "comm_timeout")
            shard = _prepare_shard(weight, per_token_scale, padding, padding_scale, weight_dtype,
                                   scale_dtype)
            arguments = (*shard, _check.optional_integer(hidden, "hidden"), engine, timeout,
                         *_group_arguments(tp_size, tp_group, sharding_dim, tp_rank, placement,
                                           vocab_size, out_dtype, strict, vocab_exchange,
                                           collective_checks, output_layout, input_layout,
                                           scatter_dim))
        except Exception as error:
            _refuse_setup(engine, timeout, error)
        self._table = weight  # decides the framework of allocated outputs and the default stream
        self._impl = _core._ParallelEmbedding.from_arrays(*arguments)
        self._layout = _layout(self._impl)

    @classmethod
    def from_checkpoint(cls, path: Any, tensor: str, *, scale_tensor: Optional[str] = None,
                        hidden: Optional[int] = None, comm: Any = None,
                        tp_size: Optional[int] = None, tp_group: Optional[Sequence[int]] = None,
                        tp_rank: Optional[int] = None, sharding_dim: int = 0,
                        placement: str = "packed", vocab_size: Optional[int] = None,
                        out_dtype: Any = None, strict: bool = False, vocab_exchange: str = "auto",
                        collective_checks: bool = True,
                        comm_timeout: Optional[float] = None, output_layout: str = "replicated",
                        input_layout: str = "replicated",
                        scatter_dim: int = 0) -> "ParallelEmbedding":
        """Builds the layer from a safetensors checkpoint: each rank reads only its shard.

        path: a .safetensors file, a model.safetensors.index.json, or a directory holding either.
        tensor: the table's name (e.g. "model.embed_tokens.weight"); scale_tensor: the name of its
            per-row scales (one per vocab row); default "<tensor>_scale" when the checkpoint holds
            it (as `tpembed quantize` writes them and the CLI reads them), else none, which a
            quantized table refuses. An int4 table is stored as U8 [V, ceil(H/2)]; its column count
            comes from the file's metadata (as tpembed writes it) or from `hidden`.
        The other arguments are the constructor's. Vocab shards are views of the memory-mapped
        file (zero-padded copies where an equal shard reaches past the vocab, whose size is then
        passed as vocab_size); hidden shards are copies of their columns. The table stays in host
        memory. A rank that cannot read its shard raises the same error on every rank (a
        RuntimeError naming the file and the problem) instead of leaving the others waiting.
        """
        engine = _communicator(comm)
        timeout = None
        try:
            timeout = _check.optional_seconds(comm_timeout, "comm_timeout")
            if not isinstance(path, (str, os.PathLike)):
                raise ArgumentError(f"path must be a str or os.PathLike, got {type(path).__name__}")
            arguments = (_check.string(os.fspath(path), "path", ()),
                         _check.string(tensor, "tensor", ()),
                         _check.optional_string(scale_tensor, "scale_tensor", ()),
                         _check.optional_integer(hidden, "hidden"), engine, timeout,
                         *_group_arguments(tp_size, tp_group, sharding_dim, tp_rank, placement,
                                           vocab_size, out_dtype, strict, vocab_exchange,
                                           collective_checks, output_layout, input_layout,
                                           scatter_dim))
        except Exception as error:
            _refuse_setup(engine, timeout, error)
        layer = cls.__new__(cls)
        layer._table = None  # host tables: NumPy outputs
        layer._impl = _core._ParallelEmbedding.from_checkpoint(*arguments)
        layer._layout = _layout(layer._impl)
        return layer

    def forward(self, ids: Any, out: Any = None, stream: Any = None) -> Any:
        """Looks up `ids` on every rank of the group: returns ``out`` of shape ids.shape + (H,).

        Every rank of the group calls it with the same ids and gets the same full output. ids and
        out live on the table's device; `out` defaults to a new array of the table's framework.
        A CUDA table's work runs on `stream` (default: the framework's current stream); with
        tp_size 1 and strict off nothing synchronises with the host or allocates (with an `out`
        passed, or PyTorch's allocator), so a CUDA graph can capture the call; with tp_size > 1
        the same holds with collective_checks=False and peer_rows (or NCCL). With tp_size > 1
        over MPI and the other exchanges, device data is staged through host memory and the call
        returns when done.

        Arguments refused on one rank (ids or out of a wrong type, dtype, device, layout, an out
        that overlaps an input) raise the same error on every rank of the group, with
        collective_checks on; with it off, on that rank alone.
        """
        try:
            ids_arg, _ = _prepare(ids, "ids")
            arguments = (ids_arg, _prepare_out(out), _allocator(self._table),
                         _stream_handle(stream, self._table))
        except Exception as error:
            self._impl.fail_forward(isinstance(error, (TypeError, ValueError)), _reason(error))
        allocated = self._impl.forward(*arguments)
        return out if out is not None else allocated

    __call__ = forward

    def backward(self, ids: Any, grad_out: Any, grad_weight: Any = None, *,
                 accumulate: bool = False, padding_idx: Optional[int] = None,
                 grad_padding: Any = None, stream: Any = None, out_dtype: Any = None,
                 grad_out_dtype: Any = None) -> Any:
        """The gradient of forward(ids) with respect to this rank's shard: returns `grad_weight`.

        grad_out is the gradient of the whole output, ``ids.shape + (H,)``, as every rank of the
        group holds it (f32, f16 or bf16; uint16 bf16 bits with ``grad_out_dtype="bf16"``); with
        sharding_dim=1 it may also be this rank's columns only. Each rank adds the positions whose
        ids its shard owns (vocab shards) or its columns (hidden shards) into its own gradient;
        nothing is communicated for the gradient itself. The sum's order is embedding_backward()'s:
        the shards' gradients laid side by side are the unsharded gradient, bit for bit.

        grad_weight: the shard's gradient ``[rows, cols]`` (the shard's shape, f32, f16 or bf16,
            on the table's device); default a new array of `out_dtype` (default "f32") in the
            table's framework. accumulate: add into it (then it must be given) instead of
            overwriting. padding_idx: a global id whose positions add nothing. grad_padding: the
            padding rows' gradient ``[padding rows, cols]``. stream: as forward()'s.

        With tp_size > 1 and collective_checks on, every rank calls it with the same ids, after
        the forward's check (a bad argument on one rank raises on every rank). A quantized table
        has no gradient: RuntimeError. last_gradient_counts() tells what the call counted.
        """
        try:
            accumulate = _gradient.accumulate_flag(accumulate, grad_weight)
            declared_out = _gradient.gradient_dtype(out_dtype, "out_dtype")
            weight, declared_out = _gradient.prepare_gradient(grad_weight, "grad_weight",
                                                              declared_out)
            padding, _ = _gradient.prepare_gradient(grad_padding, "grad_padding", declared_out)
            upstream, declared_grad = _prepare(
                grad_out, "grad_out", _gradient.gradient_dtype(grad_out_dtype, "grad_out_dtype"))
            ids_arg, _ = _prepare(ids, "ids")
            arguments = (ids_arg, upstream, weight, _allocator(self._table), declared_out,
                         declared_grad, accumulate, _gradient.ignored_id(padding_idx), padding,
                         _stream_handle(stream, self._table))
        except Exception as error:
            self._impl.fail_forward(isinstance(error, (TypeError, ValueError)), _reason(error))
        allocated = self._impl.backward(*arguments)
        return grad_weight if grad_weight is not None else allocated

    def last_gradient_counts(self) -> dict:
        """What the last backward() counted, position by position: a dict of "accumulated" (into
        this shard's gradient or its padding), "unowned" (another shard's rows), "out_of_range"
        and "ignored" (padding_idx). A GPU layer waits for the last backward's work."""
        return self._impl.last_gradient_counts()

    @property
    def layout(self) -> Layout:
        """Where the shards of the group sit (V, H, offsets, sizes, dtypes)."""
        return self._layout

    @property
    def tp_rank(self) -> int:
        """This rank's shard index."""
        return self._layout.tp_rank

    def last_bad_id_count(self) -> int:
        """Ids found out of range by the last forward (a GPU table: waits and reads the counter)."""
        return self._impl.last_bad_id_count()

    @property
    def bad_id_counter(self) -> int:
        """Device address of the GPU bad-id counter (an unsigned 64-bit integer holding the last
        forward's count once its work is done; read it after a graph replay), or 0 for a host
        table."""
        return self._impl.bad_id_counter()

    def __repr__(self) -> str:
        layout = self._layout
        return (f"ParallelEmbedding(V={layout.global_rows}, H={layout.global_cols}, "
                f"{layout.table_dtype}->{layout.out_dtype}, tp {layout.tp_rank}/{layout.tp_size}, "
                f"sharding_dim={layout.sharding_dim})")
