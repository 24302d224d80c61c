package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// capFlag collects repeated --cap RES=OP[,OP] flags.
type capFlag []map[string]any

func (c *capFlag) String() string { return fmt.Sprint(*c) }

func (c *capFlag) Set(v string) error {
	res, ops, ok := strings.Cut(v, "=")
	if !ok || res == "" || ops == "" {
		return fmt.Errorf("want RESOURCE=OP[,OP], e.g. key:device-id=sign")
	}
	*c = append(*c, map[string]any{"resource": res, "ops": strings.Split(ops, ",")})
	return nil
}

type tokenResponse struct {
	Token     string `json:"token"`
	ID        string `json:"id"`
	ExpiresAt string `json:"expiresAt"`
}

func tokenCmd(args []string) error {
	if len(args) == 0 {
		return usageErr("token: want mint, attenuate, revoke or introspect")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("token "+sub, flag.ContinueOnError)
	dial, timeout := socketFlags(fs, defaultTimeout)
	var caps capFlag
	var ttl time.Duration
	var raw bool
	var tok, id string
	uid := int64(-1)
	switch sub {
	case "mint", "attenuate":
		fs.Var(&caps, "cap", "capability RESOURCE=OP[,OP] (repeatable)")
		fs.DurationVar(&ttl, "ttl", 0, "lifetime (default: the broker's default_ttl)")
		fs.BoolVar(&raw, "raw", false, "print only the token")
		if sub == "attenuate" { // a minted token is the caller's own
			fs.Int64Var(&uid, "uid", -1, "hand the attenuated token to this uid")
		}
	case "revoke":
		fs.StringVar(&id, "id", "", "token id (jti)")
	case "introspect":
	default:
		return usageErr("token: unknown subcommand %q", sub)
	}
	if sub != "mint" {
		fs.StringVar(&tok, "token", "", "the token, - for standard input, @FILE for a file")
	}
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if tok == "-" || strings.HasPrefix(tok, "@") {
		b, err := readArg(tok)
		if err != nil {
			return err
		}
		tok = strings.TrimSpace(string(b))
	}
	// The broker takes whole seconds, and 0 is its default_ttl: a
	// shorter lifetime must not become the default one.
	if ttl < 0 || ttl > 0 && ttl < time.Second {
		return usageErr("token %s: --ttl %s: want at least 1s (or none for the broker's default)", sub, ttl)
	}
	c, err := dial()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch sub {
	case "mint", "attenuate":
		if len(caps) == 0 {
			return usageErr("token %s: at least one --cap is required", sub)
		}
		body := map[string]any{"capabilities": caps, "ttlSeconds": int64(ttl / time.Second)}
		path := "/tokens"
		if sub == "attenuate" {
			if tok == "" {
				return usageErr("token attenuate: --token is required")
			}
			path, body["token"] = "/tokens/attenuate", tok
			if uid >= 0 {
				body["uid"] = uid
			}
		}
		var out tokenResponse
		if err := c.Do(ctx, http.MethodPost, path, body, &out); err != nil {
			return err
		}
		if raw {
			fmt.Println(out.Token)
			return nil
		}
		return printJSON(out)
	case "revoke":
		if (id == "") == (tok == "") {
			return usageErr("token revoke: give exactly one of --id and --token")
		}
		return c.Do(ctx, http.MethodPost, "/tokens/revoke", map[string]string{"id": id, "token": tok}, nil)
	default:
		if tok == "" {
			return usageErr("token introspect: --token is required")
		}
		var out json.RawMessage
		if err := c.Do(ctx, http.MethodPost, "/tokens/introspect", map[string]string{"token": tok}, &out); err != nil {
			return err
		}
		var v any
		json.Unmarshal(out, &v)
		return printJSON(v)
	}
}
