"""tpembed.embedding_backward() and gradient_workspace_bytes(): the gradient of the lookup.

The argument layer of the gradient: scalars are checked here (_arguments), arrays are prepared as
the forward's are (_frameworks), and the core (gradient.cpp) imports the arrays and calls the op.
"""

from __future__ import annotations

from typing import Any, Optional

from . import _arguments as _check
from . import _tpembed as _core
from ._frameworks import allocator as _allocator
from ._frameworks import dtype_name as _dtype_name
from ._frameworks import prepare as _prepare
from ._frameworks import stream_handle as _stream_handle
from ._tpembed import ArgumentError

_GRADIENT_DTYPES = ("f32", "f16", "bf16")


def gradient_dtype(dtype: Any, what: str) -> Optional[str]:
    """A gradient's dtype name (f32, f16 or bf16), or None."""
    name = _dtype_name(dtype, what)
    if name is not None and name not in _GRADIENT_DTYPES:
        raise ArgumentError(f"{what} {dtype!r} is not a gradient dtype: gradients are f32, f16 "
                            "or bf16 (quantized tables have no gradient)")
    return name


def ignored_id(padding_idx: Any) -> Optional[int]:
    """padding_idx as the global id the core ignores."""
    if padding_idx is None:
        return None
    value = _check.integer(padding_idx, "padding_idx")
    if value < 0:
        raise ArgumentError(f"padding_idx must be a global id >= 0, got {value}: tpembed does not "
                            "wrap negative values as F.embedding does (pass "
                            "num_embeddings + padding_idx)")
    return value


def prepare_gradient(array: Any, name: str, declared: Optional[str]):
    """An array the core writes (None stays None), and the dtype declared for it."""
    if array is None:
        return None, declared
    return _prepare(array, name, declared)


def accumulate_flag(accumulate: Any, grad_weight: Any) -> bool:
    """`accumulate` checked as a bool; accumulating needs a grad_weight to add into."""
    accumulate = _check.boolean(accumulate, "accumulate")
    if accumulate and grad_weight is None:
        raise ArgumentError("accumulate=True adds into grad_weight, but grad_weight is None: pass "
                            "the gradient to add into")
    return accumulate


