"""Checks a scattered lookup's per-rank files against the unsharded lookup's output: file t must
hold, bit for bit, chunk t of numpy.array_split(whole, len(files), axis=DIM) (the same rule as
torch.tensor_split: the first n % tp chunks get one more), and its metadata must name that chunk.

Usage: compare_chunks.py WHOLE.safetensors DIM CHUNK0.safetensors [CHUNK1.safetensors ...]
Prints one line per file and exits 1 on the first difference.
"""
import json
import struct
import sys

import numpy

ELEMENT = {"F32": numpy.uint32, "F16": numpy.uint16, "BF16": numpy.uint16}  # bits, compared exactly


def read(path, name="embeddings"):
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    entry = header[name]
    begin, end = entry["data_offsets"]
    data = numpy.frombuffer(blob[8 + length + begin:8 + length + end], dtype=ELEMENT[entry["dtype"]])
    return data.reshape(entry["shape"]), header.get("__metadata__", {})


def main():
    whole_path, dim, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    whole, _ = read(whole_path)
    expected = numpy.array_split(whole, len(files), axis=dim)
    first = 0
    for t, path in enumerate(files):
        chunk, metadata = read(path)
        want = expected[t]
        span = f"{first}:{first + want.shape[dim]}"
        if chunk.shape != want.shape or not numpy.array_equal(chunk, want):
            print(f"FAIL {path}: shape {list(chunk.shape)}, expected chunk {t} {list(want.shape)} of {whole_path}")
            return 1
        if metadata.get("tpembed.chunk") != span or metadata.get("tpembed.tp_rank") != str(t) \
                or metadata.get("tpembed.scatter_dim") != str(dim):
            print(f"FAIL {path}: metadata {metadata}, expected chunk {span} of tp rank {t} along dim {dim}")
            return 1
        print(f"ok {path}: chunk {t} {list(chunk.shape)} ({span} of dim {dim}) equals the unsharded lookup's")
        first += want.shape[dim]
    return 0


if __name__ == "__main__":
    sys.exit(main())
