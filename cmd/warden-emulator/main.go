// Command warden-emulator runs Warden's DPS + IoT Hub emulator
// (package conformance/emulator) as a program: HTTPS on loopback with its
// own test CA, enrollments from a JSON or TOML file. See docs/emulator.md.
//
//	warden-emulator -listen 127.0.0.1:8443 -enrollments enrollments.toml -ca-out /tmp/emulator-ca.pem
//
// Once serving, it prints one JSON line on stdout: {"url", "idScope",
// "hub", "caFile", "enrollments"} (enrollments with any generated keys),
// then logs each request on stderr until SIGINT or SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/warden-iot/warden/conformance/emulator"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "warden-emulator:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to serve HTTPS on (port 0: a free port)")
	file := flag.String("enrollments", "", "enrollments file (JSON, or TOML when it ends in .toml)")
	caOut := flag.String("ca-out", "", "write the test CA's PEM to this file (clients trust it)")
	pollDelay := flag.Int("poll-delay", 2, "Retry-After seconds of DPS replies (0 for benches)")
	assignAfter := flag.Int("assign-after-polls", 0, "keep registrations assigning for this many polls")
	scope := flag.String("scope", "0ne00000001", "DPS ID scope")
	hub := flag.String("hub", "", "hub host name DPS assigns (default localhost:PORT)")
	quiet := flag.Bool("quiet", false, "do not log requests")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	opts := emulator.Options{Addr: *listen, IDScope: *scope, HubHostname: *hub, RetryAfter: *pollDelay, AssignAfterPolls: *assignAfter}
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	if !*quiet {
		opts.Logf = logger.Printf
	}
	em, err := emulator.New(opts)
	if err != nil {
		return err
	}
	defer em.Close()
	en := &emulator.Enrollments{}
	if *file != "" {
		if en, err = emulator.ReadEnrollments(*file); err != nil {
			return err
		}
	}
	loaded, err := load(em, en)
	if err != nil {
		return err
	}
	if *caOut != "" {
		if err := os.WriteFile(*caOut, em.CACertPEM(), 0o644); err != nil {
			return fmt.Errorf("write the CA: %w", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := em.Start(ctx); err != nil {
		return err
	}
	ready, _ := json.Marshal(map[string]any{"url": em.URL(), "idScope": em.IDScope(), "hub": em.HubHostname(),
		"caFile": *caOut, "enrollments": loaded})
	fmt.Println(string(ready))
	<-ctx.Done()
	logger.Print("warden-emulator: stopping")
	return nil
}

// load adds the enrollments one by one, keeping the generated keys to
// print them.
func load(em *emulator.Emulator, en *emulator.Enrollments) (*emulator.Enrollments, error) {
	out := &emulator.Enrollments{X509: en.X509, TPM: en.TPM}
	for _, s := range en.SymmetricKey {
		s, err := em.AddSymmetricEnrollment(s)
		if err != nil {
			return nil, err
		}
		out.SymmetricKey = append(out.SymmetricKey, s)
	}
	for _, g := range en.Groups {
		g, err := em.AddGroupEnrollment(g)
		if err != nil {
			return nil, err
		}
		out.Groups = append(out.Groups, g)
	}
	for _, d := range en.HubDevices {
		d, err := em.AddHubDevice(d)
		if err != nil {
			return nil, err
		}
		out.HubDevices = append(out.HubDevices, d)
	}
	return out, em.Load(&emulator.Enrollments{X509: en.X509, TPM: en.TPM})
}
