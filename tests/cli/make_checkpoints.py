"""Writes the small, hand-made safetensors files the CLI tests feed to tpembed (standard library
only): tables with bad scales, non-finite values, a tensor name with a NUL byte.

Usage: make_checkpoints.py DIRECTORY
"""
import json
import math
import struct
import sys
from pathlib import Path


def write(path, tensors, metadata=None):
    """tensors: {name: (dtype, shape, raw bytes)}; laid out in the given order."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data)


def f32(values):
    return struct.pack(f"<{len(values)}f", *values)


def i8(values):
    return struct.pack(f"<{len(values)}b", *values)


def main(directory):
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    table = "model.embed_tokens.weight"
    codes = i8([1, -2, 3, 4, 5, -6, 7, 8, 9, 10, -11, 12])  # [4, 3]
    write(out / "scale_0d.safetensors", {table: ("I8", [4, 3], codes), table + "_scale": ("F32", [], f32([0.5]))})
    write(out / "scale_short.safetensors",
          {table: ("I8", [4, 3], codes), table + "_scale": ("F32", [3], f32([0.5, 0.25, 2.0]))})
    write(out / "scale_2d.safetensors",
          {table: ("I8", [4, 3], codes), table + "_scale": ("F32", [2, 2], f32([0.5, 0.25, 2.0, 1.0]))})
    write(out / "no_scale.safetensors", {table: ("I8", [4, 3], codes)})
    write(out / "with_scale.safetensors",
          {table: ("I8", [4, 3], codes), table + "_scale": ("F32", [4], f32([0.5, 0.25, 2.0, 1.0]))})
    # int4 [4, 3] stored as U8 [4, 2] (two nibbles a byte) without tpembed's int4_columns metadata.
    nibbles = bytes([0x21, 0x03, 0xF4, 0x05, 0x76, 0x0F, 0x98, 0x01])
    write(out / "int4_plain.safetensors",
          {table: ("U8", [4, 2], nibbles), table + "_scale": ("F32", [4], f32([0.5, 0.25, 2.0, 1.0]))})
    write(out / "inf.safetensors", {table: ("F32", [3, 2], f32([1.0, 2.0, math.inf, 0.5, 3.0, 4.0]))})
    write(out / "nan.safetensors", {table: ("F32", [3, 2], f32([1.0, 2.0, 0.5, 0.25, 3.0, math.nan]))})
    write(out / "nul_name.safetensors", {"a\0b": ("F32", [2, 2], f32([1.0, 2.0, 3.0, 4.0]))})


if __name__ == "__main__":
    main(sys.argv[1])
