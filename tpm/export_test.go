package tpm

import "github.com/google/go-tpm/tpm2/transport"

// OpenRaw connects to the TPM of tcti as another client would: no
// start-up, no flush, nothing cleaned up on Close.
func OpenRaw(tcti string) (transport.TPMCloser, error) {
	tc, err := ParseTCTI(tcti)
	if err != nil {
		return nil, err
	}
	tp, _, err := tc.open(DefaultTimeout)
	return tp, err
}
