package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// TPM2_HMAC is T3's hot path: every SAS token is one. go-tpm marshals by
// reflection (some 380 allocations a call), so this one command is encoded
// and decoded by hand, with an empty password session (Part 3 §15.5). The
// tests check the bytes against go-tpm's.

const (
	tpmSTSessions = 0x8002
	tpmCCHMAC     = 0x00000155
	tpmRSPW       = 0x40000009
)

// hmacCommand returns TPM2_HMAC(key, data, SHA-256) authorized by the
// key's empty password; data is at most maxHMACBuffer bytes.
func hmacCommand(key tpm2.TPMHandle, data []byte) []byte {
	size := 10 + 4 + 4 + 9 + 2 + len(data) + 2
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint16(b, tpmSTSessions)
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = binary.BigEndian.AppendUint32(b, tpmCCHMAC)
	b = binary.BigEndian.AppendUint32(b, uint32(key))
	b = binary.BigEndian.AppendUint32(b, 9) // authorization area size
	b = binary.BigEndian.AppendUint32(b, tpmRSPW)
	b = binary.BigEndian.AppendUint16(b, 0) // nonceCaller
	b = append(b, 0x00)                     // session attributes
	b = binary.BigEndian.AppendUint16(b, 0) // the empty password
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	b = append(b, data...)
	return binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA256))
}

// errHMACResponse reports a TPM2_HMAC response that does not parse.
var errHMACResponse = errors.New("malformed TPM2_HMAC response")

// parseHMACResponse returns the digest of a TPM2_HMAC response, or the
// TPM's response code as a *CommandError.
func parseHMACResponse(rsp []byte) ([]byte, error) {
	if len(rsp) < 10 || int(binary.BigEndian.Uint32(rsp[2:6])) != len(rsp) {
		return nil, fmt.Errorf("TPM2_HMAC: %w: %d bytes", errHMACResponse, len(rsp))
	}
	if rc := binary.BigEndian.Uint32(rsp[6:10]); rc != 0 {
		return nil, &CommandError{Command: "TPM2_HMAC", RC: tpm2.TPMRC(rc)}
	}
	// parameterSize, then TPM2B_DIGEST, then the session area.
	if len(rsp) < 16 || binary.BigEndian.Uint16(rsp[0:2]) != tpmSTSessions {
		return nil, fmt.Errorf("TPM2_HMAC: %w: no parameter area", errHMACResponse)
	}
	params := binary.BigEndian.Uint32(rsp[10:14])
	n := int(binary.BigEndian.Uint16(rsp[14:16]))
	if uint64(params) > uint64(len(rsp)-14) || n+2 > int(params) {
		return nil, fmt.Errorf("TPM2_HMAC: %w: digest of %d bytes in %d bytes of parameters", errHMACResponse, n, params)
	}
	return append([]byte(nil), rsp[16:16+n]...), nil
}

// hmac runs TPM2_HMAC on tp.
func hmac(tp transport.TPM, key tpm2.TPMHandle, data []byte) ([]byte, error) {
	rsp, err := tp.Send(hmacCommand(key, data))
	if err != nil {
		return nil, cmdErr("TPM2_HMAC", err)
	}
	return parseHMACResponse(rsp)
}
