package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// IsURI reports whether a key or certificate reference is a URI (file:,
// pkcs11:, or anything with "://") rather than a key or cert ID of the
// store. Cert IDs may contain ':' (IoT Edge uses "aziot-edged/module/m:identity"),
// so only these forms count as URIs.
func IsURI(ref string) bool {
	return strings.HasPrefix(ref, "file:") || strings.HasPrefix(ref, "pkcs11:") || strings.Contains(ref, "://")
}

// checkFileURI accepts file:///absolute/path (host empty or localhost).
func checkFileURI(s string) error {
	// s is quoted without a PIN: a pkcs11: URI has no place here, but may
	// have one.
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text has s whole
		}
		return fmt.Errorf("invalid URI %q: %w", redactURI(s), err)
	}
	if u.Scheme != "file" {
		return fmt.Errorf("%q is not a file:// URI", redactURI(s))
	}
	if u.Host != "" && u.Host != "localhost" {
		return fmt.Errorf("file URI %q names host %q: want file:///absolute/path", s, u.Host)
	}
	if !strings.HasPrefix(u.Path, "/") || u.Path == "/" {
		return fmt.Errorf("file URI %q has no absolute path: want file:///absolute/path", s)
	}
	return nil
}

// checkPKCS11URI accepts the RFC 7512 subset aziot understands: path
// attributes separated by ';' (object, slot-id, token; others are ignored)
// with slot-id or token present, then an optional ?query (pin-value).
// Values may be percent-encoded. Its errors quote s without its PIN
// (redactURI): wardend logs them.
func checkPKCS11URI(s string) error {
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return fmt.Errorf("%q is not a pkcs11: URI", redactURI(s))
	}
	path, query, _ := strings.Cut(rest, "?")
	var slot, token bool
	for _, attr := range strings.Split(path, ";") {
		if attr == "" {
			continue
		}
		name, value, ok := strings.Cut(attr, "=")
		if !ok || name == "" {
			return fmt.Errorf("pkcs11 URI %q: attribute %q is not name=value", redactURI(s), attr)
		}
		v, err := url.PathUnescape(value)
		if err != nil {
			// Not the escape error, which quotes two bytes of the value:
			// this may be a pin-value.
			return fmt.Errorf("pkcs11 URI %q: attribute %q: malformed percent escape", redactURI(s), name)
		}
		switch name {
		case "slot-id":
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				return fmt.Errorf("pkcs11 URI %q: slot-id %q is not a number", redactURI(s), v)
			}
			slot = true
		case "token":
			token = true
		}
	}
	if !slot && !token {
		return fmt.Errorf("pkcs11 URI %q names neither slot-id nor token", redactURI(s))
	}
	for _, attr := range strings.Split(query, "&") {
		if attr == "" {
			continue
		}
		name, value, _ := strings.Cut(attr, "=")
		if _, err := url.PathUnescape(value); err != nil {
			// Neither the value nor the escape error, which quotes two
			// bytes of it: this may be the PIN.
			return fmt.Errorf("pkcs11 URI %q: query attribute %q: malformed percent escape", redactURI(s), name)
		}
	}
	return nil
}

// redactURI is a key URI as an error message may quote it: its query,
// where the PIN is (whatever the spelling of pin-value), and a pin-value
// among its path attributes are replaced by "<redacted>".
func redactURI(s string) string {
	path, _, query := strings.Cut(s, "?")
	path = pinValue.ReplaceAllString(path, "${1}<redacted>")
	if query {
		path += "?<redacted>"
	}
	return path
}

// checkHTTPURL accepts an absolute http:// or https:// URL with a host.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %w", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s):// URL", s)
	}
	return nil
}

// checkID accepts a key or cert ID: not empty, no spaces or control
// characters.
func checkID(s string) error {
	if s == "" {
		return errors.New("empty ID")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("ID %q contains a space or control character", s)
		}
	}
	return nil
}

// checkCertRef accepts a file:// URI or a cert ID.
func checkCertRef(s string) error {
	if IsURI(s) {
		return checkFileURI(s)
	}
	return checkID(s)
}

// checkConnectionString checks an IoT Hub device connection string as
// aziot parses it: ';'-separated name=value pairs with HostName, DeviceId
// and a base64 SharedAccessKey (other names are ignored).
func checkConnectionString(s string) error {
	found := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		name, value, ok := strings.Cut(part, "=")
		if ok {
			found[name] = value
		}
	}
	for _, name := range []string{"HostName", "DeviceId", "SharedAccessKey"} {
		if found[name] == "" {
			return fmt.Errorf("connection string has no %s", name)
		}
	}
	if _, err := decodeBase64(found["SharedAccessKey"]); err != nil {
		return fmt.Errorf("connection string SharedAccessKey: %w", err)
	}
	return nil
}

// checkEgress accepts host or host:port ([v6]:port), port 1–65535. A host
// may start with "*." to allow its subdomains.
func checkEgress(s string) error {
	host, port := s, ""
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return fmt.Errorf("egress %q: want host or host:port: %w", s, err)
		}
		host, port = h, p
	} else if strings.Contains(s, ":") && net.ParseIP(s) == nil {
		return fmt.Errorf("egress %q: want host or host:port", s)
	}
	if host == "" || strings.ContainsAny(host, "/@ \t") {
		return fmt.Errorf("egress %q: invalid host", s)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("egress %q: port must be 1–65535", s)
		}
	}
	return nil
}
