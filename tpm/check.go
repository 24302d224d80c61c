package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Levels of a Finding.
const (
	LevelOK      = "ok"
	LevelWarning = "warning"
	LevelError   = "error"
)

// Finding is one result of Check.
type Finding struct {
	// Level is LevelOK, LevelWarning or LevelError.
	Level string
	// Subject is what was checked, e.g. "connection" or "EK 0x81010001".
	Subject string
	// Message says what was found and, for a problem, what to do.
	Message string
}

// Check diagnoses the TPM configuration without changing the TPM: that
// something answers at the TCTI, that the endorsement and owner hierarchy
// authorization values are accepted, and that the EK, SRK and auth key
// handles are empty or hold what Warden expects there.
func (t *TPM) Check(ctx context.Context) []Finding {
	var out []Finding
	add := func(level, subject, format string, a ...any) {
		out = append(out, Finding{Level: level, Subject: subject, Message: fmt.Sprintf(format, a...)})
	}
	if t.tctiErr != nil {
		add(LevelError, "tcti", "%v", t.tctiErr)
		return out
	}
	err := t.do(ctx, "connect", func(tp transport.TPM) error {
		add(LevelOK, "connection", "%s answers (%s)", t.tcti.where(), vendor(tp))
		for _, h := range []struct {
			name   string
			handle tpm2.TPMHandle
			auth   string
		}{{"endorsement", tpm2.TPMRHEndorsement, t.opts.EndorsementAuth}, {"owner", tpm2.TPMRHOwner, t.opts.OwnerAuth}} {
			err := checkAuth(tp, h.handle, h.auth)
			switch {
			case errors.Is(err, ErrConnection):
				return err
			case err != nil:
				add(LevelError, h.name+" hierarchy", "%v", hierarchyErr(h.name, err))
			default:
				add(LevelOK, h.name+" hierarchy", "authorization accepted")
			}
		}
		for _, spec := range []keySpec{t.ekSpec(), t.srkSpec()} {
			subject := fmt.Sprintf("%s %#x", spec.role, uint32(spec.handle))
			_, pub, ok, err := readPublic(tp, spec.handle)
			switch {
			case errors.Is(err, ErrConnection):
				return err
			case err != nil:
				add(LevelError, subject, "%v", err)
			case !ok:
				add(LevelOK, subject, "absent: wardend creates the standard %s on first use (needs the %s hierarchy's authorization)", spec.role, spec.hierName)
			case spec.fits(pub) != "":
				add(LevelError, subject, "holds a %s, and %s: %v; evict it (tpm2_evictcontrol -C o -c %#x) if nothing else uses it",
					describe(pub), spec.fits(pub), ErrHandleOccupied, uint32(spec.handle))
			default:
				add(LevelOK, subject, "%s", describe(pub))
			}
		}
		subject := fmt.Sprintf("auth key %#x", uint32(t.authKey))
		obj, err := t.readAuthKey(tp)
		switch {
		case errors.Is(err, ErrConnection):
			return err
		case err != nil:
			add(LevelError, subject, "%v", err)
		case obj == nil:
			add(LevelWarning, subject, "absent: DPS TPM provisioning imports it; signing fails until then")
		default:
			add(LevelOK, subject, "HMAC key present")
		}
		return nil
	})
	if err != nil {
		add(LevelError, "connection", "%v", err)
	}
	return out
}

// checkAuth proves knowledge of a hierarchy's authorization value without
// changing anything: TPM2_PolicySecret in a fresh policy session. Failed
// hierarchy authorizations do not count toward dictionary-attack lockout.
func checkAuth(tp transport.TPM, h tpm2.TPMHandle, auth string) error {
	sess, closeSess, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return cmdErr("TPM2_StartAuthSession", err)
	}
	defer closeSess()
	_, err = tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: h, Auth: tpm2.PasswordAuth([]byte(auth))},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}.Execute(tp)
	return cmdErr("TPM2_PolicySecret", err)
}

// vendor describes the TPM from its fixed properties, best effort.
func vendor(tp transport.TPM) string {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 16}.Execute(tp)
	if err != nil {
		return "properties unreadable"
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return "properties unreadable"
	}
	var manuf, fw string
	var v [4]byte
	var vs strings.Builder
	for _, p := range props.TPMProperty {
		binary.BigEndian.PutUint32(v[:], p.Value)
		switch p.Property {
		case tpm2.TPMPTManufacturer:
			manuf = strings.TrimRight(string(v[:]), "\x00 ")
		case tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4:
			vs.WriteString(strings.TrimRight(string(v[:]), "\x00"))
		case tpm2.TPMPTFirmwareVersion1:
			fw = fmt.Sprintf("%#08x", p.Value)
		}
	}
	return fmt.Sprintf("manufacturer %q, vendor %q, firmware %s", manuf, strings.TrimSpace(vs.String()), fw)
}
