package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/warden-iot/warden/internal/atomicfile"
)

// Device is where the device is provisioned: device_info's content.
type Device struct {
	// HubName is the IoT Hub host name.
	HubName string `toml:"hub_name" json:"hubName"`
	// GatewayHost is the host requests go to: a parent gateway or the hub.
	GatewayHost string `toml:"local_gateway_hostname" json:"gatewayHost"`
	// DeviceID is the device's ID on the hub.
	DeviceID string `toml:"device_id" json:"deviceId"`
}

// Module is an IoT Hub module identity (the registry's Module JSON, §8.4).
type Module struct {
	ModuleID       string          `json:"moduleId"`
	ManagedBy      string          `json:"managedBy,omitempty"`
	DeviceID       string          `json:"deviceId"`
	GenerationID   string          `json:"generationId,omitempty"`
	Authentication *Authentication `json:"authentication,omitempty"`
}

// Authentication is a module's credentials on the hub.
type Authentication struct {
	SymmetricKey *SymmetricKey `json:"symmetricKey,omitempty"`
	Type         string        `json:"type"`
}

// SymmetricKey is a module's SAS keys (base64).
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// PrevState is what the last successful reconciliation managed: the device
// and the modules this service created on it.
type PrevState struct {
	HubName  string   `toml:"hub_name"`
	DeviceID string   `toml:"device_id"`
	Modules  []string `toml:"modules"`
}

// State is the identity service's directory (state_dir/identity): files are
// written atomically with mode 0600 in 0700 directories.
type State struct {
	dir string
}

// ErrNoBackup: no device_info (never provisioned, or reprovision pending).
var ErrNoBackup = errors.New("no provisioning backup")

// OpenState creates dir (0700) if needed.
func OpenState(dir string) (*State, error) {
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o700); err != nil {
		return nil, fmt.Errorf("identity state: %w", err)
	}
	return &State{dir: dir}, nil
}

// Dir returns the state directory.
func (s *State) Dir() string { return s.dir }

// Device reads device_info; ErrNoBackup when absent or "unprovisioned".
func (s *State) Device() (*Device, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "device_info"))
	if errors.Is(err, fs.ErrNotExist) || strings.TrimSpace(string(b)) == "unprovisioned" {
		return nil, ErrNoBackup
	}
	if err != nil {
		return nil, fmt.Errorf("device_info: %w", err)
	}
	var d Device
	if err := toml.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("device_info: %w", err)
	}
	if d.HubName == "" || d.DeviceID == "" {
		return nil, fmt.Errorf("device_info: %w: hub_name and device_id are required", ErrNoBackup)
	}
	return &d, nil
}

// SetDevice writes device_info. When the device changes, the previous
// device's module backups are removed.
func (s *State) SetDevice(d *Device) error {
	if old, err := s.Device(); err == nil && (old.HubName != d.HubName || old.DeviceID != d.DeviceID) {
		if err := os.RemoveAll(s.moduleDir(old)); err != nil {
			return fmt.Errorf("module backups: %w", err)
		}
	}
	b, err := toml.Marshal(d)
	if err != nil {
		return fmt.Errorf("device_info: %w", err)
	}
	return atomicfile.Write(filepath.Join(s.dir, "device_info"), b, 0o600)
}

// ClearDevice removes device_info and the device's module backups (API
// reprovision).
func (s *State) ClearDevice() error {
	if d, err := s.Device(); err == nil {
		if err := os.RemoveAll(s.moduleDir(d)); err != nil {
			return fmt.Errorf("module backups: %w", err)
		}
	}
	if err := os.Remove(filepath.Join(s.dir, "device_info")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("device_info: %w", err)
	}
	return nil
}

// PrevState reads prev_state; nil when absent.
func (s *State) PrevState() (*PrevState, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "prev_state"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prev_state: %w", err)
	}
	var p PrevState
	if err := toml.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("prev_state: %w", err)
	}
	return &p, nil
}

// SetPrevState writes prev_state (modules sorted).
func (s *State) SetPrevState(p *PrevState) error {
	c := *p
	c.Modules = slices.Sorted(slices.Values(p.Modules))
	b, err := toml.Marshal(&c)
	if err != nil {
		return fmt.Errorf("prev_state: %w", err)
	}
	return atomicfile.Write(filepath.Join(s.dir, "prev_state"), b, 0o600)
}

func hexSum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func (s *State) moduleDir(d *Device) string {
	return filepath.Join(s.dir, "modules", hexSum(d.HubName)+"-"+hexSum(d.DeviceID))
}

// sanitize keeps a module ID's letters, digits, '-' and '_' (the file name
// also carries the ID's digest, so it stays unique).
func sanitize(id string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, id)
}

// maxReadableID bounds the sanitized part of a backup's file name. IoT Hub
// module IDs are at most 128 characters, so aziot's names are unchanged;
// a longer ID (a hub that allows one, a caller's typo) would otherwise
// make a name past the file system's 255 bytes, and the digest alone keeps
// names unique.
const maxReadableID = 128

// ModulePath is the backup file of module id of device d:
// modules/<sha256(hub)>-<sha256(device)>/<sanitized id>-<sha256(id)>.
func (s *State) ModulePath(d *Device, id string) string {
	readable := sanitize(id)
	if len(readable) > maxReadableID {
		readable = readable[:maxReadableID]
	}
	return filepath.Join(s.moduleDir(d), readable+"-"+hexSum(id))
}

// PutModule backs m up (without its authentication).
func (s *State) PutModule(d *Device, m *Module) error {
	c := *m
	c.Authentication = nil
	b, err := json.Marshal(&c)
	if err != nil {
		return fmt.Errorf("module backup: %w", err)
	}
	if err := os.MkdirAll(s.moduleDir(d), 0o700); err != nil {
		return fmt.Errorf("module backup: %w", err)
	}
	return atomicfile.Write(s.ModulePath(d, m.ModuleID), b, 0o600)
}

// GetModule reads module id's backup; fs.ErrNotExist when there is none.
func (s *State) GetModule(d *Device, id string) (*Module, error) {
	b, err := os.ReadFile(s.ModulePath(d, id))
	if err != nil {
		return nil, fmt.Errorf("module backup %s: %w", id, err)
	}
	var m Module
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("module backup %s: %w", id, err)
	}
	return &m, nil
}

// DeleteModule removes module id's backup (absent is fine).
func (s *State) DeleteModule(d *Device, id string) error {
	if err := os.Remove(s.ModulePath(d, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("module backup %s: %w", id, err)
	}
	return nil
}

// Modules lists the device's module backups.
func (s *State) Modules(d *Device) ([]*Module, error) {
	ents, err := os.ReadDir(s.moduleDir(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("module backups: %w", err)
	}
	var out []*Module
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.moduleDir(d), e.Name()))
		if err != nil {
			return nil, fmt.Errorf("module backups: %w", err)
		}
		var m Module
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("module backup %s: %w", e.Name(), err)
		}
		out = append(out, &m)
	}
	return out, nil
}
