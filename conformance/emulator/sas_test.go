package emulator

import (
	"errors"
	"testing"
	"time"
)

// TestSignVectors: the published vectors of spec/protocols.md §1.6.
func TestSignVectors(t *testing.T) {
	for _, tc := range []struct{ name, key, msg, want string }{
		{"Node authorization", "cGFzc3dvcmQ=", "string-to-sign", "o1n1hiIVgzVA2+krq9ty1Z4xsIJKJZP3dYT8MOi65Y4="},
		{"Node SAS", "cGFzc3dvcmQ=", "uri\n12345", "kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk="},
		{"Python", "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", "sign this message", "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M="},
		{"Java", "q+DKVojmMz014RjAwpNGZbAkdOocSVWMKPOccLfUmLE=", "sdktesthub.private.azure-devices-int.net/devices/test8\n1462333672", "ZrTYgp6uRmbDl4lzzewxFD9FoaNKIK7G2bdivDbtc9A="},
		{"Go amenzhinsky", "c2VjcmV0", "test.azure-devices.net%2Fdevices%2Ftest\n1483236061", "IMr3Y5GKbdixQSt96QgIEymAURnu3qzLvEHhGHPLxrU="},
	} {
		if got, err := Sign(tc.key, tc.msg); err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := Sign("not base64!", "x"); err == nil {
		t.Error("a non-base64 key signed")
	}
}

// TestParseAndVerifySAS: the Node SDK's published token parses in its
// field order and verifies against its audience until it expires.
func TestParseAndVerifySAS(t *testing.T) {
	tok, err := ParseSAS("SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&skn=encode%28%27Me%27%29&se=12345")
	if err != nil {
		t.Fatal(err)
	}
	if tok.SR != "uri" || tok.SE != "12345" || tok.SKN != "encode('Me')" || tok.Expiry.Unix() != 12345 {
		t.Fatalf("%+v", tok)
	}
	before := time.Unix(12000, 0)
	if err := VerifySAS(tok, "URI", "encode('Me')", before, "cGFzc3dvcmQ="); err != nil {
		t.Errorf("verify: %v", err)
	}
	for _, tc := range []struct {
		name     string
		audience string
		skn      string
		now      time.Time
		key      string
		want     error
	}{
		{"expired", "uri", "encode('Me')", time.Unix(12345, 0), "cGFzc3dvcmQ=", ErrSASExpired},
		{"audience", "other", "encode('Me')", before, "cGFzc3dvcmQ=", ErrSASAudience},
		{"skn", "uri", "registration", before, "cGFzc3dvcmQ=", ErrSASKeyName},
		{"skn on a device key", "uri", "", before, "cGFzc3dvcmQ=", ErrSASKeyName},
		{"key", "uri", "encode('Me')", before, "c2VjcmV0", ErrSASSig},
	} {
		if err := VerifySAS(tok, tc.audience, tc.skn, tc.now, tc.key); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, bad := range []string{"", "SharedAccessSignature", "SharedAccessSignature sr=a&sig=b", "SharedAccessSignature sr=a&sig=b&se=x",
		"SharedAccessSignature sr=a&sr=a&sig=b&se=1", "SharedAccessSignature sr=a&sig&se=1"} {
		if _, err := ParseSAS(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// NewSASToken makes aziot's form, which verifies.
	s, err := NewSASToken("c2VjcmV0", "0ne00000001/registrations/My-Device", time.Now().Add(time.Minute), "registration")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseSAS(s)
	if err != nil || p.SR != "0ne00000001/registrations/my-device" || p.Sig == "" {
		t.Fatalf("%q: %+v %v", s, p, err)
	}
	if err := VerifySAS(p, "0ne00000001/registrations/My-Device", "registration", time.Now(), "c2VjcmV0"); err != nil {
		t.Error(err)
	}
}
