package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentCallReachesTheSocketAndPrintsTheAnswer(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "agent.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write([]byte(r.Method + " " + string(body)))
	})
	mux.HandleFunc("/vault", func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "sealed", 503) })
	go func() { _ = http.Serve(listener, mux) }()
	defer listener.Close()

	var out bytes.Buffer
	if err := runAgentCall([]string{"--socket", socket, "/call", `{"url":"x"}`}, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != `POST {"url":"x"}` {
		t.Fatalf("got %q", got)
	}
	out.Reset()
	err = runAgentCall([]string{"--socket", socket, "/vault"}, &out)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(out.String(), "sealed") {
		t.Fatalf("a refusal must be an error with the answer printed: %v %q", err, out.String())
	}
	if err := runAgentCall([]string{"--socket", socket, "call"}, &out); err == nil {
		t.Fatal("a path without a leading slash must be refused")
	}
	if err := runAgentCall([]string{"--socket", filepath.Join(t.TempDir(), "none"), "/call"}, &out); err == nil {
		t.Fatal("a missing socket must be an error")
	}
}
