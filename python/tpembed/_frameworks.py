"""How tpembed meets array frameworks: DLPack export, raw-bit dtypes, streams, output allocation.

NumPy, PyTorch and CuPy are recognised by their module name and imported only when the caller
already uses them; nothing here converts data.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from ._tpembed import ArgumentError

_KDL_CUDA = 2  # DLPack device type of CUDA memory

# Names a caller may use for tpembed's dtypes (framework dtype objects are matched by str()).
_DTYPE_NAMES = {
    "f32": "f32", "float32": "f32", "torch.float32": "f32", "float": "f32",
    "f16": "f16", "float16": "f16", "torch.float16": "f16", "half": "f16",
    "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "i8": "i8", "int8": "i8", "torch.int8": "i8",
    "fp8_e4m3": "fp8_e4m3", "fp8": "fp8_e4m3", "float8_e4m3fn": "fp8_e4m3",
    "torch.float8_e4m3fn": "fp8_e4m3",
    "i4": "i4", "int4": "i4",
}

# ml_dtypes (NumPy) and PyTorch dtypes that DLPack may not carry: passed as their raw bits.
_RAW_BITS = {"bfloat16": ("bf16", "uint16"), "float8_e4m3fn": ("fp8_e4m3", "uint8")}


def dtype_name(dtype: Any, what: str) -> Optional[str]:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype
    elif str(dtype).startswith("torch."):
        key = str(dtype)
    else:  # a NumPy dtype (has .name) or scalar type (has __name__), an ml_dtypes type
        key = getattr(dtype, "name", None)
        if not isinstance(key, str):
            key = getattr(dtype, "__name__", str(dtype))
    name = _DTYPE_NAMES.get(key.lower())
    if name is None:
        raise ArgumentError(f"{what} {dtype!r} is not a tpembed dtype "
                            "(f32, f16, bf16, i8, fp8_e4m3, i4)")
    return name


def _framework(array: Any) -> str:
    """'torch', 'cupy', 'numpy' or another module name: whose array this is."""
    return type(array).__module__.split(".")[0]


def _on_cuda(array: Any) -> bool:
    device = getattr(array, "__dlpack_device__", None)
    return device is not None and device()[0] == _KDL_CUDA


def _require_array(array: Any, name: str) -> None:
    """Refuses what is no array, and arrays whose elements DLPack cannot carry, by name."""
    if not (hasattr(array, "__dlpack__") or hasattr(array, "__array_interface__")
            or type(array).__name__ == "PyCapsule"):
        raise ArgumentError(f"{name} must be an array (NumPy, PyTorch, CuPy or another DLPack "
                            f"producer), got {type(array).__name__}")
    dtype = getattr(array, "dtype", None)
    if getattr(dtype, "hasobject", False):
        raise ArgumentError(f"{name} is an array of Python objects (dtype {dtype}); tpembed "
                            "takes numeric arrays: ids int32 or int64, tables and outputs of a "
                            "tpembed dtype")
    if getattr(dtype, "byteorder", "=") == (">" if _little_endian() else "<"):
        raise ArgumentError(f"{name} has byte-swapped dtype {dtype.str!r}; tpembed reads native "
                            f"byte order and does not convert: pass "
                            f"{name}.astype({name}.dtype.newbyteorder('='))")


def _little_endian() -> bool:
    import sys
    return sys.byteorder == "little"


def prepare(array: Any, name: str, declared: Optional[str] = None) -> Tuple[Any, Optional[str]]:
    """What the core imports for `array` and the dtype declared for it.

    Dtypes that DLPack may not carry (bfloat16 and float8_e4m3fn of ml_dtypes, float8 of PyTorch)
    go as their raw bits with the dtype declared; CUDA tensors go as a DLPack capsule exported with
    stream=-1 (the consumer orders the work on its own stream: no producer-side synchronisation,
    which also keeps CUDA graph capture intact).
    """
    if array is None:
        return None, declared
    _require_array(array, name)
    array_dtype = str(getattr(getattr(array, "dtype", None), "name", "") or "")
    if _framework(array) == "torch":
        array_dtype = str(array.dtype).replace("torch.", "")
    raw = _RAW_BITS.get(array_dtype)
    if raw is not None and (array_dtype != "bfloat16" or _framework(array) != "torch"):
        tpembed_dtype, bits = raw
        if declared is not None and declared != tpembed_dtype:
            raise ArgumentError(f"{name} is a {array_dtype} array but was declared {declared}; "
                                "tpembed does not convert dtypes")
        declared = tpembed_dtype
        if _framework(array) == "torch":
            import torch
            array = array.view(getattr(torch, bits))
        else:
            array = array.view(bits)
    if _on_cuda(array):
        try:
            array = array.__dlpack__(stream=-1)
        except Exception as error:  # e.g. PyTorch's refusal of a tensor that requires grad
            raise ArgumentError(f"{name} must be an array tpembed can import; got "
                                f"{type(array).__name__} on CUDA, whose __dlpack__() says: "
                                f"{error}") from error
    return array, declared


def stream_handle(stream: Any, table: Any) -> int:
    """A cudaStream_t as an integer: `stream` itself, or the table framework's current stream."""
    if stream is None:
        if not _on_cuda(table):
            return 0
        if _framework(table) == "torch":
            import torch
            return int(torch.cuda.current_stream(table.device).cuda_stream)
        if _framework(table) == "cupy":
            import cupy
            return int(cupy.cuda.get_current_stream().ptr)
        return 0
    if isinstance(stream, int) and not isinstance(stream, bool):
        return _stream_value(stream, "stream")
    for attribute in ("cuda_stream", "ptr"):
        handle = getattr(stream, attribute, None)
        if isinstance(handle, int):
            return _stream_value(handle, f"stream.{attribute}")
    protocol = getattr(stream, "__cuda_stream__", None)
    if protocol is not None:
        return _stream_value(int(protocol()[1]), "stream.__cuda_stream__()")
    raise ArgumentError("stream must be an integer cudaStream_t or an object with `cuda_stream` "
                        f"(e.g. torch.cuda.Stream), got {stream!r} ({type(stream).__name__})")


