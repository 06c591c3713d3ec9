"""An independent NumPy reference of tpembed's lookup, and the encodings NumPy lacks.

The reference decodes every table row to float32, multiplies by the row's scale in float32 and
rounds once to the output dtype (round to nearest even), as DESIGN.md section 1 specifies. Ids out
of [0, V + P) give +0.0 rows.
"""

from __future__ import annotations

import numpy as np

TABLE_DTYPES = ["f32", "f16", "bf16", "i8", "fp8_e4m3", "i4"]
FLOAT_DTYPES = ["f32", "f16", "bf16"]
QUANTIZED = {"i8", "fp8_e4m3", "i4"}


# ---- bf16 (as uint16 bits) -----------------------------------------------------------------------

def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round to nearest even; NaNs stay (quiet) NaNs."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


# ---- fp8 e4m3fn (as uint8 bytes) -----------------------------------------------------------------

def _fp8_e4m3_values() -> np.ndarray:
    values = np.zeros(256, np.float32)
    for byte in range(256):
        sign = -1.0 if byte & 0x80 else 1.0
        exponent, mantissa = (byte >> 3) & 0xF, byte & 0x7
        if exponent == 15 and mantissa == 7:
            values[byte] = np.nan
        elif exponent == 0:
            values[byte] = sign * mantissa / 8.0 * 2.0 ** -6
        else:
            values[byte] = sign * (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7)
    return values


FP8_E4M3_VALUES = _fp8_e4m3_values()


# ---- int4 (two signed values a byte, low nibble first, rows start on a fresh byte) --------------

def pack_int4(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.int8)
    rows, cols = values.shape
    padded = np.zeros((rows, cols + (cols & 1)), np.uint8)
    padded[:, :cols] = values.astype(np.uint8) & 0xF
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, cols: int) -> np.ndarray:
    packed = np.asarray(packed, np.uint8)
    nibbles = np.empty((packed.shape[0], packed.shape[1] * 2), np.int16)
    nibbles[:, 0::2] = packed & 0xF
    nibbles[:, 1::2] = packed >> 4
    return ((nibbles[:, :cols] ^ 8) - 8).astype(np.int8)


# ---- tables in their tpembed encodings -----------------------------------------------------------

class Table:
    """A table of `dtype` as tpembed takes it from NumPy (`array` + `kwargs`) and as float32."""

    def __init__(self, dtype: str, array: np.ndarray, values: np.ndarray, kwargs: dict):
        self.dtype, self.array, self.values, self.kwargs = dtype, array, values, kwargs


def make_table(dtype: str, rows: int, cols: int, rng: np.random.Generator) -> Table:
    if dtype in FLOAT_DTYPES:
        values = (rng.standard_normal((rows, cols)) * 10.0 ** rng.integers(-3, 3, (rows, cols)))
        values = values.astype(np.float32)
        if values.size:
            values.flat[0] = -0.0  # signs of zeros must survive
        if dtype == "f32":
            return Table(dtype, values, values, {})
        if dtype == "f16":
            array = values.astype(np.float16)
            return Table(dtype, array, array.astype(np.float32), {})
        array = f32_to_bf16_bits(values)
        return Table(dtype, array, bf16_bits_to_f32(array), {"weight_dtype": "bf16"})
    if dtype == "i8":
        array = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
        return Table(dtype, array, array.astype(np.float32), {})
    if dtype == "fp8_e4m3":
        array = rng.integers(0, 256, (rows, cols)).astype(np.uint8)
        array[(array & 0x7F) == 0x7F] = 0x38  # no NaN codes: 1.0 instead
        return Table(dtype, array, FP8_E4M3_VALUES[array], {"weight_dtype": "fp8_e4m3"})
    if dtype == "i4":
        values = rng.integers(-8, 8, (rows, cols)).astype(np.int8)
        return Table(dtype, pack_int4(values), values.astype(np.float32),
                     {"weight_dtype": "i4", "hidden": cols})
    raise ValueError(dtype)


def make_scale(dtype: str, rows: int, rng: np.random.Generator):
    """(array, float32 values, kwargs) of one scale per row in `dtype`."""
    values = (rng.uniform(-2.0, 2.0, rows) * 2.0 ** rng.integers(-4, 4, rows)).astype(np.float32)
    if dtype == "f32":
        return values, values, {}
    if dtype == "f16":
        array = values.astype(np.float16)
        return array, array.astype(np.float32), {}
    array = f32_to_bf16_bits(values)
    return array, bf16_bits_to_f32(array), {"scale_dtype": "bf16"}


def round_to(values: np.ndarray, out_dtype: str) -> np.ndarray:
    """float32 values in the output's NumPy encoding (bf16: uint16 bits)."""
    values = np.asarray(values, np.float32)
    if out_dtype == "f32":
        return values
    if out_dtype == "f16":
        with np.errstate(over="ignore"):
            return values.astype(np.float16)
    return f32_to_bf16_bits(values)


def bits(array: np.ndarray) -> np.ndarray:
    """The raw bits of an output, for exact comparison (-0.0 and NaN payloads included)."""
    array = np.asarray(array)
    return array.view({4: np.uint32, 2: np.uint16, 1: np.uint8}[array.dtype.itemsize])


def lookup(ids: np.ndarray, values: np.ndarray, scale: np.ndarray | None, out_dtype: str,
           padding: np.ndarray | None = None,
           padding_scale: np.ndarray | None = None) -> np.ndarray:
    """The reference: out[t] = round(float(row[id]) * float(scale[id])), zeros for bad ids."""
    rows = values if padding is None else np.concatenate([values, padding])
    cols = values.shape[1]
    if scale is not None:
        row_scale = scale if padding_scale is None else np.concatenate([scale, padding_scale])
    ids = np.asarray(ids).astype(np.int64)
    valid = (ids >= 0) & (ids < rows.shape[0])
    safe = np.where(valid, ids, 0)
    out = rows[safe] if rows.shape[0] else np.zeros(ids.shape + (cols,), np.float32)
    if scale is not None and rows.shape[0]:
        out = (out * row_scale[safe][..., None]).astype(np.float32)
    out = np.where(valid[..., None], out, np.float32(0.0)).astype(np.float32)
    return round_to(out.reshape(ids.shape + (cols,)), out_dtype)
