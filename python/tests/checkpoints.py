"""A minimal safetensors writer for the tests (independent of tpembed's own writer)."""

from __future__ import annotations

import json
import struct

import numpy as np


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: (safetensors dtype, array)}. Laid out by decreasing element size, so every
    tensor is aligned to its element size in a mapped file."""
    items = sorted(tensors.items(), key=lambda item: (-item[1][1].dtype.itemsize, item[0]))
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in items:
        data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)))
        file.write(text)
        for blob in blobs:
            file.write(blob)


# safetensors dtype names of the tables the tests make (reference.make_table's encodings)
STORED_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16", "i8": "I8", "fp8_e4m3": "F8_E4M3",
                "i4": "U8"}
