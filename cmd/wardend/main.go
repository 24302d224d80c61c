// Command wardend is the Warden daemon: it serves the aziot sockets and
// broker.sock until SIGTERM or SIGINT, and reloads its configuration and
// policy on SIGHUP.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/warden-iot/warden/broker"
	"github.com/warden-iot/warden/broker/config"
)

func main() {
	cfgPath := flag.String("c", "/etc/warden/config.toml", "configuration file (drop-ins in config.d beside it)")
	level := flag.String("log-level", "info", "log level: debug, info, warn, error")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "wardend: -log-level: %v\n", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if err := run(*cfgPath, logger); err != nil {
		logger.Error("wardend stopped", "err", err)
		os.Exit(1)
	}
}

func run(cfgPath string, logger *slog.Logger) error {
	// SIGHUP is caught from the start: its default action would kill
	// wardend while it starts (provisioning can take minutes). One that
	// comes before the broker is up reloads it once it is.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b, err := broker.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	go func() {
		for {
			select {
			case <-ctx.Done(): // no reload while the broker shuts down
				return
			case <-hup:
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				logger.Error("SIGHUP: configuration refused, keeping the running one", "err", err)
				continue
			}
			if err := b.Reload(ctx, cfg); err != nil {
				logger.Error("SIGHUP: reload failed", "err", err)
			}
		}
	}()
	logger.Info("wardend started", "config", cfgPath)
	return b.Serve(ctx)
}
