package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string, e.g.
// "15m" or "1h30m".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want a Go duration such as \"15m\" or \"1h\"): %w", text, err)
	}
	d.Duration = v
	return nil
}

// MarshalText renders the duration as time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.Duration.String()), nil
}

// RenewalPolicy is a certificate auto-renewal threshold or retry period, in
// the syntax of aziot's cert-renewal crate: "<n>%" of the certificate's
// lifetime (1–99), "<n>min" or "<n>day" (n ≥ 1). Exactly one of Percent and
// Period is non-zero in a parsed policy.
type RenewalPolicy struct {
	// Percent is the share of the certificate's lifetime, 1–99, or 0.
	Percent int
	// Period is a fixed time (a whole number of minutes), or 0.
	Period time.Duration
}

const day = 24 * time.Hour

// ParseRenewalPolicy parses "<n>%", "<n>min" or "<n>day".
func ParseRenewalPolicy(s string) (RenewalPolicy, error) {
	var unit time.Duration
	var digits string
	switch {
	case strings.HasSuffix(s, "%"):
		digits = strings.TrimSuffix(s, "%")
	case strings.HasSuffix(s, "min"):
		digits, unit = strings.TrimSuffix(s, "min"), time.Minute
	case strings.HasSuffix(s, "day"):
		digits, unit = strings.TrimSuffix(s, "day"), day
	default:
		return RenewalPolicy{}, fmt.Errorf("invalid renewal policy %q: want \"<n>%%\", \"<n>min\" or \"<n>day\"", s)
	}
	n, err := strconv.ParseUint(digits, 10, 63)
	if err != nil {
		return RenewalPolicy{}, fmt.Errorf("invalid renewal policy %q: %q is not a whole number", s, digits)
	}
	if n == 0 {
		return RenewalPolicy{}, fmt.Errorf("invalid renewal policy %q: the value must be positive", s)
	}
	if unit == 0 {
		if n >= 100 {
			return RenewalPolicy{}, fmt.Errorf("invalid renewal policy %q: a lifetime percentage must be less than 100", s)
		}
		return RenewalPolicy{Percent: int(n)}, nil
	}
	if n > uint64(math.MaxInt64/int64(unit)) {
		return RenewalPolicy{}, fmt.Errorf("invalid renewal policy %q: too long", s)
	}
	return RenewalPolicy{Period: time.Duration(n) * unit}, nil
}

// String renders the policy as aziot does: a percentage, whole days when the
// period is a multiple of a day, otherwise minutes. The zero policy is "".
func (p RenewalPolicy) String() string {
	switch {
	case p.Percent != 0:
		return strconv.Itoa(p.Percent) + "%"
	case p.Period != 0 && p.Period%day == 0:
		return strconv.FormatInt(int64(p.Period/day), 10) + "day"
	case p.Period != 0:
		return strconv.FormatInt(int64(p.Period/time.Minute), 10) + "min"
	}
	return ""
}

// UnmarshalText parses the policy with ParseRenewalPolicy.
func (p *RenewalPolicy) UnmarshalText(text []byte) error {
	v, err := ParseRenewalPolicy(string(text))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText renders the policy with String. A policy that String cannot
// render exactly (zero, a percentage outside 1–99, a period that is not a
// positive whole number of minutes) is an error.
func (p RenewalPolicy) MarshalText() ([]byte, error) {
	s := p.String()
	if q, err := ParseRenewalPolicy(s); err != nil || q != p {
		return nil, fmt.Errorf("renewal policy %+v cannot be written as \"<n>%%\", \"<n>min\" or \"<n>day\"", p)
	}
	return []byte(s), nil
}
