#!/usr/bin/env python3
"""Render the Helm chart (deploy/helm/r1serve) with Helm's own template engine, through the
helm-python-sdk package (Helm's Go SDK as a library: no helm binary), into one YAML file per
template under OUT_DIR, for kubernetes-validate.

usage: render-chart.py CHART OUT_DIR [KEY=JSON ...]   (values overrides, e.g. gpu=1)
"""
import json
import os
import sys

import helm_python as helm


def main():
    chart_dir, out_dir = sys.argv[1], sys.argv[2]
    overrides = {}
    for kv in sys.argv[3:]:
        key, value = kv.split("=", 1)
        node = overrides
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = json.loads(value)
    os.makedirs(out_dir, exist_ok=True)
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(overrides, name="r1serve", namespace="default")
    written = 0
    for name, text in sorted(manifests.items()):
        if not name.endswith(".yaml") or not text.strip():
            continue  # helpers and templates switched off by values
        path = os.path.join(out_dir, name.replace("/", "_"))
        with open(path, "w") as f:
            f.write(text)
        written += 1
    print(f"render-chart: {written} manifests from {chart_dir} -> {out_dir}")
    if written == 0:
        sys.exit("render-chart: nothing rendered")


if __name__ == "__main__":
    main()
