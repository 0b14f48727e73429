//go:build faultbugs

package faultbugs

import (
	"os"
	"sync/atomic"
)

// Built reports whether this binary was built with the faultbugs tag.
const Built = true

// planted is the planted bug's name: $DISCOVERD_BUG, or Plant's.
var planted atomic.Pointer[string]

func init() {
	name := os.Getenv("DISCOVERD_BUG")
	planted.Store(&name)
}

// On reports whether the named bug is planted ($DISCOVERD_BUG, or Plant).
func On(name string) bool { return *planted.Load() == name }

// Plant plants the named bug in this process (in place of $DISCOVERD_BUG)
// and returns a function that restores the one planted before: the fault
// runner plants a client-side bug (InClient) in itself for one run.
func Plant(name string) (restore func()) {
	prev := planted.Swap(&name)
	return func() { planted.Store(prev) }
}
