package config

import (
	"testing"
	"time"
)

func TestParseRenewalPolicy(t *testing.T) {
	valid := []struct {
		in   string
		want RenewalPolicy
	}{
		// cert-renewal's deserialize_ok.
		{"90%", RenewalPolicy{Percent: 90}},
		{"100min", RenewalPolicy{Period: 100 * time.Minute}},
		{"10day", RenewalPolicy{Period: 10 * 24 * time.Hour}},
		{"1%", RenewalPolicy{Percent: 1}},
		{"99%", RenewalPolicy{Percent: 99}},
		{"1min", RenewalPolicy{Period: time.Minute}},
	}
	for _, c := range valid {
		got, err := ParseRenewalPolicy(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRenewalPolicy(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	// cert-renewal's deserialize_err, "100%" (rejected by its code), and more.
	for _, in := range []string{"", "a%", "day", "1year", "101%", "0%", "0min", "100%",
		"%", "min", "-5%", "+5%", "5 %", " 5%", "5d", "5", "1_0%", "0x10min", "9999999999999999day", "1.5day"} {
		if got, err := ParseRenewalPolicy(in); err == nil {
			t.Errorf("ParseRenewalPolicy(%q) = %+v, want an error", in, got)
		}
	}
}

func TestRenewalPolicyString(t *testing.T) {
	// cert-renewal's serialize cases.
	cases := []struct {
		p    RenewalPolicy
		want string
	}{
		{RenewalPolicy{Percent: 80}, "80%"},
		{RenewalPolicy{Percent: 89}, "89%"},
		{RenewalPolicy{Period: 2 * time.Minute}, "2min"},
		{RenewalPolicy{Period: 86460 * time.Second}, "1441min"},
		{RenewalPolicy{Period: 3 * 24 * time.Hour}, "3day"},
		{RenewalPolicy{Period: 24 * time.Hour}, "1day"},
	}
	for _, c := range cases {
		if got := c.p.String(); got != c.want {
			t.Errorf("%+v.String() = %q, want %q", c.p, got, c.want)
		}
		back, err := ParseRenewalPolicy(c.want)
		if err != nil || back != c.p {
			t.Errorf("round trip of %q: %+v, %v", c.want, back, err)
		}
		if b, err := c.p.MarshalText(); err != nil || string(b) != c.want {
			t.Errorf("MarshalText(%+v) = %q, %v", c.p, b, err)
		}
	}
	// "1440min" is one day and renders as such.
	if p, _ := ParseRenewalPolicy("1440min"); p.String() != "1day" {
		t.Errorf("1440min renders as %q", p)
	}
	for _, bad := range []RenewalPolicy{{}, {Percent: 100}, {Period: 30 * time.Second}, {Period: -time.Minute}, {Percent: 5, Period: time.Minute}} {
		if b, err := bad.MarshalText(); err == nil {
			t.Errorf("MarshalText(%+v) = %q, want an error", bad, b)
		}
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1h30m")); err != nil || d.Duration != 90*time.Minute {
		t.Fatalf("%v %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1h30m0s" {
		t.Errorf("MarshalText = %s", b)
	}
	for _, bad := range []string{"", "15", "forever", "1y"} {
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
	}
}
