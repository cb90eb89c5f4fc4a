#!/usr/bin/env bash
# Builds crane (go-containerregistry) from its Go module (pinned by go.mod/go.sum here) and caches it
# outside the repository, keyed by its version (tests/go-tool.sh). See --help.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$dir/../go-tool.sh" "$dir" crane github.com/google/go-containerregistry github.com/google/go-containerregistry/cmd/crane "scripts/image.sh uses it to assemble the operator's image without a container engine
and push it to a registry (tests/tests/image.rs: a local one). A cold build takes
about a minute." "$@"
