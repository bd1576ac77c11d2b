"""Reads a medbook /metrics exposition with prometheus_client's strict OpenMetrics parser
(pinned in requirements-ci.txt), which rejects what a scraper would: histogram buckets that
decrease or whose +Inf differs from _count, malformed labels, a missing # EOF.
    usage: .venv/bin/python scripts/check-metrics.py BASE_URL (a server without MEDBOOK_METRICS_TOKEN)"""
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

with urllib.request.urlopen(f"{sys.argv[1]}/metrics") as response:
    text = response.read().decode()
families = list(text_string_to_metric_families(text))
histograms = [f for f in families if f.type == "histogram"]
series = sum(1 for f in histograms for s in f.samples if s.name.endswith("_count"))
if not histograms or series < 3:
    sys.exit(f"expected histograms in /metrics, found {series} series")
print(f"/metrics: {len(families)} families, {series} histogram series, all well-formed")
