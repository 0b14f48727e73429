package harness

import "github.com/discoverd/discoverd/test/prockit"

// Build compiles cmd/discoverd with the faultclock tag (plus extra tags, e.g.
// "faultbugs") into dir, once per tag set per process (test/prockit), and
// returns the path: dir/discoverd-faultclock[-faultbugs].
func Build(dir string, extraTags ...string) (string, error) {
	return prockit.BuildInto(dir, append([]string{"faultclock"}, extraTags...)...)
}
