#!/usr/bin/env python3
"""Nsight Compute's --csv output (one row per kernel and metric) as a Markdown table: a row per
kernel launch, a column per metric. Usage: python3 bench/ncu_table.py ncu.csv"""
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head, body = rows[0], rows[1:]
col = {name: i for i, name in enumerate(head)}
kernels = {}
for r in body:
    kernels.setdefault((r[col["ID"]], r[col["Kernel Name"]][:70]), {})[r[col["Metric Name"]]] = r[col["Metric Value"]]
names = sorted({m for v in kernels.values() for m in v})
print("| id | kernel | " + " | ".join(names) + " |")
for (i, k), v in kernels.items():
    print(f"| {i} | {k} | " + " | ".join(v.get(m, "") for m in names) + " |")
