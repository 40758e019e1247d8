#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Offline validation of the Kubernetes manifests under k8s/: renders every kustomization with
# `kubectl kustomize`, validates each object against the Kubernetes API schemas (and the
# prometheus-operator CRDs) with unknown fields rejected, checks the remora sidecar's wiring
# and `remora --check`s its config, and requires the broken fixtures to be rejected
# (k8s/validate/validate.mjs says what exactly). No cluster and no network, except `npm ci`
# from the npm registry the first time (k8s/validate/node_modules, from package-lock.json).
# Last line: "N passed, N failed" (", N skipped" for the `remora --check` checks when no remora
# binary is built). Exit status 0 only when nothing failed.
#
#   k8s/validate.sh                      # from anywhere; uses proxy/remora when it is built
#   REMORA_BIN=/path/remora k8s/validate.sh
#   KUBECTL=/path/kubectl k8s/validate.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir="$here/validate"

fail() {
    echo "validate.sh: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

node=$(command -v node || true)
[ -n "$node" ] || fail "node not found: install Node.js >= 18 (Debian 12: apt-get install nodejs npm)"
major=$("$node" -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || fail "node $("$node" --version) is too old: Node.js >= 18 is needed"

# The renderer: $KUBECTL, else kubectl on PATH, /usr/bin/kubectl, /usr/local/bin/kubectl
# (kubectl >= 1.27: its built-in kustomize v5 renders these Components and patches),
# else a standalone kustomize on PATH. validate.mjs reports a missing one as a failure.
renderer=()
if [ -n "${KUBECTL:-}" ]; then
    renderer=(--kubectl "$KUBECTL")
elif k=$(command -v kubectl); then
    renderer=(--kubectl "$k")
elif [ -x /usr/bin/kubectl ]; then
    renderer=(--kubectl /usr/bin/kubectl)
elif [ -x /usr/local/bin/kubectl ]; then
    renderer=(--kubectl /usr/local/bin/kubectl)
elif k=$(command -v kustomize); then
    renderer=(--kustomize "$k")
fi

# Dependencies: exactly what package-lock.json pins, installed again whenever it changed.
stamp="$dir/node_modules/.remora-package-lock.json"
if ! cmp -s "$dir/package-lock.json" "$stamp" 2>/dev/null; then
    npm=$(command -v npm || true)
    [ -n "$npm" ] || fail "npm not found: install it (Debian 12: apt-get install npm) to fetch k8s/validate's dependencies"
    echo "== npm ci in ${dir#"$PWD/"}"
    (cd "$dir" && "$npm" ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 ||
        fail "npm ci failed in $dir (the npm registry must be reachable the first time)"
    cp "$dir/package-lock.json" "$stamp"
fi

remora=()
if [ -n "${REMORA_BIN:-}" ]; then
    remora=(--remora "$REMORA_BIN")
fi

exec "$node" "$dir/validate.mjs" --k8s "$here" "${renderer[@]}" "${remora[@]}"
