//go:build tools

// Pins crane for the daemonless image build (see build.sh).
package tools

import _ "github.com/google/go-containerregistry/cmd/crane"
