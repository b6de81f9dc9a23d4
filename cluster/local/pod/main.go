// Command tgpod is the sample workload's app container: the echo app with its
// client agent and Vault agent ("tgpod app"), the agent client for platforms
// that reach pods through `kubectl exec` ("tgpod agent"), and capture markers
// ("tgpod mark"). Istio's own sidecar (pilot-agent and Envoy) does the mesh part.
// Standard library only, so it builds in seconds.
package main

import (
	"fmt"
	"os"
)

// extraCommands are the subcommands beyond the pod's own processes.
var extraCommands = map[string]func([]string) error{}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tgpod app|agent|mark [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "app":
		err = runApp(os.Args[2:])
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
