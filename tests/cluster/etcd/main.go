// Command etcd is the upstream etcd server, unchanged: it only hands its arguments
// to etcdmain, the package behind the official etcd binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
