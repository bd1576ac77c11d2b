#!/usr/bin/env python3
"""Prints bench/run.sh's tables from the JSON and pgbench files it left in its output folder."""
import glob
import json
import re
import sys
from pathlib import Path

out, clients = Path(sys.argv[1]), sys.argv[2].split()


def pgbench(name):
    text = (out / f"{name}.txt").read_text()
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", text).group(1))
    latencies = []
    for path in glob.glob(str(out / f"{name}.*")):
        if path.endswith((".txt", ".log")):
            continue
        for line in open(path):
            parts = line.split()
            if len(parts) >= 3:
                latencies.append(int(parts[2]))
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99 + 0.5) - 1)] / 1000 if latencies else float("nan")
    return tps, p99


def medbook(name):
    data = json.loads((out / f"{name}.json").read_text())
    return data["rate_per_s"], data["latency_ms"]["p99"], data


def table(title, rows):
    print(f"\n{title}")
    print(f"{'clients':>7} | {'medbook req/s':>13} | {'ceiling tps':>11} | {'ratio':>5} | {'medbook p99 ms':>14} | {'ceiling p99 ms':>14}")
    print("-" * 80)
    for c, m_rate, m_p99, c_rate, c_p99 in rows:
        print(f"{c:>7} | {m_rate:>13.0f} | {c_rate:>11.0f} | {m_rate / c_rate:>5.2f} | {m_p99:>14.2f} | {c_p99:>14.2f}")


for scenario, script in [("spread", "booking"), ("status", "status")]:
    rows = []
    for c in clients:
        m_rate, m_p99, _ = medbook(f"pg-{scenario}-{c}")
        p_rate, p_p99 = pgbench(f"pgb-{script}-{c}")
        rows.append((c, m_rate, m_p99, p_rate, p_p99))
    table(f"PostgreSQL `{scenario}` vs pgbench `{script}.sql`", rows)

inproc_rate, inproc_p99, _ = medbook("sqlite-inproc")
table("SQLite `spread` vs the same transaction in-process (diesel, one connection)",
      [(c, *medbook(f"sqlite-spread-{c}")[:2], inproc_rate, inproc_p99) for c in clients])

for name in ["pg-contended-64", "pg-hot-doctor-64", "pg-verify"]:
    _, _, data = medbook(name)
    print(f"\n{name}: {data['rate_per_s']:.0f} req/s, p99 {data['latency_ms']['p99']:.2f} ms, "
          f"max {data['latency_ms']['max']:.2f} ms, outcomes {data['outcomes']}, invariant_ok={data['invariant_ok']}")
print()
print((out / "facts.txt").read_text())
