//go:build tools

// Pins kwok for the local cluster's fake nodes (see ../build.sh).
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
