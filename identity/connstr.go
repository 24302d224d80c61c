package identity

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// ConnectionString is a parsed IoT Hub device connection string.
type ConnectionString struct {
	HostName        string
	DeviceID        string
	SharedAccessKey []byte
}

// ParseConnectionString parses "HostName=…;DeviceId=…;SharedAccessKey=…"
// (any order; the key is base64). Other components (GatewayHostName
// among them) are ignored, as aziot and the configuration's validation
// ignore them, and never quoted: a mistyped one may hold the key.
func ParseConnectionString(s string) (*ConnectionString, error) {
	var c ConnectionString
	var key string
	for part := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		switch k {
		case "HostName":
			c.HostName = v
		case "DeviceId":
			c.DeviceID = v
		case "SharedAccessKey":
			key = v
		}
	}
	if c.HostName == "" || c.DeviceID == "" || key == "" {
		return nil, fmt.Errorf("connection string: HostName, DeviceId and SharedAccessKey are required")
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(key, "="))
	if err != nil {
		return nil, fmt.Errorf("connection string: SharedAccessKey: %w", err)
	}
	c.SharedAccessKey = b
	return &c, nil
}
