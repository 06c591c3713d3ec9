"""Two independent NumPy references of tpembed's embedding backward (include/tpembed/gradient.hpp).

documented_order() follows the header's summation order step by step — each row's positions in
increasing order, cut into chunks of 32 of its own, fp32 sums from left to right — so that its bits
must equal the library's. exact_sum() is np.add.at in float64, and bound() the error the header
allows a result against it.
"""

from __future__ import annotations

import math

import numpy as np

from reference import bf16_bits_to_f32, round_to

CHUNK = 32  # kGradientChunk
UNIT = 2.0 ** -24  # fp32's unit roundoff
GRADIENT_DTYPES = ["f32", "f16", "bf16"]
HALF_ULP = {"f32": 2.0 ** -24, "f16": 2.0 ** -11, "bf16": 2.0 ** -8}
SMALLEST_STEP = {"f32": 2.0 ** -149, "f16": 2.0 ** -24, "bf16": 2.0 ** -133}


def encode(values: np.ndarray, dtype: str):
    """float32 values as tpembed takes them from NumPy (bf16: uint16 bits) and the keyword that
    declares bf16 bits, if any."""
    return round_to(values, dtype), ({"grad_out_dtype": "bf16"} if dtype == "bf16" else {})


def decode(array: np.ndarray, dtype: str) -> np.ndarray:
    """An array of `dtype` (bf16: uint16 bits or ml_dtypes) as float32."""
    array = np.asarray(array)
    if dtype == "bf16":
        return bf16_bits_to_f32(array.view(np.uint16))
    return array.astype(np.float32)


class Problem:
    """A backward's inputs, as the references and tpembed.embedding_backward() take them."""

    def __init__(self, ids, grad, rows, *, row_offset=0, padding_rows=0, valid_ids=None,
                 padding_idx=None, column_offset=0, cols=None, scale=None, padding_scale=None):
        self.ids = np.asarray(ids)
        self.grad = np.asarray(grad, np.float32)  # the values of grad_out, whatever its dtype
        self.rows, self.row_offset, self.padding_rows = rows, row_offset, padding_rows
        self.valid_ids = row_offset + rows + padding_rows if valid_ids is None else valid_ids
        self.padding_idx, self.column_offset = padding_idx, column_offset
        width = self.grad.shape[-1] if self.grad.ndim else 0
        self.cols = width - column_offset if cols is None else cols
        self.scale, self.padding_scale = scale, padding_scale

    def taken(self) -> np.ndarray:
        """grad_out's rows, flat, at the shard's columns (float32)."""
        flat = self.grad.reshape(-1, self.grad.shape[-1]) if self.grad.size else \
            np.zeros((self.ids.size, self.column_offset + self.cols), np.float32)
        return flat[:, self.column_offset:self.column_offset + self.cols]

    def verdicts(self):
        """(local key per position or -1, counts dict) by GradientParams' rule."""
        flat = self.ids.reshape(-1).astype(np.int64)
        ignored = np.zeros(flat.shape, bool) if self.padding_idx is None else \
            flat == self.padding_idx
        out_of_range = ~ignored & ((flat < 0) | (flat >= self.valid_ids))
        local = flat - self.row_offset
        owned = ~ignored & ~out_of_range & (local >= 0) & (local < self.rows + self.padding_rows)
        counts = {"accumulated": int(owned.sum()),
                  "unowned": int((~ignored & ~out_of_range & ~owned).sum()),
                  "out_of_range": int(out_of_range.sum()), "ignored": int(ignored.sum())}
        return np.where(owned, local, -1), counts

    def row_scales(self) -> np.ndarray | None:
        if self.scale is None:
            return None
        scales = [np.asarray(self.scale, np.float32)]
        if self.padding_scale is not None:
            scales.append(np.asarray(self.padding_scale, np.float32))
        return np.concatenate(scales)


