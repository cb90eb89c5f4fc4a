#!/usr/bin/env bash
# Builds the CNCF Distribution registry from its Go module (pinned by go.mod/go.sum here) and caches it
# outside the repository, keyed by its version (tests/go-tool.sh). See --help.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$dir/../go-tool.sh" "$dir" registry github.com/distribution/distribution/v3 github.com/distribution/distribution/v3/cmd/registry "The module-supply tests (host/tests/oci.rs) and the image test start it on a free
loopback port with its storage in a temporary directory. A cold build takes one to
two minutes." "$@"
