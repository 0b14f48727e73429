//go:build faultbugs

package faultbugs

import "os"

var planted = os.Getenv("DISCOVERD_BUG")

// On reports whether the named bug is planted ($DISCOVERD_BUG).
func On(name string) bool { return planted == name }
