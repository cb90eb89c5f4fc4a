//go:build tools

// Pins helm for the chart tests (see build.sh).
package tools

import _ "helm.sh/helm/v4/cmd/helm"
