package emulator

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Enrollments is the enrollments file (JSON, or TOML with the same keys):
//
//	{
//	  "symmetricKey": [{"registrationId": "dev-1", "primaryKey": "…", "deviceId": "…", "iotHub": "…",
//	                    "payload": {…}, "assignAfterPolls": 2}],
//	  "groups":       [{"name": "g", "primaryKey": "…"}],
//	  "x509":         [{"name": "ca", "caFile": "ca.pem"}],
//	  "tpm":          [{"registrationId": "…", "endorsementKey": "base64 TPM2B_PUBLIC"}],
//	  "hubDevices":   [{"deviceId": "manual-1", "primaryKey": "…"}]
//	}
type Enrollments struct {
	SymmetricKey []SymmetricEnrollment `json:"symmetricKey,omitempty"`
	Groups       []GroupEnrollment     `json:"groups,omitempty"`
	X509         []X509File            `json:"x509,omitempty"`
	TPM          []TPMEnrollment       `json:"tpm,omitempty"`
	HubDevices   []HubDevice           `json:"hubDevices,omitempty"`
}

// X509File is an X.509 enrollment in a file: the CA inline (caPem) or in
// a PEM file (caFile, relative to the enrollments file).
type X509File struct {
	X509Enrollment
	CAFile string `json:"caFile,omitempty"`
}

// ReadEnrollments reads an enrollments file: TOML when the name ends in
// .toml, JSON otherwise.
func ReadEnrollments(path string) (*Enrollments, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("emulator: enrollments: %w", err)
	}
	if strings.HasSuffix(path, ".toml") {
		var generic map[string]any
		if _, err := toml.Decode(string(b), &generic); err != nil {
			return nil, fmt.Errorf("emulator: enrollments %s: %w", path, err)
		}
		if b, err = json.Marshal(generic); err != nil {
			return nil, fmt.Errorf("emulator: enrollments %s: %w", path, err)
		}
	}
	var en Enrollments
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&en); err != nil {
		return nil, fmt.Errorf("emulator: enrollments %s: %w", path, err)
	}
	for i, x := range en.X509 {
		if x.CAFile == "" {
			continue
		}
		f := x.CAFile
		if !filepath.IsAbs(f) {
			f = filepath.Join(filepath.Dir(path), f)
		}
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("emulator: enrollments %s: x509 %s: %w", path, x.Name, err)
		}
		en.X509[i].CAPEM = string(pem)
	}
	return &en, nil
}

// Load adds every enrollment and hub device of en.
func (e *Emulator) Load(en *Enrollments) error {
	for _, s := range en.SymmetricKey {
		if _, err := e.AddSymmetricEnrollment(s); err != nil {
			return err
		}
	}
	for _, g := range en.Groups {
		if _, err := e.AddGroupEnrollment(g); err != nil {
			return err
		}
	}
	for _, x := range en.X509 {
		if err := e.AddX509Enrollment(x.X509Enrollment); err != nil {
			return err
		}
	}
	for _, t := range en.TPM {
		if err := e.AddTPMEnrollment(t); err != nil {
			return err
		}
	}
	for _, d := range en.HubDevices {
		if _, err := e.AddHubDevice(d); err != nil {
			return err
		}
	}
	return nil
}
