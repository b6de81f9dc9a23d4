package main

import (
	"net"
	"testing"
	"time"
)

func TestMarkSendsItsTextAsOneDatagramToTheDiscardPort(t *testing.T) {
	listener, err := net.ListenPacket("udp", "127.0.0.1:"+markerPort)
	if err != nil {
		t.Skipf("cannot bind the discard port here: %v", err)
	}
	defer listener.Close()
	if err := runMark([]string{"--to", "127.0.0.1", "trustgrid-capture-start-00ff"}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	_ = listener.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := listener.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "trustgrid-capture-start-00ff" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	if err := runMark([]string{"hello"}); err == nil {
		t.Fatal("text that is not a capture marker must be refused")
	}
}
