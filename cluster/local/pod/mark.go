package main

import (
	"flag"
	"fmt"
	"net"
	"strings"
)

// markerPort is the discard port: a capture is synchronized by datagrams to it,
// which are never part of a TCP flow (cluster/wire.py MARKER_PORT).
const markerPort = "9"

// runMark sends one UDP datagram carrying text out of the pod's interface, so
// that a capture running in the pod's network namespace can prove it is live
// (start marker) and has read everything (end marker). The default address is
// TEST-NET-1 (RFC 5737): it routes out of eth0 and reaches no real host.
func runMark(args []string) error {
	fs := flag.NewFlagSet("mark", flag.ContinueOnError)
	to := fs.String("to", "192.0.2.1", "where the datagram is sent (any address routed out of the pod's interface)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || !strings.HasPrefix(fs.Arg(0), "trustgrid-capture-") {
		return fmt.Errorf("usage: tgpod mark [--to IP] trustgrid-capture-...")
	}
	conn, err := net.Dial("udp", net.JoinHostPort(*to, markerPort))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(fs.Arg(0)))
	return err
}

func init() {
	extraCommands["mark"] = runMark
}
