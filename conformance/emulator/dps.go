package emulator

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// AllocationRequest is what Options.Allocate decides on.
type AllocationRequest struct {
	RegistrationID string
	// Attestation is "symmetricKey", "group", "x509" or "tpm".
	Attestation string
	// Payload is the device's payload (nil when it sent none).
	Payload json.RawMessage
	// Default is the enrollment's assignment with defaults filled in.
	Default Allocation
}

// Allocation is the outcome of a registration.
type Allocation struct {
	IoTHub   string
	DeviceID string
	// Payload is returned as registrationState.payload (omitted when nil).
	Payload json.RawMessage
}

type registerBody struct {
	RegistrationID string          `json:"registrationId"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	TPM            *struct {
		EndorsementKey string `json:"endorsementKey"`
		StorageRootKey string `json:"storageRootKey"`
	} `json:"tpm,omitempty"`
}

type tpmState struct {
	AuthenticationKey string `json:"authenticationKey"`
}

type registrationState struct {
	RegistrationID string          `json:"registrationId"`
	CreatedUTC     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub    string          `json:"assignedHub,omitempty"`
	DeviceID       string          `json:"deviceId,omitempty"`
	Status         string          `json:"status"`
	Substatus      string          `json:"substatus,omitempty"`
	ErrorCode      int             `json:"errorCode,omitempty"`
	ErrorMessage   string          `json:"errorMessage,omitempty"`
	LastUpdatedUTC string          `json:"lastUpdatedDateTimeUtc"`
	ETag           string          `json:"etag,omitempty"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	TPM            *tpmState       `json:"tpm,omitempty"`
}

type operation struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *registrationState `json:"registrationState,omitempty"`
}

// registration is a registration ID's current operation.
type registration struct {
	Registration
	attestation string
	keys        []string        // SAS keys that authenticate the device
	x509        *x509Enrollment // or its enrollment CA
	assign      Assignment
	needed      int
	assigning   bool // allocation under way
	state       *registrationState
	ek, srk     []byte
}

// tpmChallenge is the outstanding TPM activation of a registration ID.
type tpmChallenge struct {
	ek, srk []byte
	key     string // base64 HMAC key
	blob    string // base64 activation blob
}

