// Command tgpod is what runs inside a local pod: the echo app with its
// client agent and Vault agent ("tgpod app"), and the mesh sidecar
// ("tgpod sidecar"). Standard library only, so it builds in seconds and
// runs as any uid (the sidecar runs as 1337, which iptables exempts).
package main

import (
	"fmt"
	"os"
)

// extraCommands are the subcommands beyond the pod's own processes.
var extraCommands = map[string]func([]string) error{}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tgpod app|sidecar|agent [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "app":
		err = runApp(os.Args[2:])
	case "sidecar":
		err = runSidecar(os.Args[2:])
	default:
		if command, ok := extraCommands[os.Args[1]]; ok {
			err = command(os.Args[2:])
		} else {
			err = fmt.Errorf("unknown command %q", os.Args[1])
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tgpod:", err)
		os.Exit(1)
	}
}
