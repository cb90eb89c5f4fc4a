#!/usr/bin/env bash
# Builds helm from its Go module (pinned by go.mod/go.sum here) and caches it
# outside the repository, keyed by its version (tests/go-tool.sh). See --help.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$dir/../go-tool.sh" "$dir" helm helm.sh/helm/v4 helm.sh/helm/v4/cmd/helm "The chart tests (tests/tests/chart.rs) run it against the local control plane:
lint, template, install, upgrade, uninstall. A cold build takes two to three minutes." "$@"