// writeDPSError writes DPS's error body (ProvisioningServiceErrorDetails).
func writeDPSError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("x-ms-error-code", strconv.Itoa(code))
	writeJSON(w, status, map[string]any{
		"errorCode": code, "trackingId": newID(), "message": msg,
		"timestampUtc": time.Now().UTC().Format(time.RFC3339Nano),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// dpsAuthError is a 401 with its reason for the event log.
type dpsAuthError struct{ reason string }

func (e *dpsAuthError) Error() string { return e.reason }

func (e *Emulator) register(w http.ResponseWriter, r *http.Request, scope, regID string) {
	if e.applyFault(w, r, OpRegister, regID) {
		return
	}
	fail := func(status, code int, msg, note string) {
		writeDPSError(w, status, code, msg)
		e.record(OpRegister, regID, r, status, note)
	}
	if r.URL.Query().Get("api-version") == "" {
		fail(400, 400001, "api-version is required", "no api-version")
		return
	}
	var body registerBody
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil && len(bytes.TrimSpace(raw)) > 0 {
		err = json.Unmarshal(raw, &body)
	}
	if err != nil {
		fail(400, 400004, "invalid request body", "body: "+err.Error())
		return
	}
	if body.RegistrationID != "" && body.RegistrationID != regID {
		fail(400, 400004, "registrationId in the body does not match the URL", "registrationId mismatch")
		return
	}
	if scope != e.opts.IDScope {
		fail(401, 401002, "Unauthorized", "unknown ID scope "+scope)
		return
	}
	reg, err := e.authenticate(r, scope, regID, &body)
	var ch *tpmChallenge
	if errors.As(err, &ch) {
		blob := ch.blob
		writeJSON(w, http.StatusUnauthorized, map[string]string{"authenticationKey": blob, "keyName": "registration"})
		e.record(OpRegister, regID, r, 401, "TPM challenge")
		return
	}
	if err != nil {
		fail(401, 401002, "Unauthorized", err.Error())
		return
	}
	reg.Payload = body.Payload
	reg.needed = e.opts.AssignAfterPolls
	if reg.assign.AssignAfterPolls > 0 {
		reg.needed = reg.assign.AssignAfterPolls
	}
	e.mu.Lock()
	reg.OperationID = "4." + newID()[:16] + "." + newID()
	reg.Status = "assigning"
	e.registrations[regID] = reg
	e.mu.Unlock()
	w.Header().Set("Retry-After", strconv.Itoa(e.opts.RetryAfter))
	writeJSON(w, http.StatusAccepted, operation{OperationID: reg.OperationID, Status: "assigning"})
	e.record(OpRegister, regID, r, 202, reg.attestation)
}

// authenticate finds the enrollment that admits the request: an X.509
// client certificate, or a SAS signed with an individual, group-derived or
// TPM key. A TPM device's first call (no Authorization) gets a challenge,
// returned as a *tpmChallenge error.
func (e *Emulator) authenticate(r *http.Request, scope, regID string, body *registerBody) (*registration, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		xe, err := e.x509Enrollment(r.TLS.PeerCertificates)
		if err != nil {
			return nil, err
		}
		if cn := r.TLS.PeerCertificates[0].Subject.CommonName; cn != regID {
			return nil, &dpsAuthError{fmt.Sprintf("certificate CN %q is not the registration ID", cn)}
		}
		return &registration{Registration: Registration{RegistrationID: regID}, attestation: "x509", x509: xe, assign: xe.Assignment}, nil
	}
	e.mu.Lock()
	tpm := e.tpms[regID]
	ind := e.individual[regID]
	groups := append([]*GroupEnrollment(nil), e.groups...)
	chal := e.challenges[regID]
	e.mu.Unlock()
	if auth == "" {
		if tpm != nil && body != nil && body.TPM != nil {
			return nil, e.challenge(tpm, regID, body)
		}
		return nil, &dpsAuthError{"no Authorization header"}
	}
	tok, err := ParseSAS(auth)
	if err != nil {
		return nil, &dpsAuthError{err.Error()}
	}
	audience, now := scope+"/registrations/"+regID, e.opts.Now()
	switch {
	case tpm != nil:
		if chal == nil {
			return nil, &dpsAuthError{"TPM: no activation issued"}
		}
		if err := VerifySAS(tok, audience, "registration", now, chal.key); err != nil {
			return nil, &dpsAuthError{err.Error()}
		}
		return &registration{Registration: Registration{RegistrationID: regID}, attestation: "tpm", keys: []string{chal.key}, assign: tpm.Assignment, ek: chal.ek, srk: chal.srk}, nil
	case ind != nil:
		if err := VerifySAS(tok, audience, "registration", now, ind.PrimaryKey, ind.SecondaryKey); err != nil {
			return nil, &dpsAuthError{err.Error()}
		}
		return &registration{Registration: Registration{RegistrationID: regID}, attestation: "symmetricKey", keys: []string{ind.PrimaryKey, ind.SecondaryKey}, assign: ind.Assignment}, nil
	}
	lastErr := error(&dpsAuthError{"no enrollment for " + regID})
	for _, g := range groups {
		var keys []string
		for _, gk := range []string{g.PrimaryKey, g.SecondaryKey} {
			if gk == "" {
				keys = append(keys, "")
				continue
			}
			k, err := DeriveDeviceKey(gk, regID)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
		err := VerifySAS(tok, audience, "registration", now, keys...)
		if err == nil {
			return &registration{Registration: Registration{RegistrationID: regID}, attestation: "group", keys: keys, assign: g.Assignment}, nil
		}
		lastErr = &dpsAuthError{"group " + g.Name + ": " + err.Error()}
	}
	return nil, lastErr
}

// challenge makes a TPM activation for the EK and SRK of body and keeps
// its key for the SAS that follows.
func (e *Emulator) challenge(tpm *TPMEnrollment, regID string, body *registerBody) error {
	ek, err1 := base64.StdEncoding.DecodeString(body.TPM.EndorsementKey)
	srk, err2 := base64.StdEncoding.DecodeString(body.TPM.StorageRootKey)
	if err := errors.Join(err1, err2); err != nil {
		return &dpsAuthError{"TPM: EK or SRK is not base64: " + err.Error()}
	}
	if tpm.EndorsementKey != "" && tpm.EndorsementKey != body.TPM.EndorsementKey {
		return &dpsAuthError{"TPM: the EK is not the enrolled one"}
	}
	act, err := NewTPMActivation(rand.Reader, ek, srk)
	if err != nil {
		return &dpsAuthError{"TPM: " + err.Error()}
	}
	ch := &tpmChallenge{ek: ek, srk: srk, key: base64.StdEncoding.EncodeToString(act.Key), blob: base64.StdEncoding.EncodeToString(act.Blob)}
	e.mu.Lock()
	e.challenges[regID] = ch
	e.mu.Unlock()
	return ch
}

func (c *tpmChallenge) Error() string { return "TPM challenge" }

// x509Enrollment finds the enrollment whose CA the chain leads to.
func (e *Emulator) x509Enrollment(chain []*x509.Certificate) (*x509Enrollment, error) {
	e.mu.Lock()
	ens := append([]*x509Enrollment(nil), e.x509s...)
	e.mu.Unlock()
	for _, xe := range ens {
		inter := xe.inter.Clone()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, err := chain[0].Verify(x509.VerifyOptions{Roots: xe.roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: e.opts.Now()})
		if err == nil {
			return xe, nil
		}
	}
	return nil, &dpsAuthError{"the client certificate chains to no X.509 enrollment"}
}

func (e *Emulator) poll(w http.ResponseWriter, r *http.Request, scope, regID, opID string) {
	if e.applyFault(w, r, OpPoll, regID) {
		return
	}
	e.mu.Lock()
	reg := e.registrations[regID]
	e.mu.Unlock()
	if scope != e.opts.IDScope || reg == nil || reg.OperationID != opID {
		writeDPSError(w, 404, 404006, "operation not found")
		e.record(OpPoll, regID, r, 404, "unknown operation "+opID)
		return
	}
	if err := e.checkPollAuth(r, scope, reg); err != nil {
		writeDPSError(w, 401, 401002, "Unauthorized")
		e.record(OpPoll, regID, r, 401, err.Error())
		return
	}
	e.mu.Lock()
	reg.Polls++
	due := reg.state == nil && !reg.assigning && reg.Polls > reg.needed
	reg.assigning = reg.assigning || due
	e.mu.Unlock()
	if due {
		// Allocation (a user hook) and TPM key making run unlocked.
		out := e.allocate(reg)
		e.mu.Lock()
		e.applyLocked(reg, out)
		e.mu.Unlock()
	}
	e.mu.Lock()
	op := operation{OperationID: reg.OperationID, Status: reg.Status, RegistrationState: reg.state}
	if reg.state == nil {
		op.RegistrationState = &registrationState{RegistrationID: regID, Status: "assigning",
			LastUpdatedUTC: e.opts.Now().UTC().Format(time.RFC3339Nano)}
	}
	e.mu.Unlock()
	if op.Status == "assigning" {
		w.Header().Set("Retry-After", strconv.Itoa(e.opts.RetryAfter))
		writeJSON(w, http.StatusAccepted, op)
	} else {
		writeJSON(w, http.StatusOK, op)
	}
	e.record(OpPoll, regID, r, map[bool]int{true: 202, false: 200}[op.Status == "assigning"], op.Status)
}

func (e *Emulator) checkPollAuth(r *http.Request, scope string, reg *registration) error {
	if reg.x509 != nil {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return errors.New("no client certificate")
		}
		xe, err := e.x509Enrollment(r.TLS.PeerCertificates)
		if err != nil || xe != reg.x509 || r.TLS.PeerCertificates[0].Subject.CommonName != reg.RegistrationID {
			return errors.New("the client certificate is not the registering one")
		}
		return nil
	}
	tok, err := ParseSAS(r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	return VerifySAS(tok, scope+"/registrations/"+reg.RegistrationID, "registration", e.opts.Now(), reg.keys...)
}

// allocation is the outcome of allocate.
type allocation struct {
	Allocation
	tpm     *tpmState
	hubKeys []string
	err     error
}

// allocate decides a registration: custom allocation, then for TPM a fresh
// hub key. It runs without the lock.
func (e *Emulator) allocate(reg *registration) allocation {
	def := Allocation{IoTHub: reg.assign.IoTHub, DeviceID: reg.assign.DeviceID, Payload: reg.assign.Payload}
	if def.IoTHub == "" {
		def.IoTHub = e.opts.HubHostname
	}
	if def.DeviceID == "" {
		def.DeviceID = reg.RegistrationID
	}
	if def.Payload == nil {
		def.Payload = reg.Payload
	}
	out := allocation{Allocation: def, hubKeys: reg.keys}
	if e.opts.Allocate != nil {
		out.Allocation, out.err = e.opts.Allocate(AllocationRequest{RegistrationID: reg.RegistrationID, Attestation: reg.attestation, Payload: reg.Payload, Default: def})
	}
	if out.err == nil && (out.IoTHub == "" || out.DeviceID == "") {
		out.err = errors.New("custom allocation returned no hub or device ID")
	}
	if out.err == nil && reg.attestation == "tpm" && !e.opts.TPMSameHubKey {
		act, err := NewTPMActivation(rand.Reader, reg.ek, reg.srk)
		if err != nil {
			out.err = fmt.Errorf("TPM hub key: %w", err)
		} else {
			out.tpm = &tpmState{AuthenticationKey: base64.StdEncoding.EncodeToString(act.Blob)}
			out.hubKeys = []string{base64.StdEncoding.EncodeToString(act.Key)}
		}
	}
	return out
}

// applyLocked finishes a registration: the hub device and the assigned (or
// failed) registration state.
func (e *Emulator) applyLocked(reg *registration, out allocation) {
	now := e.opts.Now().UTC().Format(time.RFC3339Nano)
	if out.err != nil {
		reg.Status = "failed"
		reg.state = &registrationState{RegistrationID: reg.RegistrationID, Status: "failed", ErrorCode: 400209,
			ErrorMessage: out.err.Error(), LastUpdatedUTC: now}
		return
	}
	alloc, hubKeys, tpmKey := out.Allocation, out.hubKeys, out.tpm
	dev := e.deviceLocked(alloc.IoTHub, alloc.DeviceID)
	substatus := "initialAssignment"
	if dev.Registrations > 0 {
		substatus = "reprovisionedToInitialAssignment"
	}
	dev.Registrations++
	dev.RegistrationID, dev.Attestation, dev.x509 = reg.RegistrationID, reg.attestation, reg.x509
	dev.PrimaryKey, dev.SecondaryKey = "", ""
	if len(hubKeys) > 0 {
		dev.PrimaryKey = hubKeys[0]
	}
	if len(hubKeys) > 1 {
		dev.SecondaryKey = hubKeys[1]
	}
	reg.Status, reg.IoTHub, reg.DeviceID = "assigned", alloc.IoTHub, alloc.DeviceID
	reg.state = &registrationState{RegistrationID: reg.RegistrationID, CreatedUTC: now, AssignedHub: alloc.IoTHub,
		DeviceID: alloc.DeviceID, Status: "assigned", Substatus: substatus, LastUpdatedUTC: now,
		ETag: `"` + newID()[:8] + `"`, Payload: alloc.Payload, TPM: tpmKey}
}
