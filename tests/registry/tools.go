//go:build tools

// Pins the CNCF Distribution registry for the module-supply tests (see build.sh).
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
