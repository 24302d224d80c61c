// Package identity holds the mechanism of the identity service without
// HTTP: SAS tokens (aziot-api.md §8.2), connection strings, module key
// derivation data (§6.5), and the provisioning state kept on disk (§8.5:
// device_info, prev_state and module backups).
package identity

import (
	"encoding/base64"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TokenLifetime is how long aziot's SAS tokens live (§8.2).
const TokenLifetime = 30 * time.Second

// DPSAudience is the SAS audience of a DPS registration.
func DPSAudience(scopeID, registrationID string) string {
	return scopeID + "/registrations/" + registrationID
}

// HubAudience is the SAS audience of a device on IoT Hub (always the hub's
// own host name, even when requests go to a gateway).
func HubAudience(hubHostname, deviceID string) string {
	return hubHostname + "/devices/" + deviceID
}

// EncodeSR lower-cases audience and percent-encodes it with the URL path
// set plus "=": controls, space, `"#<>?` + "`{}", "=", DEL and non-ASCII are
// escaped; "/" and ":" are not.
func EncodeSR(audience string) string {
	s := strings.ToLower(audience)
	var b strings.Builder
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7F || strings.IndexByte("\"#<>?`{}=", c) >= 0 {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// StringToSign is what the key signs: sr, a newline and the expiry.
func StringToSign(sr string, expiry int64) []byte {
	return []byte(sr + "\n" + strconv.FormatInt(expiry, 10))
}

// Token renders the Authorization header value for sr, the HMAC-SHA256
// signature sig of StringToSign(sr, expiry), and skn ("" for none;
// "registration" for DPS).
func Token(sr string, sig []byte, expiry int64, skn string) string {
	t := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(sig)) +
		"&se=" + strconv.FormatInt(expiry, 10)
	if skn != "" {
		t += "&skn=" + skn
	}
	return t
}

// Mint returns a SAS token for audience (aziot's §8.2 format) that
// expires ttl after now (TokenLifetime, as aziot), signed by sign: the
// HMAC-SHA256 of StringToSign computed wherever the key is (the key store,
// a TPM). skn is "registration" for DPS and "" for IoT Hub.
func Mint(audience, skn string, now time.Time, ttl time.Duration, sign func(msg []byte) ([]byte, error)) (string, error) {
	sr := EncodeSR(audience)
	se := now.Add(ttl).Unix()
	sig, err := sign(StringToSign(sr, se))
	if err != nil {
		return "", err
	}
	return Token(sr, sig, se, skn), nil
}

// ModuleKeyData is the derivation data of a module's SAS key (§6.5):
// "<moduleId>:<generationId>:primary" or ":secondary".
func ModuleKeyData(moduleID, generationID string, primary bool) []byte {
	which := "secondary"
	if primary {
		which = "primary"
	}
	return []byte(moduleID + ":" + generationID + ":" + which)
}
