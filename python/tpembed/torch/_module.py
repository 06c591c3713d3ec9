"""tpembed.torch.ParallelEmbedding: a torch.nn.Module whose weight is this rank's shard."""

from __future__ import annotations

import copy
import weakref
from typing import Any, Optional

import numpy
import torch

import tpembed
from tpembed._frameworks import dtype_name

from . import _group, _ops
from ._dtypes import FLOATS, TORCH


def _trainable(tensor: torch.Tensor, weight_dtype: Optional[str]) -> bool:
    return tensor.dtype in FLOATS.values() and weight_dtype is None


def _as_parameter(tensor: Any, name: str, weight_dtype: Optional[str]) -> torch.nn.Parameter:
    if isinstance(tensor, torch.nn.Parameter):
        return tensor  # shared as it is: weight tying
    if not isinstance(tensor, torch.Tensor):
        raise tpembed.ArgumentError(f"{name} must be a torch.Tensor (this rank's shard), got "
                                    f"{type(tensor).__name__}")
    return torch.nn.Parameter(tensor, requires_grad=_trainable(tensor, weight_dtype))


class ParallelEmbedding(torch.nn.Module):
    """A tensor-parallel embedding over a torch.distributed process group: ``forward(ids)`` returns
    ``ids.shape + (H,)`` rows of the whole table on every rank of the group.

    weight_shard: this rank's shard — with sharding_dim=0 its rows of the vocab, with
        sharding_dim=1 its columns of every row (an nn.Parameter is used as it is, so it can be
        tied to an LM head; a tensor becomes one, trainable when it is f32, f16 or bf16). int8 and
        float8_e4m3fn tables need per_token_scale and out_dtype; int4 goes as uint8 ``[rows,
        ceil(cols/2)]`` with ``weight_dtype="i4", hidden=cols``. Quantized and frozen
        (requires_grad=False) tables cost nothing in the backward.
    group: the torch.distributed ProcessGroup of the tp ranks (default the world group); tp is its
        size and this rank's shard index its rank in it. CPU shards need a group that runs CPU
        collectives (gloo); CUDA shards over an nccl group use tpembed's own NCCL communicator,
        bootstrapped through the group (one process a GPU), and over gloo the host collectives.
    sharding_dim, vocab_size, placement, vocab_exchange, out_dtype, strict, collective_checks:
        as tpembed.ParallelEmbedding's ("packed": shards of any size back to back in rank order;
        "equal": the seed's, ceil(V / tp) rows each, with vocab_size the real vocab).
        collective_checks=False makes a CUDA forward capturable (CUDA graphs, reduce-overhead).
    per_token_scale, padding, padding_scale: the shard's row scales (a buffer), extra rows after
        the table (a parameter, trained with the weight) and their scales.
    padding_idx: a global id whose positions add nothing to the gradient (nn.Embedding's).
    output_layout, input_layout, scatter_dim: sequence parallelism, as tpembed.ParallelEmbedding's:
        "scattered" output splits the ids along scatter_dim into tp chunks by torch.tensor_split's
        rule and rank t gets chunk t's rows only (the backward then takes that chunk's gradient:
        Megatron's reduce-scatter, torchtitan's Shard(1)); "scattered" input: each rank passes only
        its chunk of the ids. The gradient stays the unsharded one's, bit for bit.
    comm_timeout: longest wait, in seconds, for the other ranks in set-up and in tpembed's host
        collectives (default TPEMBED_COMM_TIMEOUT_SECONDS, else 300).

    Construction is collective over the group, and so are moving the module (.to(), .cuda(),
    .half()), which sets it up again for the new tensors, and copy.deepcopy (a layer with copies
    of the tensors over the same group, as for a reference or EMA model): do them on every rank. A
    rank that refuses its arguments makes every rank raise, naming it. state_dict holds the shard;
    load_state_dict copies into it in place. The module itself does not pickle (it holds a process
    group): save its state_dict.
    """

    def __init__(self, weight_shard: Any, *, group: Any = None, sharding_dim: int = 0,
                 vocab_size: Optional[int] = None, placement: str = "packed",
                 vocab_exchange: str = "auto", per_token_scale: Any = None, padding: Any = None,
                 padding_scale: Any = None, out_dtype: Any = None,
                 output_layout: str = "replicated", padding_idx: Optional[int] = None,
                 weight_dtype: Any = None, hidden: Optional[int] = None, strict: bool = False,
                 collective_checks: bool = True, comm_timeout: Optional[float] = None,
                 input_layout: str = "replicated", scatter_dim: int = 0) -> None:
        super().__init__()
        self._group = _group.world_group(group)
        self._handle = None
        error = None
        try:
            self._weight_dtype = dtype_name(weight_dtype, "weight_dtype")
            self.weight = _as_parameter(weight_shard, "weight_shard", self._weight_dtype)
            self.padding = None if padding is None else _as_parameter(padding, "padding",
                                                                     self._weight_dtype)
            if self.padding is not None:
                self.padding.requires_grad_(self.weight.requires_grad)
            self.register_buffer("per_token_scale", per_token_scale)
            self.register_buffer("padding_scale", padding_scale)
            self._timeout = _group.default_timeout(comm_timeout)
        except Exception as caught:  # joins the agreement below: every rank raises it
            error = caught
            self._timeout = 300.0
        self._settings = dict(sharding_dim=sharding_dim, vocab_size=vocab_size,
                              placement=placement, vocab_exchange=vocab_exchange,
                              out_dtype=out_dtype, strict=strict,
                              collective_checks=collective_checks, hidden=hidden,
                              output_layout=output_layout, input_layout=input_layout,
                              scatter_dim=scatter_dim)
        self.padding_idx = padding_idx
        self._setup(error)

    # -- set-up --------------------------------------------------------------------------------

    def _tensors(self) -> tuple:
        return (self.weight, self.per_token_scale, self.padding, self.padding_scale)

    def _setup(self, error: Optional[BaseException] = None) -> None:
        """Sets the core up for the current tensors: collective over the group."""
        weight = getattr(self, "weight", None)
        on_cuda = isinstance(weight, torch.Tensor) and weight.is_cuda
        device = (weight.device.index or 0) if on_cuda else 0
        comm = _group.communicator(self._group, on_cuda, device, self._timeout, error)
        size = _group.dist.get_world_size(self._group)
        detached = [None if t is None else t.detach() for t in self._tensors()]
        core = tpembed.ParallelEmbedding(
            detached[0], per_token_scale=detached[1], padding=detached[2],
            padding_scale=detached[3], comm=comm, tp_size=size,
            weight_dtype=self._weight_dtype, comm_timeout=self._timeout, **self._settings)
        if self._handle is not None:
            _ops.release_layer(self._handle)
            self._release.detach()
        self._core = core
        self._handle = _ops.register_layer(core, tuple(self._tensors()), self.padding_idx)
        self._release = weakref.finalize(self, _ops.release_layer, self._handle)

    def _apply(self, fn, *args, **kwargs):
        before = [None if t is None else (t.data_ptr(), t.device, t.dtype)
                  for t in self._tensors()]
        result = super()._apply(fn, *args, **kwargs)
        after = [None if t is None else (t.data_ptr(), t.device, t.dtype)
                 for t in self._tensors()]
        if after != before:
            self._setup()
        return result

    def __deepcopy__(self, memo: dict) -> "ParallelEmbedding":
        """Copies of the tensors (tied parameters stay tied through `memo`) set up over the same
        group: collective, as construction is."""
        twin = type(self).__new__(type(self))
        memo[id(self)] = twin
        tensors = [copy.deepcopy(t, memo) for t in self._tensors()]
        ParallelEmbedding.__init__(
            twin, tensors[0], group=self._group, per_token_scale=tensors[1], padding=tensors[2],
            padding_scale=tensors[3], padding_idx=self.padding_idx,
            weight_dtype=self._weight_dtype, comm_timeout=self._timeout, **self._settings)
        twin.train(self.training)
        return twin

    def __reduce_ex__(self, protocol: int):
        raise TypeError("tpembed.torch.ParallelEmbedding does not pickle (it holds a process group "
                        "and tpembed's set-up over it): save and load its state_dict() instead")

    # -- use -----------------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.ops.tpembed.parallel_embedding(ids, self.weight, self.per_token_scale,
                                                    self.padding, self.padding_scale,
                                                    self._handle)

    @property
    def layout(self) -> tpembed.Layout:
        """Where the group's shards sit (V, H, offsets, sizes, dtypes, the exchange)."""
        return self._core.layout

    @property
    def group(self) -> Any:
        return self._group

    def extra_repr(self) -> str:
        layout = self._core.layout
        return (f"V={layout.global_rows}, H={layout.global_cols}, {layout.table_dtype}->"
                f"{layout.out_dtype}, tp {layout.tp_rank}/{layout.tp_size}, "
                f"sharding_dim={layout.sharding_dim}, exchange={layout.vocab_exchange}")

    # -- checkpoints ---------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: Any, tensor: str = "model.embed_tokens.weight", *,
                        group: Any = None, sharding_dim: int = 0, placement: str = "packed",
                        vocab_size: Optional[int] = None, scale_tensor: Optional[str] = None,
                        hidden: Optional[int] = None, device: Any = None,
                        comm_timeout: Optional[float] = None, **kwargs: Any) -> "ParallelEmbedding":
        """Reads only this rank's shard of a safetensors checkpoint (a file, an index or a
        directory holding either) into a new layer: `tensor` is the table's name; a quantized
        table's scales are `scale_tensor` (default ``<tensor>_scale``); an int4 table's column
        count comes from the file's metadata or `hidden`. The shard is copied into the module's
        parameters, on `device` (default the CPU). Collective over the group: the ranks agree that
        they read the same table (its fingerprint) and fail together when one cannot. Other
        keywords go to the constructor."""
        group = _group.world_group(group)
        timeout = _group.default_timeout(comm_timeout)
        size = _group.dist.get_world_size(group)
        comm = _group.communicator(group, False, 0, timeout, None)
        reader = tpembed.ParallelEmbedding.from_checkpoint(
            path, tensor, scale_tensor=scale_tensor, hidden=hidden, comm=comm, tp_size=size,
            sharding_dim=sharding_dim, placement=placement, vocab_size=vocab_size,
            out_dtype=kwargs.get("out_dtype"), comm_timeout=timeout)
        arrays = {}
        for name, raw, dtype, shape in reader._impl.shard_arrays():
            stored = list(shape)
            if dtype == "i4":
                stored[-1] = (stored[-1] + 1) // 2
            copied = torch.from_numpy(numpy.array(raw)).view(TORCH[dtype])
            arrays[name] = (copied.reshape(stored).to(device or "cpu"), dtype, shape)
        weight, table_dtype, shape = arrays["weight"]
        if table_dtype == "i4":
            kwargs.setdefault("weight_dtype", "i4")
            kwargs.setdefault("hidden", shape[-1])
        if sharding_dim == 0 and placement == "equal" and vocab_size is None:
            vocab_size = reader.layout.global_rows  # the last equal shard may be zero-padded
        del reader
        tensors = {name: arrays[name][0] if name in arrays else None
                   for name in ("per_token_scale", "padding", "padding_scale")}
        return cls(weight, group=group, sharding_dim=sharding_dim, placement=placement,
                   vocab_size=vocab_size, comm_timeout=timeout, **tensors, **kwargs)
