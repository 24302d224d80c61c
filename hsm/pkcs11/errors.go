package pkcs11

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// ckrMeaning explains the return values a token commonly gives.
var ckrMeaning = map[uint]string{
	pkcs11.CKR_ARGUMENTS_BAD:                "the library rejected the arguments",
	pkcs11.CKR_ATTRIBUTE_READ_ONLY:          "the token does not let this attribute be changed",
	pkcs11.CKR_ATTRIBUTE_TYPE_INVALID:       "the token does not know this attribute",
	pkcs11.CKR_ATTRIBUTE_VALUE_INVALID:      "the token rejected an attribute value (e.g. a key size)",
	pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:     "the library is not initialised",
	pkcs11.CKR_DATA_INVALID:                 "the input is not valid for this mechanism",
	pkcs11.CKR_DATA_LEN_RANGE:               "the input has the wrong length for this key and mechanism",
	pkcs11.CKR_DEVICE_ERROR:                 "the device failed",
	pkcs11.CKR_DEVICE_MEMORY:                "the token is out of memory",
	pkcs11.CKR_DEVICE_REMOVED:               "the token was removed",
	pkcs11.CKR_ENCRYPTED_DATA_INVALID:       "the ciphertext or its tag is not valid",
	pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:     "the ciphertext has the wrong length",
	pkcs11.CKR_FUNCTION_FAILED:              "the token could not do it",
	pkcs11.CKR_FUNCTION_NOT_SUPPORTED:       "the token does not support this function",
	pkcs11.CKR_GENERAL_ERROR:                "the library hit an unrecoverable error",
	pkcs11.CKR_HOST_MEMORY:                  "the library ran out of memory",
	pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED:   "the key's attributes do not allow this use",
	pkcs11.CKR_KEY_HANDLE_INVALID:           "the key handle is stale",
	pkcs11.CKR_KEY_SIZE_RANGE:               "the token does not support this key size",
	pkcs11.CKR_KEY_TYPE_INCONSISTENT:        "the key's type does not fit this mechanism",
	pkcs11.CKR_MECHANISM_INVALID:            "the token does not support this mechanism",
	pkcs11.CKR_MECHANISM_PARAM_INVALID:      "the token rejected the mechanism parameters (e.g. the IV)",
	pkcs11.CKR_OBJECT_HANDLE_INVALID:        "the object handle is stale",
	pkcs11.CKR_OPERATION_ACTIVE:             "another operation is active on the session",
	pkcs11.CKR_PIN_EXPIRED:                  "the PIN has expired",
	pkcs11.CKR_PIN_INCORRECT:                "the PIN (pin-value) is wrong",
	pkcs11.CKR_PIN_LEN_RANGE:                "the PIN (pin-value) has the wrong length",
	pkcs11.CKR_PIN_LOCKED:                   "the PIN is locked after too many wrong tries",
	pkcs11.CKR_SESSION_CLOSED:               "the session was closed",
	pkcs11.CKR_SESSION_COUNT:                "the token has too many open sessions",
	pkcs11.CKR_SESSION_HANDLE_INVALID:       "the session handle is stale",
	pkcs11.CKR_SESSION_READ_ONLY:            "the session is read-only",
	pkcs11.CKR_SIGNATURE_INVALID:            "the signature is not valid",
	pkcs11.CKR_SLOT_ID_INVALID:              "there is no such slot",
	pkcs11.CKR_TEMPLATE_INCOMPLETE:          "the token needs more attributes to create the object",
	pkcs11.CKR_TEMPLATE_INCONSISTENT:        "the token rejected the attribute combination",
	pkcs11.CKR_TOKEN_NOT_PRESENT:            "there is no token in the slot",
	pkcs11.CKR_TOKEN_NOT_RECOGNIZED:         "the library does not recognise the token",
	pkcs11.CKR_TOKEN_WRITE_PROTECTED:        "the token is write-protected",
	pkcs11.CKR_USER_NOT_LOGGED_IN:           "the session is not logged in (is pin-value set?)",
	pkcs11.CKR_USER_PIN_NOT_INITIALIZED:     "the token's user PIN is not initialised",
	pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED: "the library is already initialised",
}

// ckrError is a PKCS#11 return value with its name and meaning. It unwraps to
// the pkcs11.Error, so callers can errors.As for the code.
type ckrError struct{ code pkcs11.Error }

func (e ckrError) Error() string {
	// pkcs11.Error's text is "pkcs11: 0x<hex>: CKR_NAME".
	name := e.code.Error()
	if i := strings.LastIndex(name, ": "); i >= 0 && strings.HasPrefix(name[i+2:], "CKR_") {
		name = name[i+2:]
	} else {
		name = fmt.Sprintf("CKR_0x%X", uint(e.code))
	}
	if m, ok := ckrMeaning[uint(e.code)]; ok {
		return name + ": " + m
	}
	return name
}

func (e ckrError) Unwrap() error { return e.code }

// code returns the PKCS#11 return value in err, or 0 (CKR_OK).
func code(err error) uint {
	var e pkcs11.Error
	if errors.As(err, &e) {
		return uint(e)
	}
	return pkcs11.CKR_OK
}

// class returns the hsm sentinel a return value belongs to, if any.
func class(c uint) error {
	switch c {
	case pkcs11.CKR_FUNCTION_NOT_SUPPORTED, pkcs11.CKR_MECHANISM_INVALID:
		return hsm.ErrUnsupported
	case pkcs11.CKR_DATA_INVALID, pkcs11.CKR_DATA_LEN_RANGE,
		pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		pkcs11.CKR_MECHANISM_PARAM_INVALID:
		return hsm.ErrInvalidParameter
	}
	return nil
}

// staleHandle reports whether err says a cached object handle is no longer
// valid, so the lookup should be redone.
func staleHandle(err error) bool {
	c := code(err)
	return c == pkcs11.CKR_OBJECT_HANDLE_INVALID || c == pkcs11.CKR_KEY_HANDLE_INVALID
}

// brokenSession reports whether err says the session can no longer be used
// and must not go back to the pool.
func brokenSession(err error) bool {
	switch code(err) {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_USER_NOT_LOGGED_IN,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_OPERATION_ACTIVE:
		return true
	}
	return false
}

// describe turns a bare PKCS#11 return value into a ckrError that also wraps
// the hsm sentinel (ErrUnsupported, ErrInvalidParameter) it stands for; it
// returns other errors as they are.
func describe(err error) error {
	p, ok := err.(pkcs11.Error)
	if !ok {
		return err
	}
	if s := class(uint(p)); s != nil {
		return fmt.Errorf("%w (%w)", ckrError{p}, s)
	}
	return ckrError{p}
}

// opError wraps err, the failure of op ("sign with") on the object labelled
// label of token tok, as
//
//	pkcs11: sign with "device-id" on token "t": CKR_…: <meaning>
func opError(op, label, tok string, err error) error {
	prefix := "pkcs11: " + op
	if label != "" {
		prefix += fmt.Sprintf(" %q", label)
	}
	if tok != "" {
		prefix += fmt.Sprintf(" on token %q", tok)
	}
	return fmt.Errorf("%s: %w", prefix, describe(err))
}
