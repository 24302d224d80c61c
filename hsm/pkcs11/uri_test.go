package pkcs11

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in      string
		want    URI
		str     string // String(); "" = no check
		wantErr string
	}{
		// aziot golden forms
		{in: "pkcs11:slot-id=0;object=local%2Dca?pin-value=1234",
			want: URI{HasSlotID: true, SlotID: 0, Object: "local-ca", PIN: "1234"},
			str:  "pkcs11:slot-id=0;object=local%2Dca?pin-value=1234"},
		{in: "pkcs11:slot-id=0;object=local-ca?pin-value=1234",
			want: URI{HasSlotID: true, Object: "local-ca", PIN: "1234"},
			str:  "pkcs11:slot-id=0;object=local%2Dca?pin-value=1234"},
		{in: "pkcs11:token=Key%20pair?pin-value=1234",
			want: URI{Token: "Key pair", PIN: "1234"},
			str:  "pkcs11:token=Key%20pair?pin-value=1234"},
		{in: "pkcs11:slot-id=0;object=est%2Dbootstrap%2Did?pin-value=1234",
			want: URI{HasSlotID: true, Object: "est-bootstrap-id", PIN: "1234"},
			str:  "pkcs11:slot-id=0;object=est%2Dbootstrap%2Did?pin-value=1234"},
		{in: "pkcs11:slot-id=0;object=est-id?pin-value=1234",
			want: URI{HasSlotID: true, Object: "est-id", PIN: "1234"},
			str:  "pkcs11:slot-id=0;object=est%2Did?pin-value=1234"},
		{in: "pkcs11:slot-id=0?pin-value=1234", want: URI{HasSlotID: true, PIN: "1234"},
			str: "pkcs11:slot-id=0?pin-value=1234"},
		// order, slot-id over token, no PIN
		{in: "pkcs11:object=k;token=T", want: URI{Token: "T", Object: "k"}, str: "pkcs11:token=T;object=k"},
		{in: "pkcs11:token=T;slot-id=42;object=k", want: URI{HasSlotID: true, SlotID: 42, Object: "k"},
			str: "pkcs11:slot-id=42;object=k"},
		{in: "pkcs11:slot-id=007", want: URI{HasSlotID: true, SlotID: 7}, str: "pkcs11:slot-id=7"},
		{in: "pkcs11:token=", want: URI{}, str: "pkcs11:token="},
		// unknown attributes ignored, even with bad escapes
		{in: "pkcs11:manufacturer=SoftHSM%20project;id=%01%02;type=private;model=x;serial=%zz;token=t;object=o?pin-source=file:/x&module-path=/lib&pin-value=9",
			want: URI{Token: "t", Object: "o", PIN: "9"}},
		// escapes: lower-case hex, reserved characters, UTF-8, encoded names
		{in: "pkcs11:token=a%2fb%3Bc%3f;object=%C3%A9t%C3%A9", want: URI{Token: "a/b;c?", Object: "été"},
			str: "pkcs11:token=a%2Fb%3Bc%3F;object=%C3%A9t%C3%A9"},
		{in: "pkcs11:%74oken=t;obj%65ct=o", want: URI{Token: "t", Object: "o"}},
		{in: "PKCS11:token=t", want: URI{Token: "t"}},
		// repeated attributes: the last one wins (as aziot)
		{in: "pkcs11:token=a;token=b;object=x;object=y?pin-value=1&pin-value=2", want: URI{Token: "b", Object: "y", PIN: "2"}},
		// empty components are skipped
		{in: "pkcs11:;token=t;;?&pin-value=1&", want: URI{Token: "t", PIN: "1"}},
		// '?' after the first belongs to the query value
		{in: "pkcs11:token=t?pin-value=a?b", want: URI{Token: "t", PIN: "a?b"}},

		// errors
		{in: "pkcs11:object=k?pin-value=1234", wantErr: "neither slot-id nor token"},
		{in: "pkcs11:", wantErr: "neither slot-id nor token"},
		{in: "pkcs11:id=%01;serial=1", wantErr: "neither slot-id nor token"},
		{in: "kcs11:token=Foo%20Bar", wantErr: "scheme"},
		{in: "file:///var/secrets/key", wantErr: "scheme"},
		{in: "", wantErr: "scheme"},
		{in: "pkcs11:token=a%2", wantErr: "malformed percent escape"},
		{in: "pkcs11:token=a%", wantErr: "malformed percent escape"},
		{in: "pkcs11:token=t;object=%zz", wantErr: "malformed percent escape"},
		{in: "pkcs11:token=t?pin-value=%G0", wantErr: "malformed percent escape"},
		{in: "pkcs11:to%ken=t", wantErr: "malformed percent escape"},
		{in: "pkcs11:token=%FF", wantErr: "not UTF-8"},
		{in: "pkcs11:slot-id=-1", wantErr: "not an unsigned integer"},
		{in: "pkcs11:slot-id=", wantErr: "not an unsigned integer"},
		{in: "pkcs11:slot-id=0x10", wantErr: "not an unsigned integer"},
		{in: "pkcs11:slot-id=99999999999999999999999", wantErr: "not an unsigned integer"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseURI(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseURI(%q) = %+v, %v; want error containing %q", tt.in, u, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", tt.in, err)
			}
			if *u != tt.want {
				t.Fatalf("ParseURI(%q) = %+v, want %+v", tt.in, *u, tt.want)
			}
			if tt.str != "" && u.String() != tt.str {
				t.Errorf("String() = %q, want %q", u.String(), tt.str)
			}
			back, err := ParseURI(u.String())
			if err != nil || *back != *u {
				t.Errorf("ParseURI(String()) = %+v, %v; want %+v", back, err, *u)
			}
		})
	}
}

