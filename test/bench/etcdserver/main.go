// Command etcdserver is etcd, built from the etcd server module this
// repository already depends on, so the benchmark (test/bench) compares
// discoverd with the etcd of go.mod rather than whatever etcd is installed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
