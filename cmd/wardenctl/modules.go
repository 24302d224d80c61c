package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// moduleStatus is the part of GET /modules that `modules list` prints.
type moduleStatus struct {
	Name         string `json:"name"`
	Digest       string `json:"digest"`
	Signature    string `json:"signature"`
	SignatureKey string `json:"signatureKey"`
	Loaded       bool   `json:"loaded"`
	Error        string `json:"error"`
	Jobs         uint64 `json:"jobs"`
	Failures     uint64 `json:"failures"`
	LastJob      *struct {
		Time  time.Time `json:"time"`
		OK    bool      `json:"ok"`
		Kind  string    `json:"kind"`
		Error string    `json:"error"`
	} `json:"lastJob"`
}

type modulesResponse struct {
	Modules []moduleStatus `json:"modules"`
	Errors  []string       `json:"errors"`
}

// errModulesRefused: a reload refused a module (exit 1, already printed).
var errModulesRefused = errors.New("modules refused")

func modulesCmd(args []string) error {
	if len(args) == 0 {
		return usageErr("modules: want list, reload or run")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("modules "+sub, flag.ContinueOnError)
	dial, timeout := socketFlags(fs, 2*time.Minute)
	asJSON := fs.Bool("json", false, "print the broker's JSON answer")
	var job string
	switch sub {
	case "list", "reload":
	case "run":
		fs.StringVar(&job, "job", "", "the job's JSON: a file, - for standard input, or inline JSON")
	default:
		return usageErr("modules: unknown subcommand %q", sub)
	}
	var name string
	if sub == "run" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:] // modules run NAME [flags]
	}
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if sub == "run" && name == "" && fs.NArg() == 1 {
		name = fs.Arg(0) // modules run [flags] NAME
	} else if sub == "run" && (name == "" || fs.NArg() != 0) {
		return usageErr("modules run: want the module's name")
	}
	c, err := dial()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch sub {
	case "list", "reload":
		if fs.NArg() != 0 {
			return usageErr("modules %s takes no arguments", sub)
		}
		var raw json.RawMessage
		method, path := http.MethodGet, "/modules"
		if sub == "reload" {
			method, path = http.MethodPost, "/modules/reload"
		}
		if err := c.Do(ctx, method, path, nil, &raw); err != nil {
			return err
		}
		var resp modulesResponse
		if err := json.Unmarshal(raw, &resp); err != nil {
			return fmt.Errorf("broker answer: %w", err)
		}
		if *asJSON {
			fmt.Println(string(raw))
		} else {
			printModules(resp)
		}
		if len(resp.Errors) > 0 {
			return errModulesRefused
		}
		return nil
	}
	var body any
	if job != "" {
		b, err := jobArg(job)
		if err != nil {
			return err
		}
		if !json.Valid(b) {
			return fmt.Errorf("--job: not JSON")
		}
		body = json.RawMessage(b)
	}
	var out struct {
		OK bool `json:"ok"`
	}
	var raw json.RawMessage
	if err := c.Do(ctx, http.MethodPost, "/modules/"+url.PathEscape(name)+"/run", body, &raw); err != nil {
		return err
	}
	json.Unmarshal(raw, &out)
	if err := printJSON(raw); err != nil {
		return err
	}
	if !out.OK {
		return errModulesRefused
	}
	return nil
}

// jobArg reads --job: "-" is standard input, an existing file its
// contents, anything else inline JSON.
func jobArg(a string) ([]byte, error) {
	if a == "-" || strings.HasPrefix(a, "@") {
		return readArg(a)
	}
	if st, err := os.Stat(a); err == nil && !st.IsDir() {
		return os.ReadFile(a)
	}
	return []byte(a), nil
}

func printModules(r modulesResponse) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIGEST\tSIGNATURE\tJOBS\tFAILED\tLAST JOB\tSTATUS")
	for _, m := range r.Modules {
		digest := m.Digest
		if len(digest) > len("sha256:")+16 {
			digest = digest[:len("sha256:")+16] + "…"
		}
		sig := m.Signature
		if m.SignatureKey != "" {
			sig += " (" + m.SignatureKey + ")"
		}
		last := "-"
		if m.LastJob != nil {
			last = m.LastJob.Time.Local().Format(time.DateTime) + " ok"
			if !m.LastJob.OK {
				last = m.LastJob.Time.Local().Format(time.DateTime) + " " + m.LastJob.Kind
			}
		}
		status := "loaded"
		switch {
		case !m.Loaded && m.Error != "":
			status = "refused: " + m.Error
		case !m.Loaded:
			status = "not loaded"
		case m.Error != "":
			status = "loaded; last reload refused: " + m.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", m.Name, orDash(digest), orDash(sig), m.Jobs, m.Failures, last, status)
	}
	tw.Flush()
	for _, e := range r.Errors {
		fmt.Fprintln(os.Stderr, "wardenctl: refused:", e)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
