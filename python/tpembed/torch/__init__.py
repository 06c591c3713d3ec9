"""tpembed inside PyTorch: registered operators, an nn.Module over torch.distributed groups,
autograd with tpembed's deterministic gradient. Importing it imports torch (``import tpembed``
alone does not).

    import tpembed.torch as tpt
    out = tpt.embedding(ids, weight)                       # one rank; F.embedding's result
    out = tpt.embedding(ids, table_i8, per_token_scale=scale, out_dtype=torch.bfloat16)

    torch.distributed.init_process_group("gloo")           # under torchrun (nccl for CUDA)
    layer = tpt.ParallelEmbedding(shard, sharding_dim=0)   # this rank's rows; tp = group size
    out = layer(ids)                                       # every rank: ids.shape + (H,)
    out.sum().backward()                                   # layer.weight.grad: the shard's

The operators (``torch.ops.tpembed.embedding``, ``.parallel_embedding`` and their ``*_backward``)
have fake implementations, so ``torch.compile(model, fullgraph=True)`` traces through them, with
dynamic token counts; on a GPU, ``torch.cuda.graph`` and ``mode="reduce-overhead"`` capture them
(tp > 1: with collective_checks=False and an nccl group). The gradient is tpembed's: fp32 sums in
a fixed order, the same bits on every run, on the CPU and on a GPU.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tpembed._frameworks import dtype_name as _dtype_name

from . import _ops
from ._module import ParallelEmbedding

__all__ = ["embedding", "ParallelEmbedding"]


def embedding(ids: torch.Tensor, weight: torch.Tensor, *, per_token_scale: Optional[torch.Tensor] = None,
              padding: Optional[torch.Tensor] = None, padding_scale: Optional[torch.Tensor] = None,
              out_dtype: Optional[torch.dtype] = None, weight_dtype: Any = None,
              hidden: Optional[int] = None, padding_idx: Optional[int] = None) -> torch.Tensor:
    """``weight[ids]`` (times per_token_scale, in fp32, rounded once to out_dtype) on one rank:
    ``ids.shape + (H,)``, differentiable in weight (and padding).

    ids: int32 or int64, any shape, on weight's device; ids outside the table (and padding) give
        zero rows. weight: ``[V, H]`` f32/f16/bf16, or int8 / float8_e4m3fn with per_token_scale
        and out_dtype, or int4 as uint8 ``[V, ceil(H/2)]`` with ``weight_dtype="i4", hidden=H``.
    padding: rows after the table (ids V..V+P-1), with padding_scale when the table has scales.
    padding_idx: a global id whose positions add nothing to the gradient (F.embedding's).
    """
    return torch.ops.tpembed.embedding(ids, weight, per_token_scale, padding, padding_scale,
                                       out_dtype, _dtype_name(weight_dtype, "weight_dtype"),
                                       hidden, padding_idx)
