"""tpembed's dtype names as torch dtypes: the float ones (tables, outputs, gradients), the quantized
tables (int4 as its packed uint8 bytes) and the integers the host collectives sum."""

import torch

FLOATS = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TORCH = {**FLOATS, "i8": torch.int8, "fp8_e4m3": torch.float8_e4m3fn, "i4": torch.uint8,
         "i32": torch.int32, "i64": torch.int64}
