#!/usr/bin/env python3
"""Prints bench/run.sh's tables from the JSON and pgbench files it left in its output folder."""
import glob
import json
import re
import sys
from pathlib import Path

out, clients, rounds = Path(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3])


def mean(values):
    return sum(values) / len(values)


def rounds_of(fn, name):
    """(rate, p99) of a cell: the mean over its rounds."""
    cells = [fn(f"{name}-r{r}")[:2] for r in range(1, rounds + 1)]
    return mean([c[0] for c in cells]), mean([c[1] for c in cells])


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
    print(f"\n{title}, mean of {rounds} alternating rounds")
    print(f"{'clients':>7} | {'medbook req/s':>13} | {'ceiling tps':>11} | {'ratio':>5} | {'medbook p99 ms':>14} | {'ceiling p99 ms':>14}")
    print("-" * 80)
    for c, m_rate, m_p99, c_rate, c_p99 in rows:
        print(f"{c:>7} | {m_rate:>13.0f} | {c_rate:>11.0f} | {m_rate / c_rate:>5.2f} | {m_p99:>14.2f} | {c_p99:>14.2f}")


def floor_table(title, rows):
    print(f"\n{title}, mean of {rounds} alternating rounds")
    print(f"{'clients':>7} | {'medbook req/s':>13} | {'floor req/s':>11} | {'pgbench tps':>11} | "
          f"{'medbook ratio':>13} | {'floor ratio':>11} | {'p99 ms medbook / floor / pgbench':>32}")
    print("-" * 116)
    for c, m_rate, m_p99, f_rate, f_p99, p_rate, p_p99 in rows:
        p99s = f"{m_p99:.2f} / {f_p99:.2f} / {p_p99:.2f}"
        print(f"{c:>7} | {m_rate:>13.0f} | {f_rate:>11.0f} | {p_rate:>11.0f} | "
              f"{m_rate / p_rate:>13.2f} | {f_rate / p_rate:>11.2f} | {p99s:>32}")


def booked(name):
    """The share of a cell's requests, over its rounds, that booked (201): the rest were
    refused (409) and committed nothing, which is cheaper."""
    outcomes = [medbook(f"{name}-r{r}")[2]["outcomes"] for r in range(1, rounds + 1)]
    total = sum(n for o in outcomes for n in o.values())
    return sum(o.get("201", 0) for o in outcomes) / total if total else float("nan")


placements = (out / "placements.txt").read_text().split()
where = {
    "shared": "load generator, medbook/pgbench and PostgreSQL share all cores",
    "split": "PostgreSQL on its own core, load generator and medbook/pgbench on the others",
}
for placement in placements:
    for scenario, script in [("spread", "booking"), ("status", "status")]:
        rows = []
        for c in clients:
            m_rate, m_p99 = rounds_of(medbook, f"{placement}-pg-{scenario}-{c}")
            p_rate, p_p99 = rounds_of(pgbench, f"{placement}-pgb-{script}-{c}")
            rows.append((c, m_rate, m_p99, *rounds_of(medbook, f"{placement}-floor-{scenario}-{c}"), p_rate, p_p99))
        title = f"PostgreSQL `{scenario}` vs pgbench `{script}.sql` ({placement}: {where[placement]})"
        floor_table(title + "; floor = `medbook-bench floor-server`, the same SQL behind the same stack", rows)
        if scenario == "spread":
            print("booked (201) share, medbook / floor: " + ", ".join(
                f"{c}: {booked(f'{placement}-pg-spread-{c}'):.0%} / {booked(f'{placement}-floor-spread-{c}'):.0%}"
                for c in clients))

table("SQLite `spread` vs the same transaction in-process (diesel, one connection)",
      [(c, *rounds_of(medbook, f"sqlite-spread-{c}"), *rounds_of(medbook, f"sqlite-inproc-{c}"))
       for c in clients])
print("booked (201) share, medbook / in-process: " + ", ".join(
    f"{c}: {booked(f'sqlite-spread-{c}'):.0%} / {booked(f'sqlite-inproc-{c}'):.0%}" for c in clients))

# One client is one request at a time, so a request's time is 1 / rate. A medbook that added
# nothing to the in-process transaction but an HTTP request with its hand-off (`ping-db`)
# would reach loop / (loop + ping-db) of the loop: the most this stack allows at one client.
if "1" in clients:
    loop_us = 1e6 / rounds_of(medbook, "sqlite-inproc-1")[0]
    ping_us = 1e6 / rounds_of(medbook, "sqlite-ping-1")[0]
    ping_db_us = 1e6 / rounds_of(medbook, "sqlite-ping-db-1")[0]
    spread_us = 1e6 / rounds_of(medbook, "sqlite-spread-1")[0]
    bound = loop_us / (loop_us + ping_db_us)
    print(f"\nSQLite at one client, µs per request: in-process transaction {loop_us:.0f}; "
          f"HTTP alone (`ping`) {ping_us:.0f}; HTTP + hand-off + one statement (`ping-db`) {ping_db_us:.0f}; "
          f"medbook `spread` {spread_us:.0f}")
    print(f"HTTP bound at one client: loop / (loop + ping-db) = {bound:.2f}; "
          f"medbook's ratio {loop_us / spread_us:.2f} is {loop_us / spread_us / bound:.0%} of it")
    # The same transaction after a 250 µs sleep (the pause is not in its latency): what it
    # costs on a thread that sleeps between transactions, as a one-client server's does.
    # A bound takes its fastest round: a round the host disturbed would lower the bound below
    # what a service can reach (run AL: 279 and 494 µs, and medbook above the mean's bound).
    # But never one faster than the tight loop: the pause slows the transaction or it does
    # not, and a round under the loop's time is the disk's luck (run AQ: 255 and 351 µs
    # against the loop's 337, then 324-391 in three more rounds), which would lift this
    # bound over the HTTP bound above.
    paused = sorted(medbook(f"sqlite-inproc-paused-1-r{r}")[2]["latency_ms"]["mean"] * 1000
                    for r in range(1, rounds + 1))
    paused_us = max(paused[0], loop_us)
    cold_bound = loop_us / (paused_us + ping_db_us)
    rounds_us = " / ".join(f"{us:.0f}" for us in paused)
    taken = (f"{paused_us:.0f} µs in the fastest round (rounds: {rounds_us})"
             if paused_us == paused[0]
             else f"rounds {rounds_us} µs, taken as the tight loop's {paused_us:.0f} "
                  "(no round counts as faster than it)")
    print(f"The transaction after a 250 µs sleep: {taken}; bound with it: "
          f"loop / (paused transaction + ping-db) = {cold_bound:.2f}; "
          f"medbook's ratio is {loop_us / spread_us / cold_bound:.0%} of it")

