package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// runAgentCall sends one request to the app's agent socket and prints the
// answer: how a platform without access to the pod's files (kind, through
// `kubectl exec`) reaches the same /call, /session and /vault endpoints the
// local platform reaches over the socket directly.
func runAgentCall(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	socket := fs.String("socket", "/run/tgpod/agent.sock", "the app's agent socket")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 || !strings.HasPrefix(fs.Arg(0), "/") {
		return fmt.Errorf("usage: tgpod agent [--socket PATH] /call|/session|/vault|/vault/pause|/vault/resume [JSON]")
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", *socket)
		},
	}}
	method, body := http.MethodGet, io.Reader(nil)
	if fs.NArg() == 2 {
		method, body = http.MethodPost, strings.NewReader(fs.Arg(1))
	}
	request, err := http.NewRequest(method, "http://agent"+fs.Arg(0), body)
	if err != nil {
		return err
	}
	response, err := client.Do(request)
	if err != nil {
		return fmt.Errorf("agent socket %s: %w", *socket, err)
	}
	defer response.Body.Close()
	if _, err = io.Copy(out, response.Body); err != nil {
		return err
	}
	if response.StatusCode >= 300 {
		return fmt.Errorf("agent answered %s", response.Status)
	}
	return nil
}

func init() {
	extraCommands["agent"] = func(args []string) error { return runAgentCall(args, os.Stdout) }
}