def _stream_value(handle: int, what: str) -> int:
    # A cudaStream_t is an address (0: the legacy default stream); DLPack's -1 ("no
    # synchronisation") and other negative values name no stream here.
    if not 0 <= handle < 2**64:
        raise ArgumentError(f"{what} must be a cudaStream_t handle, an integer in [0, 2**64) "
                            f"(0: the default stream), got {handle}")
    return handle


def allocator(table: Any) -> Callable[[Tuple[int, ...], str], Tuple[Any, Any]]:
    """allocate(shape, dtype_name) -> (output, what the core writes): in the table's framework."""
    framework = _framework(table)

    def allocate(shape: Tuple[int, ...], dtype: str) -> Tuple[Any, Any]:
        if framework == "torch":
            import torch
            out = torch.empty(shape, dtype=getattr(torch, {"f32": "float32", "f16": "float16",
                                                          "bf16": "bfloat16"}[dtype]),
                              device=table.device)
            return out, (out.__dlpack__(stream=-1) if out.is_cuda else out)
        if framework == "cupy":
            import cupy
            with cupy.cuda.Device(table.device.id):  # bf16: uint16 bits (CuPy has no bfloat16)
                out = cupy.empty(shape, dtype={"f32": "float32", "f16": "float16",
                                               "bf16": "uint16"}[dtype])
            return out, out.__dlpack__(stream=-1)
        if _on_cuda(table):
            raise ArgumentError(f"cannot allocate an output for a CUDA array of {framework}: "
                                "pass out=")
        import numpy
        if dtype == "bf16":
            try:
                import ml_dtypes
            except ImportError:
                out = numpy.empty(shape, dtype=numpy.uint16)  # the bf16 bits
                return out, out
            out = numpy.empty(shape, dtype=ml_dtypes.bfloat16)
            return out, out.view(numpy.uint16)
        out = numpy.empty(shape, dtype={"f32": numpy.float32, "f16": numpy.float16}[dtype])
        return out, out

    return allocate


def prepare_out(out: Any) -> Any:
    """What the core writes for a caller's `out` (None stays None: the core allocates)."""
    if out is None:
        return None
    prepared, _ = prepare(out, "out")
    return prepared
