package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// capture records the command it is sent and answers rsp.
type capture struct {
	cmd, rsp []byte
}

func (c *capture) Send(cmd []byte) ([]byte, error) {
	c.cmd = bytes.Clone(cmd)
	return c.rsp, nil
}

// hmacResponse is a successful TPM2_HMAC response carrying digest.
func hmacResponse(digest []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, tpmSTSessions)
	b = binary.BigEndian.AppendUint32(b, uint32(10+4+2+len(digest)+5))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(2+len(digest)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(digest)))
	b = append(b, digest...)
	return append(b, 0, 0, 1, 0, 0) // nonceTPM, continueSession (always set for a password), empty hmac
}

// TestHMACEncodingMatchesGoTPM: the hand-encoded command is byte for byte
// go-tpm's, and both read the same digest from a response.
func TestHMACEncodingMatchesGoTPM(t *testing.T) {
	digest := bytes.Repeat([]byte{0xab}, 32)
	for _, n := range []int{0, 1, 43, maxHMACBuffer} {
		data := bytes.Repeat([]byte{byte(n)}, n)
		c := &capture{rsp: hmacResponse(digest)}
		key := tpm2.AuthHandle{Handle: DefaultAuthKeyHandle, Name: tpm2.TPM2BName{Buffer: []byte{0, 0xb, 1}}, Auth: tpm2.PasswordAuth(nil)}
		rsp, err := tpm2.Hmac{Handle: key, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: tpm2.TPMAlgSHA256}.Execute(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := hmacCommand(DefaultAuthKeyHandle, data); !bytes.Equal(got, c.cmd) {
			t.Fatalf("%d bytes: command\n%x\ngo-tpm\n%x", n, got, c.cmd)
		}
		got, err := parseHMACResponse(c.rsp)
		if err != nil || !bytes.Equal(got, rsp.OutHMAC.Buffer) {
			t.Fatalf("%d bytes: parsed %x, %v; go-tpm %x", n, got, err, rsp.OutHMAC.Buffer)
		}
	}
}

func TestParseHMACResponse(t *testing.T) {
	good := hmacResponse(bytes.Repeat([]byte{1}, 32))
	withSize := func(b []byte) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint32(b[2:6], uint32(len(b)))
		return b
	}
	for _, tc := range []struct {
		name string
		rsp  []byte
		rc   tpm2.TPMRC
		bad  bool
	}{
		{name: "good", rsp: good},
		{name: "handle error", rsp: []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8b}, rc: tpm2.TPMRCHandle},
		{name: "empty", rsp: nil, bad: true},
		{name: "size lies", rsp: good[:20], bad: true},
		{name: "no parameters", rsp: withSize(good[:12]), bad: true},
		{name: "digest past the parameters", rsp: withSize(append(bytes.Clone(good[:14]), 0xff, 0xff)), bad: true},
		{name: "parameter size past the end", rsp: withSize(append(append(bytes.Clone(good[:10]), 0xff, 0xff, 0xff, 0xff), good[14:]...)), bad: true},
	} {
		got, err := parseHMACResponse(tc.rsp)
		switch {
		case tc.bad:
			if !errors.Is(err, errHMACResponse) {
				t.Errorf("%s: %x, %v", tc.name, got, err)
			}
		case tc.rc != 0:
			if ce, ok := Decode(err); !ok || !errors.Is(err, tc.rc) || ce.Command != "TPM2_HMAC" {
				t.Errorf("%s: %v", tc.name, err)
			}
		default:
			if err != nil || len(got) != 32 {
				t.Errorf("%s: %x, %v", tc.name, got, err)
			}
		}
	}
}

// FuzzParseHMACResponse: any response parses or fails cleanly.
func FuzzParseHMACResponse(f *testing.F) {
	f.Add(hmacResponse(bytes.Repeat([]byte{1}, 32)))
	f.Add([]byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := parseHMACResponse(b); err == nil && len(d)+16 > len(b) {
			t.Fatalf("digest of %d bytes from %d", len(d), len(b))
		}
	})
}
