#!/usr/bin/env python3
"""Compares two diesel print-schema outputs by table, column name and nullability.

SQLite and PostgreSQL spell types differently (Integer/Int4); the column sets must agree.
"""
import re
import sys


def tables(path):
    text = open(path).read()
    out = {}
    for name, body in re.findall(r"table!\s*\{\s*(\w+)\s*\([^)]*\)\s*\{(.*?)\}\s*\}", text, re.S):
        cols = {}
        for col, ty in re.findall(r"^\s*(\w+)\s*->\s*([^,]+),", body, re.M):
            cols[col] = ty.strip().startswith("Nullable")
        out[name] = cols
    return out


a, b = tables(sys.argv[1]), tables(sys.argv[2])
# Two files the patterns do not read would agree, as two empty sets: not a pass.
for path, found in ((sys.argv[1], a), (sys.argv[2], b)):
    if not found or not all(found.values()):
        sys.exit(f"read no table, or a table without columns, in {path}: is it print-schema output?")
if a != b:
    for t in sorted(set(a) | set(b)):
        if a.get(t) != b.get(t):
            print(f"{t}: {sys.argv[1]}={a.get(t)}\n{' ' * len(t)}  {sys.argv[2]}={b.get(t)}")
    sys.exit("the SQLite and PostgreSQL migrations define different schemas")
print(f"{len(a)} tables agree between {sys.argv[1]} and {sys.argv[2]}")
