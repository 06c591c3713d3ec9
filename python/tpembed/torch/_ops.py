"""tpembed's lookups and gradients as PyTorch operators (namespace ``tpembed``), registered once
with torch.library: each has a fake (meta) implementation, so torch.compile traces through it with
no graph break and with dynamic token counts, and an autograd formula whose backward is itself an
operator (the deterministic gradient), so AOTAutograd traces the backward graph too.

- ``tpembed::embedding``: one rank's lookup in a whole table.
- ``tpembed::embedding_backward``: its gradient (table rows and padding rows).
- ``tpembed::parallel_embedding``: a tensor-parallel layer's forward; the layer (its shard's set-up
  and communicator) is named by an integer handle from ``register_layer`` and keeps the tensors it
  reads, which are passed too so that the graph knows what the lookup depends on.
- ``tpembed::parallel_embedding_backward``: the gradient of this rank's shard.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Dict, List, Optional, Tuple

import torch

import tpembed

from ._dtypes import FLOATS


def _detached(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    # DLPack refuses tensors that require grad; inside an operator the graph is autograd's concern.
    return None if tensor is None else tensor.detach()


def _columns(weight: torch.Tensor, weight_dtype: Optional[str], hidden: Optional[int]) -> int:
    if weight_dtype in ("i4", "int4"):
        if hidden is None:
            raise tpembed.ArgumentError("an int4 table (weight_dtype='i4') needs hidden=, its "
                                        "column count")
        return int(hidden)
    if weight.dim() != 2:
        raise tpembed.ArgumentError(f"weight must be 2-D [V, H], got shape {tuple(weight.shape)}")
    return weight.shape[1]


def _out_dtype(weight: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.dtype:
    if out_dtype is not None:
        return out_dtype
    if weight.dtype not in FLOATS.values():
        raise tpembed.ArgumentError(f"a {weight.dtype} table needs out_dtype (torch.float32, "
                                    "torch.float16 or torch.bfloat16)")
    return weight.dtype


def _workspace(ids: torch.Tensor, rows: int, cols: int, padding_rows: int) -> Optional[torch.Tensor]:
    """The CUDA gradient's scratch from PyTorch's allocator (stream-ordered, capturable)."""
    if not ids.is_cuda:
        return None
    size = tpembed.gradient_workspace_bytes(ids.numel(), rows, cols, padding_rows,
                                            device=ids.device)
    return torch.empty(size, dtype=torch.uint8, device=ids.device)


# ---------------------------------------------------------------------------------------------
# One rank: tpembed::embedding and its gradient.

@torch.library.custom_op("tpembed::embedding", mutates_args=())
def embedding_op(ids: torch.Tensor, weight: torch.Tensor, per_token_scale: Optional[torch.Tensor],
                 padding: Optional[torch.Tensor], padding_scale: Optional[torch.Tensor],
                 out_dtype: Optional[torch.dtype], weight_dtype: Optional[str],
                 hidden: Optional[int], padding_idx: Optional[int]) -> torch.Tensor:
    return tpembed.embedding(ids.contiguous(), _detached(weight),
                             per_token_scale=_detached(per_token_scale),
                             padding=_detached(padding), padding_scale=_detached(padding_scale),
                             out_dtype=out_dtype, weight_dtype=weight_dtype, hidden=hidden)


@embedding_op.register_fake
def _(ids, weight, per_token_scale, padding, padding_scale, out_dtype, weight_dtype, hidden,
      padding_idx):
    cols = _columns(weight, weight_dtype, hidden)
    return weight.new_empty((*ids.shape, cols), dtype=_out_dtype(weight, out_dtype))


@torch.library.custom_op("tpembed::embedding_backward", mutates_args=())
def embedding_backward_op(ids: torch.Tensor, grad_out: torch.Tensor, num_rows: int,
                          padding_rows: int, per_token_scale: Optional[torch.Tensor],
                          padding_scale: Optional[torch.Tensor], padding_idx: Optional[int],
                          grad_dtype: torch.dtype) -> List[torch.Tensor]:
    cols = grad_out.shape[-1]
    grad_weight = grad_out.new_empty((num_rows, cols), dtype=grad_dtype)
    grad_padding = grad_out.new_empty((padding_rows, cols), dtype=grad_dtype)
    tpembed.embedding_backward(
        ids.contiguous(), grad_out.contiguous(), num_rows, grad_weight=grad_weight,
        padding_idx=padding_idx, per_token_scale=_detached(per_token_scale),
        padding_scale=_detached(padding_scale),
        grad_padding=grad_padding if padding_rows else None,
        workspace=_workspace(ids, num_rows, cols, padding_rows))
    return [grad_weight, grad_padding]


@embedding_backward_op.register_fake
def _(ids, grad_out, num_rows, padding_rows, per_token_scale, padding_scale, padding_idx,
      grad_dtype):
    cols = grad_out.shape[-1]
    return [grad_out.new_empty((num_rows, cols), dtype=grad_dtype),
            grad_out.new_empty((padding_rows, cols), dtype=grad_dtype)]


def _embedding_setup(ctx, inputs, output):
    ids, weight, per_token_scale, padding, padding_scale, _, _, _, padding_idx = inputs
    ctx.save_for_backward(ids, per_token_scale, padding_scale)
    ctx.shape = (weight.shape[0], 0 if padding is None else padding.shape[0])
    ctx.grad_dtype = weight.dtype
    ctx.padding_idx = padding_idx


def _embedding_backward(ctx, grad_out):
    ids, per_token_scale, padding_scale = ctx.saved_tensors
    rows, padding_rows = ctx.shape
    grad_weight, grad_padding = embedding_backward_op(
        ids, grad_out, rows, padding_rows, per_token_scale, padding_scale, ctx.padding_idx,
        ctx.grad_dtype)
    needs = ctx.needs_input_grad
    # The scales are constants of the table: they get no gradient.
    return (None, grad_weight if needs[1] else None, None, grad_padding if needs[3] else None,
            None, None, None, None, None)


embedding_op.register_autograd(_embedding_backward, setup_context=_embedding_setup)


# ---------------------------------------------------------------------------------------------
# Tensor parallelism: tpembed::parallel_embedding over a registered layer.

class _Layer:
    """What the operators need of a registered layer: its core, what its output is, and the shapes
    of the gradients of what it reads."""

    def __init__(self, core: Any, tensors: Tuple[Optional[torch.Tensor], ...],
                 padding_idx: Optional[int]) -> None:
        self.core = core
        layout = core.layout
        self.cols = layout.global_cols
        self.out_dtype = FLOATS[layout.out_dtype]
        # Scattered output of replicated ids: this rank's chunk along scatter_dim.
        self.chunk = (layout.output_layout == "scattered" and layout.input_layout == "replicated"
                      and layout.tp_size > 1)
        self.scatter_dim, self.tp_size, self.tp_rank = (layout.scatter_dim, layout.tp_size,
                                                        layout.tp_rank)
        weight, _, padding, _ = tensors
        self.weight_shape, self.weight_dtype = tuple(weight.shape), weight.dtype
        self.padding_shape = (0,) if padding is None else tuple(padding.shape)
        self.padding_idx = padding_idx
        # What the core reads: the operator refuses tensors that are not those (a parameter
        # replaced without telling the module).
        self.addresses = tuple(None if t is None else (t.data_ptr(), t.device) for t in tensors)

    def out_shape(self, ids_shape) -> tuple:
        """The forward's output shape (torch.tensor_split's chunk of a scattered output; the rule
        of tpembed's TokenLayout), for symbolic extents too."""
        shape = list(ids_shape)
        if self.chunk:
            if not 0 <= self.scatter_dim < len(shape):
                raise tpembed.ArgumentError(f"scatter_dim {self.scatter_dim} is outside the ids' "
                                            f"{len(shape)} dimensions")
            # n // tp + (t < n % tp), without a branch on a symbolic n (no guard, no recompile)
            n = shape[self.scatter_dim]
            shape[self.scatter_dim] = (n + self.tp_size - 1 - self.tp_rank) // self.tp_size
        return (*shape, self.cols)


