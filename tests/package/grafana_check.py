#!/usr/bin/env python3
"""Evaluates every query of the Grafana dashboard with `promtool test rules`
against the exporter's own recorded output (tests/golden/*.prom), so a panel
whose query has a typo, a wrong label or a missing metric fails the test
instead of showing "No data".

Each golden file becomes one instance whose series hold their recorded value
for 30 minutes (counters grow by 1 a minute, so rate() has something to see).
Dashboard variables are replaced the way Grafana would: $job by the job,
$instance by the "All" regex, $__rate_interval by 2m. A query passes when it
returns at least one series at minute 20.

A metric or label value listed in PENDING or PENDING_LABELS (one whose
collector is still being written) may be missing from every golden file: the
panels that need it are reported as PENDING and skipped until a golden file
has it. Any other metric name that no golden file has is a failure.

Usage: grafana_check.py DASHBOARD.json GOLDEN.prom...
"""

import json
import os
import re
import subprocess
import sys
import tempfile

JOB = "sockdiag"
# Metrics and label values a panel may use before any golden file has them
# (while the collector that makes them is being written). Empty now: every
# panel must return data. While an entry is listed, the panels using it
# print PENDING and are skipped until a golden file has it.
PENDING = set()
PENDING_LABELS = set()
SUBSTITUTIONS = [
    ("$__rate_interval", "2m"),
    ("$__interval", "1m"),
    ("$__range", "10m"),
    ("${job}", JOB),
    ("$job", JOB),
    ("${instance:regex}", ".*"),
    ("${instance}", ".*"),
    ("$instance", ".*"),
]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
METRIC_NAME = re.compile(r"\b((?:sockdiag|process)_[a-zA-Z0-9_]+|up)\b(?!\s*\()")


def parse_prom(path):
    """Yields (name, {labels}, value) for each sample of a text exposition."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            if not m:
                sys.exit(f"{path}:{lineno}: cannot parse sample line: {line!r}")
            labels = {}
            body = m.group(3) or ""
            pos = 0
            while pos < len(body):
                lm = LABEL.match(body, pos)
                if not lm:
                    sys.exit(f"{path}:{lineno}: cannot parse labels: {body!r}")
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
            yield m.group(1), labels, float(m.group(4))


def series_literal(name, labels):
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def dashboard_queries(dashboard):
    """(panel title, expr) for every target of every panel, rows included,
    plus the template variables' label_values() queries."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", f"panel {p.get('id')}"), t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and isinstance(q, str):
            m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]+)\)", q.strip())
            if not m:
                sys.exit(f"variable {var['name']}: cannot check query {q!r}")
            # label_values(SELECTOR, LABEL) is non-empty when SELECTOR has
            # series carrying LABEL.
            out.append((f"variable ${var['name']}", f'count by ({m.group(2)}) ({m.group(1)})'))
    return out


def substitute(expr):
    for var, value in SUBSTITUTIONS:
        expr = expr.replace(var, value)
    if "$" in expr:
        sys.exit(f"unknown dashboard variable left in query: {expr}")
    return expr


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    dashboard_path, golden = sys.argv[1], sys.argv[2:]
    with open(dashboard_path, encoding="utf-8") as f:
        dashboard = json.load(f)

    input_series = []
    present = set()
    present_labels = set()
    for i, path in enumerate(golden):
        instance = f"{os.path.basename(path)}:19275"
        for name, labels, value in parse_prom(path):
            present.add(name)
            present_labels.update(labels.items())
            labels = dict(labels, job=JOB, instance=instance)
            values = f"{value:g}+1x30" if name.endswith("_total") else f"{value:g}x30"
            input_series.append({"series": series_literal(name, labels), "values": values})
        # What Prometheus adds to every scraped target.
        present.add("up")
        input_series.append({"series": series_literal("up", {"job": JOB, "instance": instance}), "values": "1x30"})
    if not input_series:
        sys.exit("no samples in the golden files")

    queries = dashboard_queries(dashboard)
    if not queries:
        sys.exit(f"{dashboard_path}: no queries found")
    failures, pending, passed = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for title, raw in queries:
            expr = substitute(raw)
            names = set(METRIC_NAME.findall(expr))
            missing = names - present
            missing |= {
                f'{k}="{v}"'
                for k, v in PENDING_LABELS - present_labels
                if re.search(rf'\b{k}\s*=\s*"{re.escape(v)}"', expr)
            }
            pending_names = PENDING | {f'{k}="{v}"' for k, v in PENDING_LABELS}
            if missing and missing <= pending_names:
                pending.append(f"{title}: needs {', '.join(sorted(missing))}, which no golden file has yet")
                continue
            if missing:
                failures.append(f"{title}: query uses {', '.join(sorted(missing))}, which no golden file has (a typo?)\n    {raw}")
                continue
            test = {
                "evaluation_interval": "1m",
                "tests": [{
                    "interval": "1m",
                    "input_series": input_series,
                    "promql_expr_test": [{
                        "expr": f"count({expr}) > bool 0",
                        "eval_time": "20m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }],
                }],
            }
            path = os.path.join(tmp, "panel.test.yml")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(test, f)  # JSON is YAML
            run = subprocess.run(["promtool", "test", "rules", path], capture_output=True, text=True)
            if run.returncode != 0:
                detail = (run.stdout + run.stderr).strip().splitlines()
                detail = "\n      ".join(detail[-6:])
                failures.append(f"{title}: query returns no data against the golden files\n    {raw}\n      {detail}")
            else:
                passed += 1

    for p in pending:
        print(f"PENDING: {p}")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"grafana: {passed} passed, {len(failures)} failed, {len(pending)} skipped")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
