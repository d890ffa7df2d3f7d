#!/usr/bin/env python3
"""Parses every PromQL query of the Grafana dashboards with the real promtool: the queries are
written as recording rules into a temporary rule file and `promtool check rules` reads it (a
query that does not parse fails the check, naming the dashboard and panel).

Usage: scripts/check_dashboard_queries.py [DASHBOARD_DIR]   (default: grafana/dashboards)
"""
import glob
import json
import os
import subprocess
import sys
import tempfile


def queries(path):
    with open(path) as f:
        dashboard = json.load(f)
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                yield panel.get("title", "?"), expr


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "grafana/dashboards")
    lines = ["groups:"]
    count = 0
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        lines.append(f"  - name: {json.dumps(os.path.basename(path))}")
        lines.append("    rules:")
        for i, (title, expr) in enumerate(queries(path)):
            # Grafana's interval variables are not PromQL: give them a value.
            expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
            lines.append(f"      - record: dashboard:query_{i}")
            lines.append(f"        expr: {json.dumps(expr)}")
            lines.append(f"        labels: {{panel: {json.dumps(title)}}}")
            count += 1
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        rules = f.name
    try:
        result = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
    finally:
        os.unlink(rules)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        print(f"dashboards: a query does not parse (of {count})", file=sys.stderr)
        return 1
    print(f"dashboards: {count} queries parse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