for name in ["shared-pg-contended", "shared-pg-hot-doctor", "shared-pg-mixed", "shared-pg-verify"]:
    _, _, data = medbook(name)
    print(f"\n{name} × {data['clients']}: {data['rate_per_s']:.0f} req/s, p99 {data['latency_ms']['p99']:.2f} ms, "
          f"max {data['latency_ms']['max']:.2f} ms, outcomes {data['outcomes']}, invariant_ok={data['invariant_ok']}")


UNSTEADY = 1.25  # fastest over slowest round of one contender


def unsteady(factor=UNSTEADY):
    """The cells where one contender's rounds differ by more than `factor` (fastest over
    slowest): the tables print their mean, which says nothing of it, and a ratio made of them
    is the host's moment as much as the code's."""
    rates = {}
    for path in out.glob("*-r[0-9]*.json"):
        rates.setdefault(path.stem.rsplit("-r", 1)[0], []).append(medbook(path.stem)[0])
    for path in out.glob("*-pgb-*-r[0-9]*.txt"):
        rates.setdefault(path.stem.rsplit("-r", 1)[0], []).append(pgbench(path.stem)[0])
    return [(name, sorted(r)) for name, r in sorted(rates.items())
            if len(r) > 1 and min(r) > 0 and max(r) / min(r) > factor]


def contender(name):
    """Who ran a cell, by its file name: `pg` is medbook on PostgreSQL, `pgb` pgbench."""
    for part, who in [("-pgb-", "pgbench"), ("-floor-", "the floor"), ("-pg-", "medbook"),
                      ("sqlite-inproc", "the in-process loop"), ("sqlite-", "medbook")]:
        if part in name:
            return who
    return "?"


def labelled(name):
    """A cell's file name with who ran it, as the report's lists print it."""
    return f"{name} ({contender(name)})"


moved = unsteady()
if moved:
    print(f"\nunsteady: cells whose rounds of one contender differ by more than {(UNSTEADY - 1) * 100:.0f} % "
          "(per second, slowest to fastest):")
    for name, r in moved:
        print(f"  {labelled(name)}: " + " / ".join(f"{x:.0f}" for x in r))
print()
print((out / "facts.txt").read_text())


def problems():
    """What in the run's files says a cell did not run as it should: the tables above would
    average such a cell in without a word."""
    found = []
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        name = labelled(path.stem)
        if data["requests"] == 0:
            found.append(f"{name}: no request was measured")
        for outcome, n in data["outcomes"].items():
            status = outcome.split()[0]
            # 409 is the answer a refused booking or a lost optimistic race is meant to get;
            # anything else outside 2xx is a failure of the bench or of the service.
            if (not status.startswith("2") and status != "409") or outcome == "409 DEADLOCK_DETECTED":
                # The slowest request tells a stall (a 503 after the pool's time-out, run
                # AR) from answers that came at once.
                slowest = data["latency_ms"]["max"]
                found.append(f"{name}: {n} × {outcome} (the cell's slowest request {slowest:.0f} ms)")
        if data["invariant_ok"] is False:
            found.append(f"{name}: the invariant is broken")
    if json.loads((out / "shared-pg-verify.json").read_text())["invariant_ok"] is None:
        found.append("shared-pg-verify: the invariant was not checked")
    for path in sorted(out.glob("*-pgb-*.txt")):
        text = path.read_text()
        processed = re.search(r"number of transactions actually processed: (\d+)", text)
        failed = re.search(r"number of failed transactions: (\d+)", text)
        name = labelled(path.stem)
        if not processed or int(processed.group(1)) == 0:
            found.append(f"{name}: pgbench processed no transaction")
        if not failed or int(failed.group(1)) != 0:
            found.append(f"{name}: pgbench had failed transactions")
    facts = (out / "facts.txt").read_text()
    for fact in ["sqlite_rss_kib", "pg_rss_kib", "sqlite_startup_ms", "pg_startup_ms"]:
        if fact not in facts:
            found.append(f"facts.txt: no {fact}")
    return found


found = problems()
if found:
    print("PROBLEMS (the figures above include these cells):")
    for line in found:
        print(f"  {line}")
    sys.exit(1)
print("checked: every cell answered only 2xx and 409, no retries ran out, pgbench failed no "
      "transaction, the invariant held")
