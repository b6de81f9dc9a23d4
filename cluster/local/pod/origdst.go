package main

import (
	"fmt"
	"net"
	"syscall"
)

// soOriginalDst is SO_ORIGINAL_DST from linux/netfilter_ipv4.h: the address a
// connection was headed for before iptables REDIRECT sent it to us.
const soOriginalDst = 80

func originalDst(conn net.Conn) (string, error) {
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return "", fmt.Errorf("not a TCP connection")
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return "", err
	}
	var addr string
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		// The kernel answers with a sockaddr_in; GetsockoptIPv6Mreq is the
		// standard way to read those 16 bytes from Go.
		mreq, err := syscall.GetsockoptIPv6Mreq(int(fd), syscall.IPPROTO_IP, soOriginalDst)
		if err != nil {
			sockErr = err
			return
		}
		b := mreq.Multiaddr
		port := int(b[2])<<8 | int(b[3])
		addr = fmt.Sprintf("%d.%d.%d.%d:%d", b[4], b[5], b[6], b[7], port)
	})
	if err != nil {
		return "", err
	}
	return addr, sockErr
}
