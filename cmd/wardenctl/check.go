package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/tpm"
)

// checkSections are the parts of the machine `wardenctl check` can
// examine, in the order they run.
var checkSections = []string{"tpm"}

// errCheckFailed makes wardenctl exit 1 after a check found an error (the
// findings are already printed).
var errCheckFailed = errors.New("check found problems")

// checkCmd is `wardenctl check [-c FILE] [-timeout D] [SECTION…]`: each
// section prints one line per finding and the command fails when any
// finding is an error. It reads the configuration and talks to the
// devices directly; wardend need not run.
func checkCmd(args []string) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	path := fs.String("c", defaultConfig, "configuration file")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for a device to answer (a running wardend holds a single-client TPM until it has been idle for 2 s)")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	sections := fs.Args()
	if len(sections) == 0 {
		sections = checkSections
	}
	for _, s := range sections {
		if !slices.Contains(checkSections, s) {
			return usageErr("check: unknown section %q (sections: %v)", s, checkSections)
		}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	failed := false
	for _, s := range sections {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		var ok bool
		switch s {
		case "tpm":
			ok = checkTPM(ctx, os.Stdout, cfg.TPM, *timeout)
		}
		cancel()
		failed = failed || !ok
	}
	if failed {
		return errCheckFailed
	}
	return nil
}

// checkTPM prints the TPM findings for [tpm] and reports whether none is
// an error.
func checkTPM(ctx context.Context, w io.Writer, c config.TPM, timeout time.Duration) bool {
	t := tpm.New(tpm.Options{
		TCTI:            c.TCTI,
		AuthKeyHandle:   c.AuthKeyHandle(),
		EndorsementAuth: c.HierarchyAuthorization.Endorsement,
		OwnerAuth:       c.HierarchyAuthorization.Owner,
		IdleTimeout:     -1,
		Timeout:         timeout,
	})
	defer t.Close()
	fmt.Fprintf(w, "tpm: tcti %q, auth key handle %#x\n", c.TCTI, c.AuthKeyHandle())
	ok := true
	for _, f := range t.Check(ctx) {
		fmt.Fprintf(w, "  %-7s  %-21s  %s\n", f.Level, f.Subject, f.Message)
		ok = ok && f.Level != tpm.LevelError
	}
	return ok
}