def documented_order_sums(problem: Problem):
    """{key: S} for every selected key, summed exactly as gradient.hpp's steps 1-3 say."""
    keys, _ = problem.verdicts()
    taken = problem.taken()
    sums = {}
    for key in np.unique(keys[keys >= 0]):
        positions = np.flatnonzero(keys == key)  # step 1: the row's positions, in order...
        total = None
        for first in range(0, positions.size, CHUNK):  # ...in chunks of 32 of its own
            chunk = positions[first:first + CHUNK]
            part = taken[chunk[0]].copy()  # step 2: from the first value itself
            for position in chunk[1:]:
                part = part + taken[position]  # float32 + float32: one IEEE addition
            total = part if total is None else total + part  # step 3
        sums[int(key)] = total
    return sums


def documented_order(problem: Problem, dtype: str, old=None, old_padding=None):
    """(grad_weight, grad_padding or None) in `dtype`'s NumPy encoding (bf16: uint16 bits) as
    gradient.hpp's step 4 makes them: overwritten (old None) or added to `old`."""
    rows, cols = problem.rows, problem.cols
    scales = problem.row_scales()
    targets = []
    for count, previous in ((rows, old), (problem.padding_rows, old_padding)):
        if previous is None:
            targets.append(round_to(np.zeros((count, cols), np.float32), dtype))
        else:
            targets.append(np.array(previous, copy=True))  # already in dtype's encoding
    for key, total in documented_order_sums(problem).items():
        g = total if scales is None else np.multiply(total, scales[key], dtype=np.float32)
        target, row = (targets[0], key) if key < rows else (targets[1], key - rows)
        accumulating = (old if key < rows else old_padding) is not None
        value = decode(target[row], dtype) + g if accumulating else g  # float32 addition
        target[row] = round_to(value, dtype)
    return targets[0], (targets[1] if problem.padding_rows else None)


def exact_sum(problem: Problem):
    """(float64 sums, float64 sums of magnitudes, entries) per key, by np.add.at."""
    keys, _ = problem.verdicts()
    taken = problem.taken().astype(np.float64)
    size = problem.rows + problem.padding_rows
    sums = np.zeros((size, problem.cols))
    magnitudes = np.zeros((size, problem.cols))
    selected = keys >= 0
    np.add.at(sums, keys[selected], taken[selected])
    np.add.at(magnitudes, keys[selected], np.abs(taken[selected]))
    return sums, magnitudes, np.bincount(keys[selected], minlength=size)


def check_within_bound(problem: Problem, dtype: str, result, old=None):
    """Asserts that `result` (tpembed's grad_weight and grad_padding rows, stacked, as float32)
    is within gradient.hpp's bound of the exact gradient: k * 2^-24 * sum |x| for the sum
    (k = min(m - 1, 31 + ceil(m / 32) - 1), m the row's entries), then a half-ulp for the scale's
    multiply, one for an accumulating addition and one for the final rounding to `dtype`."""
    sums, magnitudes, entries = exact_sum(problem)
    k = np.array([min(m - 1, 31 + math.ceil(m / CHUNK) - 1) if m else 0 for m in entries], float)
    scales = problem.row_scales()
    scale = np.ones(len(entries)) if scales is None else scales.astype(np.float64)
    base = np.zeros_like(sums) if old is None else old.astype(np.float64)
    expected = base + sums * scale[:, None]
    tolerance = np.abs(scale)[:, None] * k[:, None] * UNIT * magnitudes * (1 + 1e-5)
    if scales is not None:
        tolerance += UNIT * np.abs(sums * scale[:, None]) * (1 + 1e-5)
    if old is not None:
        tolerance += UNIT * (np.abs(expected) + tolerance)
    tolerance += HALF_ULP[dtype] * (np.abs(expected) + tolerance) + SMALLEST_STEP[dtype]
    error = np.abs(np.asarray(result, np.float64) - expected)
    worst = np.unravel_index(np.argmax(error - tolerance), error.shape) if error.size else None
    assert error.size == 0 or (error <= tolerance).all(), (
        f"row {worst[0]} column {worst[1]}: |{result[worst]} - {expected[worst]}| = "
        f"{error[worst]} > bound {tolerance[worst]}")


def sequential_sum(problem: Problem, key: int) -> np.ndarray:
    """The plain left-to-right float32 sum of a key's entries (what the chunks are not)."""
    keys, _ = problem.verdicts()
    taken = problem.taken()
    total = None
    for position in np.flatnonzero(keys == key):
        total = taken[position].copy() if total is None else total + taken[position]
    return total
