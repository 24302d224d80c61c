package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/broker/control"
	"github.com/warden-iot/warden/client"
	"github.com/warden-iot/warden/policy"
)

const defaultConfig = "/etc/warden/config.toml"

func configCmd(args []string) error {
	if len(args) == 0 || args[0] != "check" {
		return usageErr("config: want 'config check -c FILE'")
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	path := fs.String("c", defaultConfig, "configuration file")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr("%v", err)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	return cfg.EncodeRedacted(os.Stdout)
}

func policyCmd(args []string) error {
	if len(args) == 0 || args[0] != "eval" {
		return usageErr("policy: want 'policy eval --input FILE'")
	}
	fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
	input := fs.String("input", "", "input document (JSON), - for standard input")
	path := fs.String("c", "", "configuration file: its policy dir and principals (default: built-in policy, no principals)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr("%v", err)
	}
	if *input == "" {
		return usageErr("policy eval: --input is required")
	}
	raw, err := readArg(*input)
	if err != nil {
		return err
	}
	var in policy.Input
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("input %s: %w", *input, err)
	}
	if in.Time.IsZero() {
		in.Time = time.Now().UTC()
	}
	opts := policy.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if *path != "" {
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		opts.Dir = cfg.Warden.Policy.Dir
		for _, p := range cfg.Principals {
			pp := policy.Principal{UID: p.UID, Name: p.Name, IDType: p.IDType, Keys: p.Keys, Certs: p.Certs}
			if p.LocalID != nil { // as wardend gives it to the policy
				pp.LocalID = map[string]any{"type": p.LocalID.Type, "attributes": p.LocalID.Attributes}
			}
			opts.Principals = append(opts.Principals, pp)
		}
	}
	ctx := context.Background()
	eng, err := policy.New(ctx, opts)
	if err != nil {
		return err
	}
	d, err := eng.Decide(ctx, &in)
	if err != nil {
		return err
	}
	return printJSON(d)
}

// defaultTimeout bounds the wait for wardend's answer (-timeout) of the
// commands that talk to broker.sock; a stopped or wedged wardend accepts
// connections and never answers.
const defaultTimeout = 30 * time.Second

// socketFlags adds the flags that locate broker.sock and -timeout, how long
// to wait for its answer (default wait).
func socketFlags(fs *flag.FlagSet, wait time.Duration) (dial func() (*client.Client, error), timeout *time.Duration) {
	cfgPath := fs.String("c", defaultConfig, "configuration file (to find broker.sock)")
	socket := fs.String("socket", "", "broker.sock path (overrides -c)")
	timeout = fs.Duration("timeout", wait, "how long to wait for wardend")
	return func() (*client.Client, error) {
		path := *socket
		if path == "" {
			cfg, err := config.Load(*cfgPath)
			if err != nil {
				return nil, err
			}
			path = cfg.SocketPath("broker")
		}
		return client.New(path, control.APIVersion), nil
	}, timeout
}

func healthCmd(args []string) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	dial, timeout := socketFlags(fs, defaultTimeout)
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	c, err := dial()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var out json.RawMessage
	if err := c.Do(ctx, http.MethodGet, "/health", nil, &out); err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// readArg returns the bytes named by an argument: "-" is standard input,
// "@FILE" or a plain path (for --input) is a file.
func readArg(a string) ([]byte, error) {
	switch {
	case a == "-":
		return io.ReadAll(os.Stdin)
	case strings.HasPrefix(a, "@"):
		return os.ReadFile(a[1:])
	}
	return os.ReadFile(a)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// tokenArg resolves a --token value: "" (none), the token itself, "-" for
// standard input or "@FILE".
func tokenArg(a string) (string, error) {
	if a != "-" && !strings.HasPrefix(a, "@") {
		return a, nil
	}
	b, err := readArg(a)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
