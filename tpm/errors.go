package tpm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/google/go-tpm/tpm2"
)

// Errors a user can act on. They are wrapped with what was tried and how to
// fix it; test with errors.Is.
var (
	// ErrNoTPM: nothing answers at the configured TCTI.
	ErrNoTPM = errors.New("no TPM at the configured tcti")
	// ErrConnection: the connection to the TPM broke during a command.
	ErrConnection = errors.New("connection to the TPM lost")
	// ErrHierarchyAuth: the TPM refused a hierarchy's authorization value
	// ([tpm.hierarchy_authorization]).
	ErrHierarchyAuth = errors.New("hierarchy authorization refused by the TPM")
	// ErrHandleOccupied: a persistent handle Warden manages holds an
	// object of another kind, which Warden will not use or evict.
	ErrHandleOccupied = errors.New("persistent handle holds a foreign object")
	// ErrNoAuthKey: no auth key is persisted yet (T2 imports one).
	ErrNoAuthKey = errors.New("no auth key in the TPM")
	// ErrBadBlob: the activation blob does not unmarshal.
	ErrBadBlob = errors.New("malformed activation blob")
)

// CommandError is a TPM command the TPM answered with an error code.
type CommandError struct {
	// Command is the command's name, e.g. "TPM2_ActivateCredential".
	Command string
	// RC is the TPM's response code.
	RC tpm2.TPMRC
}

// Error says which command failed, the TPM_RC name, its meaning and the
// raw code.
func (e *CommandError) Error() string {
	return fmt.Sprintf("%s: %s (rc %#x)", e.Command, e.RC.Error(), uint32(e.RC))
}

// Unwrap returns the response code, so errors.Is(err, tpm2.TPMRCHandle)
// holds for any handle number.
func (e *CommandError) Unwrap() error { return e.RC }

// Name returns the TPM_RC name, e.g. "TPM_RC_INTEGRITY".
func (e *CommandError) Name() string {
	f := strings.Fields(e.RC.Error())
	if len(f) == 0 || !strings.HasPrefix(f[0], "TPM_RC_") {
		return fmt.Sprintf("TPM_RC_%#x", uint32(e.RC))
	}
	return strings.TrimSuffix(f[0], ":")
}

// Meaning returns the specification's description of the code, with the
// handle, parameter or session it concerns when the TPM said.
func (e *CommandError) Meaning() string {
	s := e.RC.Error()
	_, after, ok := strings.Cut(s, ": ")
	if !ok {
		return s
	}
	if i := strings.Index(s, " ("); i >= 0 && i < strings.Index(s, ": ") {
		return after + " (" + s[i+2:strings.Index(s, ")")] + ")"
	}
	return after
}

// Decode returns the TPM command error in err's chain, if any, for logs.
func Decode(err error) (*CommandError, bool) {
	var ce *CommandError
	ok := errors.As(err, &ce)
	return ce, ok
}

// cmdErr wraps an error from executing command: a TPM response code becomes
// a *CommandError, a broken connection ErrConnection.
func cmdErr(command string, err error) error {
	if err == nil {
		return nil
	}
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		return &CommandError{Command: command, RC: rc}
	}
	if isConnErr(err) {
		return fmt.Errorf("%s: %w: %w", command, ErrConnection, err)
	}
	return fmt.Errorf("%s: %w", command, err)
}

// isConnErr reports whether err means the transport, not the TPM, failed.
func isConnErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, os.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}

// isBadAuth reports whether a command failed on an authorization value.
func isBadAuth(err error) bool {
	return errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail)
}

// hierarchyErr turns a refused hierarchy password into ErrHierarchyAuth with
// the configuration key to fix.
func hierarchyErr(hierarchy string, err error) error {
	if isBadAuth(err) {
		return fmt.Errorf("%w: the %s hierarchy's authorization value is wrong: set [tpm.hierarchy_authorization] %s to the value the TPM was provisioned with: %w",
			ErrHierarchyAuth, hierarchy, hierarchy, err)
	}
	if errors.Is(err, tpm2.TPMRCLockout) {
		return fmt.Errorf("%w: the TPM is in dictionary-attack lockout after failed authorizations; wait for the lockout to expire or reset it (tpm2_dictionarylockout -c): %w",
			ErrHierarchyAuth, err)
	}
	return err
}