def embedding_backward(ids: Any, grad_out: Any, num_rows: int, *, row_offset: int = 0,
                       padding_idx: Optional[int] = None, grad_weight: Any = None,
                       accumulate: bool = False, out_dtype: Any = None, stream: Any = None,
                       num_cols: Optional[int] = None, column_offset: int = 0,
                       valid_ids: Optional[int] = None, per_token_scale: Any = None,
                       padding_scale: Any = None, grad_padding: Any = None,
                       grad_out_dtype: Any = None, scale_dtype: Any = None,
                       workspace: Any = None, counts: Any = None) -> Any:
    """The gradient of ``embedding(ids, weight)`` with respect to `weight` (or a shard of it).

    ``grad_weight[r] (+)= scale[r] * sum of grad_out[p] over the positions p with
    ids[p] == row_offset + r``, summed in fp32 in the order gradient.hpp documents: the same bits
    on every run, for any thread count, on the CPU and on a GPU; no float atomics.

    ids: int32 or int64 array of any shape (empty allowed). Ids not in
        ``[row_offset, row_offset + num_rows)`` (or the padding rows after them) add nothing;
        negative ids and ids not below `valid_ids` are out of range.
    grad_out: the gradient of the lookup's output, ``ids.shape + (H,)``, f32, f16 or bf16 (bf16
        as torch.bfloat16, ml_dtypes.bfloat16, or uint16 bits with ``grad_out_dtype="bf16"``), on
        the device of ids.
    num_rows: rows of the gradient (the table's, or the shard's).
    row_offset: global id of row 0 (a vocab shard's first row).
    padding_idx: a global id whose positions add nothing (PyTorch's padding_idx; not wrapped when
        negative).
    grad_weight: a gradient to write, ``[num_rows, H]`` (C-contiguous, on grad_out's device);
        default: a new array of `out_dtype` in grad_out's framework (NumPy on the host).
    accumulate: add into `grad_weight` (which must then be given) instead of overwriting it;
        overwriting sets the rows no id selects to +0.
    out_dtype: "f32" (default), "f16" or "bf16": the gradient's dtype, rounded once at the end.
    stream: CUDA only: an integer cudaStream_t or an object with ``cuda_stream``; default the
        current stream of grad_out's framework.
    num_cols: the gradient's columns, default H - column_offset; column_offset: the first column
        of grad_out taken (a hidden shard given the whole gradient).
    valid_ids: ids in ``[0, valid_ids)`` are in range (default row_offset + num_rows + the
        padding rows).
    per_token_scale: the table's row scales ([num_rows], f32/f16/bf16; uint16 bits need
        ``scale_dtype="bf16"``): each row's sum is multiplied by its scale. padding_scale: the
        padding rows' scales.
    grad_padding: the padding rows' gradient, ``[padding rows, num_cols]`` of grad_weight's
        dtype, written (or added to) as grad_weight is; ids ``row_offset + num_rows + i`` select
        its row i.
    workspace: CUDA only: scratch of at least gradient_workspace_bytes() bytes on the gradient's
        device (256-byte aligned): then nothing is allocated and the call can be captured in a CUDA
        graph. Without it the op takes its scratch from the stream-ordered allocator.
    counts: 4 int64 (or uint64) elements on the gradient's device where the backward stores its
        counts of positions accumulated, unowned, out of range and ignored (written when the work
        is done).

    Returns `grad_weight` (the given one, or the new array).
    """
    accumulate = accumulate_flag(accumulate, grad_weight)
    declared_out = gradient_dtype(out_dtype, "out_dtype")
    weight, declared_out = prepare_gradient(grad_weight, "grad_weight", declared_out)
    padding, _ = prepare_gradient(grad_padding, "grad_padding", declared_out)
    upstream, declared_grad = _prepare(grad_out, "grad_out",
                                       gradient_dtype(grad_out_dtype, "grad_out_dtype"))
    scale, declared_scale = _prepare(per_token_scale, "per_token_scale",
                                     _dtype_name(scale_dtype, "scale_dtype"))
    pad_scale, declared_scale = _prepare(padding_scale, "padding_scale", declared_scale)
    ids_arg, _ = _prepare(ids, "ids")
    allocated = _core._embedding_backward(
        ids_arg, upstream, weight, _allocator(grad_out), _check.integer(num_rows, "num_rows", 0),
        _check.optional_integer(num_cols, "num_cols", 0), _check.integer(row_offset, "row_offset"),
        _check.optional_integer(valid_ids, "valid_ids", 0), ignored_id(padding_idx),
        _check.integer(column_offset, "column_offset", 0), scale, pad_scale, padding,
        declared_scale, declared_grad, declared_out, accumulate,
        prepare_gradient(workspace, "workspace", None)[0],
        prepare_gradient(counts, "counts", None)[0], _stream_handle(stream, grad_out))
    return grad_weight if grad_weight is not None else allocated


def gradient_workspace_bytes(num_ids: int, num_rows: int, num_cols: int, padding_rows: int = 0, *,
                             device: Any = "cuda") -> int:
    """Bytes of the `workspace` a CUDA embedding_backward() of `num_ids` ids into `num_rows` +
    `padding_rows` rows of `num_cols` columns needs (0 for ``device="cpu"``). `device`: "cpu",
    "cuda" or "cuda:N" (or a torch.device)."""
    name = str(device)
    if name == "cpu":
        cuda, index = False, 0
    elif name == "cuda" or name.startswith("cuda:") and name[5:].isdigit():
        cuda, index = True, int(name[5:] or 0)
    else:
        raise ArgumentError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return _core._gradient_workspace_bytes(cuda, index, _check.integer(num_ids, "num_ids", 0),
                                           _check.integer(num_rows, "num_rows", 0),
                                           _check.integer(padding_rows, "padding_rows", 0),
                                           _check.integer(num_cols, "num_cols", 0))
