// Pins the OpenFGA CLI (fga) that runs the model tests. The CLI v0.7.8 pins an OpenFGA server
// module version the module proxy no longer serves, so this module lifts it to the server version
// the project runs (v1.22.1: before it, Check spun at full CPU in its weight2 strategy, OpenFGA
// #3299 — `fga model test` took minutes); build with `go install github.com/openfga/cli/cmd/fga` from here.
//go:build tools

package tools

import _ "github.com/openfga/cli/cmd/fga"