_layers: Dict[int, _Layer] = {}
_handles = itertools.count(1)
_lock = threading.Lock()


def register_layer(core: Any, tensors: Tuple[Optional[torch.Tensor], ...],
                   padding_idx: Optional[int] = None) -> int:
    """A handle for `core`, a tpembed.ParallelEmbedding that reads `tensors` (weight,
    per_token_scale, padding, padding_scale; None where absent); `padding_idx`: the global id whose
    positions add nothing to the gradient."""
    with _lock:
        handle = next(_handles)
        _layers[handle] = _Layer(core, tensors, padding_idx)
    return handle


def release_layer(handle: int) -> None:
    with _lock:
        _layers.pop(handle, None)


def _layer(handle: int, tensors: Tuple[Optional[torch.Tensor], ...]) -> _Layer:
    layer = _layers.get(handle)
    if layer is None:
        raise RuntimeError(f"tpembed layer {handle} no longer exists (its module was deleted)")
    given = tuple(None if t is None else (t.data_ptr(), t.device) for t in tensors)
    if given != layer.addresses:
        # Through the layer's forward check: the group's other ranks raise it too, instead of
        # waiting for this one in the exchange.
        layer.core._impl.fail_forward(
            False, "tpembed.torch.ParallelEmbedding: its weight (or scales, or padding) is no "
            "longer the tensor its set-up reads — a parameter's .data was replaced without the "
            "module knowing. Move the module with .to() / .cuda() (which sets it up again) or "
            "copy new values in place (load_state_dict, weight.data.copy_())")
    return layer


