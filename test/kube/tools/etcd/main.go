// Command etcd is the etcd server, built from the module proxy so the
// integration tests in test/kube need no downloaded binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