func TestURIWithObjectAndRedacted(t *testing.T) {
	base, err := ParseURI("pkcs11:slot-id=0?pin-value=1234")
	if err != nil {
		t.Fatal(err)
	}
	u := base.WithObject("local-ca")
	if got, want := u.String(), "pkcs11:slot-id=0;object=local%2Dca?pin-value=1234"; got != want {
		t.Errorf("WithObject: %q, want %q", got, want)
	}
	if base.Object != "" {
		t.Errorf("WithObject changed its receiver: %+v", base)
	}
	if got, want := u.Redacted(), "pkcs11:slot-id=0;object=local%2Dca"; got != want {
		t.Errorf("Redacted: %q, want %q", got, want)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"pkcs11:slot-id=0;object=a?pin-value=1234", "pkcs11:slot-id=0;object=a?pin-value=REDACTED"},
		{"pkcs11:token=t?pin-source=x&pin-value=1234&module-name=m", "pkcs11:token=t?pin-source=x&pin-value=REDACTED&module-name=m"},
		{"pkcs11:pin-value=1234;token=t", "pkcs11:pin-value=REDACTED;token=t"},
		{"pkcs11:token=t?pin%2Dvalue=1234", "pkcs11:token=t?pin%2Dvalue=REDACTED"},
		{"pkcs11:token=t?pin-value=12%zz34", "pkcs11:token=t?pin-value=REDACTED"},
		{"not a uri", "not a uri"},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Parse errors never carry the PIN.
	_, err := ParseURI("pkcs11:object=%zz?pin-value=s3cr3t")
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("parse error leaks or is missing: %v", err)
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:slot-id=0;object=local%2Dca?pin-value=1234",
		"pkcs11:token=Key%20pair?pin-value=1234",
		"pkcs11:slot-id=0;object=est%2Dbootstrap%2Did?pin-value=1234",
		"pkcs11:token=a;slot-id=3;id=%01;object=%C3%A9?pin-source=x&pin-value=%25",
		"pkcs11:token=",
		"pkcs11:object=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		out := u.String()
		back, err := ParseURI(out)
		if err != nil {
			t.Fatalf("ParseURI(%q) ok, but its String() %q does not parse: %v", s, out, err)
		}
		if *back != *u {
			t.Fatalf("round trip of %q via %q: %+v != %+v", s, out, *back, *u)
		}
		if back.String() != out {
			t.Fatalf("String() not stable: %q then %q", out, back.String())
		}
		if u.PIN != "" && !strings.HasSuffix(Redact(out), "?pin-value=REDACTED") {
			t.Fatalf("Redact(%q) keeps the PIN", out)
		}
	})
}

// TestRedactWholePIN: a PIN is redacted up to the next '&' however it is
// spelled: ParseURI reads the query after the first '?' and splits it only
// on '&', so "?" and ";" are part of the PIN (RFC 7512 allows a raw '?' in
// a query value).
func TestRedactWholePIN(t *testing.T) {
	for _, in := range []string{
		"pkcs11:object=%zz?pin-value=s3?cr3t",
		"pkcs11:object=%zz?pin-value=s3;cr3t",
		"pkcs11:object=k?pin-value=s3?cr3t", // neither slot-id nor token
	} {
		_, err := ParseURI(in)
		if err == nil || strings.Contains(err.Error(), "cr3t") {
			t.Errorf("ParseURI(%q): the error leaks part of the PIN or is missing: %v", in, err)
		}
	}
	if got, want := Redact("pkcs11:token=t?pin-value=a?b;c&x=1"), "pkcs11:token=t?pin-value=REDACTED&x=1"; got != want {
		t.Errorf("Redact = %q, want %q", got, want)
	}
}