@torch.library.custom_op("tpembed::parallel_embedding", mutates_args=())
def parallel_embedding_op(ids: torch.Tensor, weight: torch.Tensor,
                          per_token_scale: Optional[torch.Tensor], padding: Optional[torch.Tensor],
                          padding_scale: Optional[torch.Tensor], layer: int) -> torch.Tensor:
    core = _layer(layer, (weight, per_token_scale, padding, padding_scale)).core
    return core.forward(ids.contiguous())


@parallel_embedding_op.register_fake
def _(ids, weight, per_token_scale, padding, padding_scale, layer):
    entry = _layers[layer]
    return weight.new_empty(entry.out_shape(ids.shape), dtype=entry.out_dtype)


def _empty_gradients(layer: _Layer, device: torch.device) -> List[torch.Tensor]:
    return [torch.empty(layer.weight_shape, dtype=layer.weight_dtype, device=device),
            torch.empty(layer.padding_shape, dtype=layer.weight_dtype, device=device)]


@torch.library.custom_op("tpembed::parallel_embedding_backward", mutates_args=())
def parallel_embedding_backward_op(ids: torch.Tensor, grad_out: torch.Tensor,
                                   layer: int) -> List[torch.Tensor]:
    """[the shard's gradient, its padding rows' gradient ([0] without padding)]."""
    entry = _layers[layer]
    grad_weight, grad_padding = _empty_gradients(entry, grad_out.device)
    entry.core.backward(ids.contiguous(), grad_out.contiguous(), grad_weight,
                        padding_idx=entry.padding_idx,
                        grad_padding=grad_padding if grad_padding.dim() == 2 else None)
    return [grad_weight, grad_padding]


@parallel_embedding_backward_op.register_fake
def _(ids, grad_out, layer):
    return _empty_gradients(_layers[layer], grad_out.device)


def _parallel_setup(ctx, inputs, output):
    ids, _, _, _, _, layer = inputs
    ctx.save_for_backward(ids)
    ctx.layer = layer


def _parallel_backward(ctx, grad_out):
    (ids,) = ctx.saved_tensors
    grad_weight, grad_padding = parallel_embedding_backward_op(ids, grad_out, ctx.layer)
    needs = ctx.needs_input_grad
    return (None, grad_weight if needs[1] else None, None,
            grad_padding if needs[3] else None, None, None)


parallel_embedding_op.register_autograd(_parallel_backward, setup_context=_parallel_setup)
