package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Module is a module identity as the hub's registry returns it (camelCase
// JSON, spec/protocols.md §1.5).
type Module struct {
	ModuleID                   string          `json:"moduleId"`
	DeviceID                   string          `json:"deviceId"`
	ManagedBy                  string          `json:"managedBy,omitempty"`
	GenerationID               string          `json:"generationId"`
	ETag                       string          `json:"etag"`
	ConnectionState            string          `json:"connectionState"`
	ConnectionStateUpdatedTime string          `json:"connectionStateUpdatedTime"`
	LastActivityTime           string          `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int             `json:"cloudToDeviceMessageCount"`
	Authentication             *Authentication `json:"authentication,omitempty"`
}

// Authentication is a module's credentials.
type Authentication struct {
	// Type is "sas", "none", "selfSigned", "certificateAuthority" or "x509".
	Type           string          `json:"type"`
	SymmetricKey   *SymmetricKey   `json:"symmetricKey,omitempty"`
	X509Thumbprint *X509Thumbprint `json:"x509Thumbprint,omitempty"`
}

// SymmetricKey is a pair of base64 keys.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// X509Thumbprint is a pair of certificate thumbprints.
type X509Thumbprint struct {
	PrimaryThumbprint   string `json:"primaryThumbprint"`
	SecondaryThumbprint string `json:"secondaryThumbprint"`
}

// Message is a device-to-cloud message received on messages/events.
type Message struct {
	IoTHub, DeviceID, ModuleID string
	Body                       []byte
	Time                       time.Time
}

// writeHubError writes IoT Hub's error body in both styles clients parse:
// "Message" as "ErrorCode:<code>;<text>" (Node SDK) and "message" (aziot).
func writeHubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("iothub-errorcode", code)
	writeJSON(w, status, map[string]any{
		"Message":          "ErrorCode:" + code + ";" + msg,
		"message":          msg,
		"ExceptionMessage": "Tracking ID:" + newID() + "-TimeStamp:" + time.Now().UTC().Format("01/02/2006 15:04:05"),
	})
}

// hubNames are the host names an audience may use for hub: the name, and
// the name without its port.
func hubMatches(audienceHost, hub string) bool {
	if strings.EqualFold(audienceHost, hub) {
		return true
	}
	if h, _, err := net.SplitHostPort(hub); err == nil && strings.EqualFold(audienceHost, h) {
		return true
	}
	return false
}

// findDevice returns the device deviceID on the hub the request names: the
// SAS audience's host for SAS, else the only hub that has the device.
func (e *Emulator) findDevice(tok *SASToken, deviceID string) *device {
	e.mu.Lock()
	defer e.mu.Unlock()
	var found *device
	for _, d := range e.devices {
		if d.DeviceID != deviceID {
			continue
		}
		if tok != nil {
			host, _, _ := strings.Cut(tok.Resource, "/")
			if hubMatches(host, d.IoTHub) {
				return d
			}
			continue
		}
		found = d
	}
	return found
}

// hubAuth authenticates a hub call on device deviceID: a device SAS
// (audience {hub}/devices/{deviceId}, device key, no skn), a module SAS
// when moduleID is set and allowed, or an X.509 client certificate of a
// device provisioned with an X.509 enrollment (CN = device ID).
func (e *Emulator) hubAuth(r *http.Request, deviceID, moduleID string) (*device, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return nil, errors.New("no Authorization header and no client certificate")
		}
		d := e.findDevice(nil, deviceID)
		if d == nil || d.x509 == nil {
			return nil, fmt.Errorf("device %s has no X.509 credentials", deviceID)
		}
		xe, err := e.x509Enrollment(r.TLS.PeerCertificates)
		if err != nil || xe != d.x509 || r.TLS.PeerCertificates[0].Subject.CommonName != deviceID {
			return nil, errors.New("the client certificate is not the device's")
		}
		return d, nil
	}
	tok, err := ParseSAS(auth)
	if err != nil {
		return nil, err
	}
	d := e.findDevice(tok, deviceID)
	if d == nil {
		return nil, fmt.Errorf("device %s is not on hub %q", deviceID, tok.Resource)
	}
	e.mu.Lock()
	pk, sk, hub := d.PrimaryKey, d.SecondaryKey, d.IoTHub
	var m *Module
	if moduleID != "" {
		m = d.modules[moduleID]
	}
	e.mu.Unlock()
	now := e.opts.Now()
	host, _, _ := strings.Cut(tok.Resource, "/")
	devAud := host + "/devices/" + deviceID
	if moduleID != "" && strings.EqualFold(tok.Resource, devAud+"/modules/"+moduleID) {
		if m == nil || m.Authentication == nil || m.Authentication.SymmetricKey == nil {
			return nil, fmt.Errorf("module %s/%s has no keys", deviceID, moduleID)
		}
		k := m.Authentication.SymmetricKey
		return d, VerifySAS(tok, tok.Resource, "", now, k.PrimaryKey, k.SecondaryKey)
	}
	if !hubMatches(host, hub) {
		return nil, ErrSASAudience
	}
	return d, VerifySAS(tok, devAud, "", now, pk, sk)
}

// VerifyModuleSAS checks a module SAS token (with or without the
// "SharedAccessSignature " prefix) as the hub would: audience
// {hub}/devices/{deviceID}/modules/{moduleID} (hub with or without port,
// case-insensitive), not expired, no skn, signed with the module's primary
// or secondary key.
func (e *Emulator) VerifyModuleSAS(hub, deviceID, moduleID, token string) error {
	tok, err := ParseSAS(token)
	if err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	e.mu.Lock()
	d := e.devices[hubKey(hub, deviceID)]
	var m *Module
	if d != nil {
		m = d.modules[moduleID]
	}
	e.mu.Unlock()
	if m == nil || m.Authentication == nil || m.Authentication.SymmetricKey == nil {
		return fmt.Errorf("emulator: module %s/%s on %s has no keys", deviceID, moduleID, hub)
	}
	host, _, _ := strings.Cut(tok.Resource, "/")
	if !hubMatches(host, hub) {
		return fmt.Errorf("emulator: %w: hub %q", ErrSASAudience, host)
	}
	k := m.Authentication.SymmetricKey
	if err := VerifySAS(tok, host+"/devices/"+deviceID+"/modules/"+moduleID, "", e.opts.Now(), k.PrimaryKey, k.SecondaryKey); err != nil {
		return fmt.Errorf("emulator: %w", err)
	}
	return nil
}

// Modules lists the modules of a device on hub, sorted by module ID.
func (e *Emulator) Modules(hub, deviceID string) []Module {
	e.mu.Lock()
	defer e.mu.Unlock()
	d := e.devices[hubKey(hub, deviceID)]
	if d == nil {
		return nil
	}
	return sortedModules(d)
}

// Messages returns the device-to-cloud messages received so far.
func (e *Emulator) Messages() []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Message(nil), e.messages...)
}

func sortedModules(d *device) []Module {
	out := make([]Module, 0, len(d.modules))
	for _, m := range d.modules {
		out = append(out, cloneModule(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModuleID < out[j].ModuleID })
	return out
}

func cloneModule(m *Module) Module {
	c := *m
	if m.Authentication != nil {
		a := *m.Authentication
		if a.SymmetricKey != nil {
			k := *a.SymmetricKey
			a.SymmetricKey = &k
		}
		if a.X509Thumbprint != nil {
			t := *a.X509Thumbprint
			a.X509Thumbprint = &t
		}
		c.Authentication = &a
	}
	return c
}

// hub serves /devices/{d}/... .
func (e *Emulator) hub(w http.ResponseWriter, r *http.Request, seg []string) {
	deviceID := seg[1]
	var op Op
	moduleID := ""
	switch {
	case len(seg) == 3 && seg[2] == "modules" && r.Method == http.MethodGet:
		op = OpModuleList
	case len(seg) == 4 && seg[2] == "modules":
		moduleID = seg[3]
		op = map[string]Op{http.MethodGet: OpModuleGet, http.MethodPut: OpModulePut, http.MethodDelete: OpModuleDelete}[r.Method]
	case len(seg) == 3 && seg[2] == "twin" && r.Method == http.MethodGet:
		op = OpTwin
	case len(seg) == 5 && seg[2] == "modules" && seg[4] == "twin" && r.Method == http.MethodGet:
		moduleID, op = seg[3], OpTwin
	case len(seg) == 4 && seg[2] == "messages" && seg[3] == "events" && r.Method == http.MethodPost:
		op = OpEvents
	case len(seg) == 6 && seg[2] == "modules" && seg[4] == "messages" && seg[5] == "events" && r.Method == http.MethodPost:
		moduleID, op = seg[3], OpEvents
	}
	id := deviceID
	if moduleID != "" {
		id += "/" + moduleID
	}
	if op == "" {
		writeHubError(w, http.StatusNotFound, "NotFound", "no such hub route")
		e.record(op, id, r, 404, "no route")
		return
	}
	if e.applyFault(w, r, op, deviceID) {
		return
	}
	fail := func(status int, code, msg string) {
		writeHubError(w, status, code, msg)
		e.record(op, id, r, status, code+": "+msg)
	}
	if r.URL.Query().Get("api-version") == "" {
		fail(400, "InvalidProtocolVersion", "api-version is required")
		return
	}
	// Module credentials reach the module's own twin and messages only.
	modAuth := ""
	if op == OpTwin || op == OpEvents {
		modAuth = moduleID
	}
	d, err := e.hubAuth(r, deviceID, modAuth)
	if err != nil {
		fail(401, "IotHubUnauthorizedAccess", err.Error())
		return
	}
	switch op {
	case OpTwin:
		e.mu.Lock()
		m := d.modules[moduleID]
		e.mu.Unlock()
		if moduleID != "" && m == nil {
			fail(404, "ModuleNotFound", "module "+moduleID+" not found")
			return
		}
		writeJSON(w, 200, map[string]any{"deviceId": deviceID, "moduleId": moduleID, "etag": "AAAAAAAAAAE=", "version": 1,
			"properties": map[string]any{"desired": map[string]any{"$version": 1}, "reported": map[string]any{"$version": 1}}})
		e.record(op, id, r, 200, "")
	case OpEvents:
		body, _ := io.ReadAll(io.LimitReader(r.Body, 256<<10))
		e.mu.Lock()
		e.messages = append(e.messages, Message{IoTHub: d.IoTHub, DeviceID: deviceID, ModuleID: moduleID, Body: body, Time: time.Now()})
		e.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		e.record(op, id, r, 204, "")
	default:
		status, v, code, msg := e.registry(r, d, op, moduleID)
		if code != "" {
			fail(status, code, msg)
			return
		}
		if v == nil {
			w.WriteHeader(status)
		} else {
			writeJSON(w, status, v)
		}
		e.record(op, id, r, status, msg)
	}
}

// registry runs a module registry call on d; it returns the status and
// reply, or an error code and message.
func (e *Emulator) registry(r *http.Request, d *device, op Op, moduleID string) (status int, v any, code, msg string) {
	ifMatch := strings.TrimSpace(r.Header.Get("If-Match"))
	e.mu.Lock()
	defer e.mu.Unlock()
	m := d.modules[moduleID]
	etagOK := func() bool {
		return ifMatch == "*" || ifMatch == `"*"` || (m != nil && strings.Trim(ifMatch, `"`) == strings.Trim(m.ETag, `"`))
	}
	switch op {
	case OpModuleList:
		return 200, sortedModules(d), "", ""
	case OpModuleGet:
		if m == nil {
			return 404, nil, "ModuleNotFound", "module " + moduleID + " not found on device " + d.DeviceID
		}
		return 200, cloneModule(m), "", ""
	case OpModuleDelete:
		if m == nil {
			return 404, nil, "ModuleNotFound", "module " + moduleID + " not found on device " + d.DeviceID
		}
		if ifMatch == "" || !etagOK() {
			return 412, nil, "PreconditionFailed", "If-Match is missing or does not match the module's etag"
		}
		delete(d.modules, moduleID)
		return 204, nil, "", "deleted"
	}
	var in Module
	raw, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		err = json.NewDecoder(bytes.NewReader(raw)).Decode(&in)
	}
	if err != nil {
		return 400, nil, "ArgumentInvalid", "invalid module body: " + err.Error()
	}
	if in.ModuleID != moduleID || (in.DeviceID != "" && in.DeviceID != d.DeviceID) {
		return 400, nil, "ArgumentInvalid", "moduleId and deviceId in the body must match the URL"
	}
	if in.Authentication != nil && in.Authentication.SymmetricKey != nil {
		if err := checkKeys(in.Authentication.SymmetricKey.PrimaryKey, in.Authentication.SymmetricKey.SecondaryKey); err != nil {
			return 400, nil, "ArgumentInvalid", "symmetricKey: " + err.Error()
		}
	}
	if ifMatch == "" {
		if m != nil {
			return 409, nil, "ModuleAlreadyExistsOnDevice", "module " + moduleID + " already exists on device " + d.DeviceID
		}
		m = &Module{ModuleID: moduleID, DeviceID: d.DeviceID, GenerationID: newGenerationID(),
			ConnectionState: "Disconnected", ConnectionStateUpdatedTime: "0001-01-01T00:00:00Z", LastActivityTime: "0001-01-01T00:00:00Z"}
		d.modules[moduleID] = m
		msg = "created"
	} else {
		if m == nil {
			return 404, nil, "ModuleNotFound", "module " + moduleID + " not found on device " + d.DeviceID
		}
		if !etagOK() {
			return 412, nil, "PreconditionFailed", "If-Match does not match the module's etag"
		}
		msg = "updated"
	}
	m.ManagedBy = in.ManagedBy
	m.Authentication = normalizeAuth(in.Authentication)
	m.ETag = `"` + newID()[:12] + `"`
	return 200, cloneModule(m), "", msg
}

// normalizeAuth fills in keys as the hub does: type defaults to "sas" and
// missing symmetric keys are generated.
func normalizeAuth(a *Authentication) *Authentication {
	out := &Authentication{Type: "sas"}
	if a != nil {
		c := cloneModule(&Module{Authentication: a})
		out = c.Authentication
		if out.Type == "" {
			out.Type = "sas"
		}
	}
	if out.Type == "sas" {
		if out.SymmetricKey == nil {
			out.SymmetricKey = &SymmetricKey{}
		}
		if out.SymmetricKey.PrimaryKey == "" {
			out.SymmetricKey.PrimaryKey = NewKey()
		}
		if out.SymmetricKey.SecondaryKey == "" {
			out.SymmetricKey.SecondaryKey = NewKey()
		}
	}
	if out.X509Thumbprint == nil {
		out.X509Thumbprint = &X509Thumbprint{}
	}
	return out
}

// newGenerationID is a generation ID like the hub's: 18 decimal digits.
func newGenerationID() string {
	id := strings.ReplaceAll(newID(), "-", "")
	var b strings.Builder
	for i := 0; b.Len() < 18; i++ {
		b.WriteByte('0' + id[i]%10)
	}
	return b.String()
}
