package conformance

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"path/filepath"
	"testing"
)

// BenchmarkSocketFloorECDSA is the bound the keyd figures sit under: the
// same ECDSA P-256 signatures with 8 clients and 8 signers in this process,
// with no HTTP, JSON, policy or store, beside in-process signing, handed
// over two ways:
//   - socket: 32 bytes each way on a kept Unix-socket connection, each
//     signer a goroutine reading its connection (as keyd's are);
//   - channels: the same goroutines, handing over by channel.
//
// The gap between channels and socket is what waking goroutines through the
// runtime's network poller costs on this machine; the gap between socket
// and BenchmarkKeydSign is what Warden's pipeline costs.
func BenchmarkSocketFloorECDSA(b *testing.B) {
	const clients = 8
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("benchmark"))
	sign := func(in []byte) []byte {
		sig, err := ecdsa.SignASN1(rand.Reader, key, in)
		if err != nil {
			panic(err) // P-256 with a working rand.Reader does not fail
		}
		return sig
	}
	ln, err := net.Listen("unix", filepath.Join(b.TempDir(), "floor.sock"))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go serveFloor(ln, sign)

	viaSock := rateRun(b, "socket", func(b *testing.B) {
		conns := make(chan net.Conn, clients)
		for range clients {
			c, err := net.Dial("unix", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			conns <- c
		}
		parallel(b, clients, func() error {
			c := <-conns
			defer func() { conns <- c }()
			if _, err := c.Write(digest[:]); err != nil {
				return err
			}
			_, err := io.ReadFull(c, make([]byte, 80))
			return err
		})
	})
	viaChan := rateRun(b, "channels", func(b *testing.B) {
		type signer struct{ in, out chan []byte }
		signers := make(chan signer, clients)
		for range clients {
			s := signer{make(chan []byte), make(chan []byte)}
			go func() {
				for d := range s.in {
					s.out <- sign(d)
				}
			}()
			defer close(s.in)
			signers <- s
		}
		parallel(b, clients, func() error {
			s := <-signers
			defer func() { signers <- s }()
			s.in <- digest[:]
			<-s.out
			return nil
		})
	})
	inProc := rateRun(b, "inprocess", func(b *testing.B) {
		parallel(b, clients, func() error {
			sign(digest[:])
			return nil
		})
	})
	printRatio("raw Unix socket ecdsa-p256 sign (no HTTP), 8 clients: socket %.0f/s, in-process Go %.0f/s, ratio %.3f\n", viaSock.rate, inProc.rate)
	printCPU("socket vs in-process", viaSock, inProc)
	printRatio("channel hand-over ecdsa-p256 sign, 8 clients: channels %.0f/s, in-process Go %.0f/s, ratio %.3f\n", viaChan.rate, inProc.rate)
	printCPU("channels vs in-process", viaChan, inProc)
}

// serveFloor answers each 32-byte digest on each connection of ln with its
// signature, padded to 80 bytes (a P-256 DER signature is at most 72).
func serveFloor(ln net.Listener, sign func([]byte) []byte) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			in, out := make([]byte, 32), make([]byte, 80)
			for {
				if _, err := io.ReadFull(c, in); err != nil {
					return
				}
				copy(out, sign(in))
				if _, err := c.Write(out); err != nil {
					return
				}
			}
		}()
	}
}
