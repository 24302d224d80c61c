package capabilities

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateResource(t *testing.T) {
	valid := []string{
		"key:device-id", "key:aziot_identityd_master_id", "cert:aziot-edged-ca",
		"identity:device", "identity:module:$edgeAgent", "tpm:keys", "tpm:authkey",
		"key:*", "key:edge-*", "cert:*", "identity:*", "identity:module:*", "identity:mod*",
		"identity:device*", "tpm:*", "tpm:k*",
	}
	invalid := []string{
		"", "*", "key", "key*", "key:", "cert:", "identity:", "identity:module:", "identity:modules",
		"identity:other", "identity:x*", "tpm:", "tpm:other", "tpm:x*", "file:/etc/shadow",
		"KEY:a", "key:a b", "key:a*b", "key:a**", "key:\x00", "key:é", "key:" + strings.Repeat("a", maxResourceLen),
	}
	for _, r := range valid {
		if err := ValidateResource(r); err != nil {
			t.Errorf("ValidateResource(%q) = %v, want nil", r, err)
		}
	}
	for _, r := range invalid {
		if err := ValidateResource(r); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("ValidateResource(%q) = %v, want ErrInvalidRequest", r, err)
		}
	}
}

func TestCovers(t *testing.T) {
	c := &Claims{Capabilities: []Capability{
		{Resource: "key:device-id", Ops: []string{"sign"}},
		{Resource: "identity:module:*", Ops: []string{"get"}},
		{Resource: "cert:edge-*", Ops: []string{"get", "update"}},
	}}
	tests := []struct {
		res, op string
		want    bool
	}{
		{"key:device-id", "sign", true},
		{"key:device-id", "encrypt", false},
		{"key:device-id2", "sign", false},
		{"key:device", "sign", false},
		{"identity:module:m1", "get", true},
		{"identity:module:", "get", true},
		{"identity:device", "get", false},
		{"cert:edge-ca", "update", true},
		{"cert:edge", "get", false},
		{"tpm:keys", "get", false},
	}
	for _, tt := range tests {
		if got := c.Covers(tt.res, tt.op); got != tt.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.res, tt.op, got, tt.want)
		}
	}
}

func caps(pairs ...string) []Capability {
	var out []Capability
	for _, p := range pairs {
		res, ops, _ := strings.Cut(p, "=")
		out = append(out, Capability{Resource: res, Ops: strings.Split(ops, ",")})
	}
	return out
}

// withinCases are shared by TestWithin and TestAttenuateScope.
var withinCases = []struct {
	name          string
	parent, child []Capability
	want          bool
}{
	{"same", caps("key:a=sign"), caps("key:a=sign"), true},
	{"fewer ops", caps("key:a=sign,encrypt"), caps("key:a=sign"), true},
	{"extra op", caps("key:a=sign"), caps("key:a=sign,encrypt"), false},
	{"other resource", caps("key:a=sign"), caps("key:b=sign"), false},
	{"other kind", caps("key:a=get"), caps("cert:a=get"), false},
	{"exact under wildcard", caps("key:*=sign"), caps("key:device-id=sign"), true},
	{"narrower wildcard", caps("key:*=sign"), caps("key:dev*=sign"), true},
	{"equal wildcard", caps("key:dev*=sign"), caps("key:dev*=sign"), true},
	{"wider wildcard", caps("key:dev*=sign"), caps("key:*=sign"), false},
	{"wildcard under exact", caps("key:device-id=sign"), caps("key:*=sign"), false},
	{"wildcard of the exact name", caps("key:device-id=sign"), caps("key:device-id*=sign"), false},
	{"exact outside wildcard", caps("key:dev*=sign"), caps("key:other=sign"), false},
	{"module under identity", caps("identity:*=get"), caps("identity:module:*=get"), true},
	{"identity under module", caps("identity:module:*=get"), caps("identity:*=get"), false},
	{"device under module wildcard", caps("identity:module:*=get"), caps("identity:device=get"), false},
	{"ops split over parent caps", caps("key:a=sign", "key:*=encrypt"), caps("key:a=sign,encrypt"), true},
	{"one child cap too wide", caps("key:a=sign"), caps("key:a=sign", "key:b=sign"), false},
	{"op of another parent cap", caps("key:a=sign", "key:b=encrypt"), caps("key:a=encrypt"), false},
}

func TestWithin(t *testing.T) {
	for _, tt := range withinCases {
		if got := Within(tt.child, tt.parent); got != tt.want {
			t.Errorf("%s: Within(%v, %v) = %v, want %v", tt.name, tt.child, tt.parent, got, tt.want)
		}
	}
}
