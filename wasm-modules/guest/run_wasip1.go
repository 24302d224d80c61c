//go:build wasip1

package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"unsafe"
)

// hostCall is the one host call of the ABI: it hands the host the call's
// name and JSON request and returns status<<32 | n, where status 0 means
// success and n is the length of the response (status 1: an Error's JSON)
// that hostTake copies into the guest.
//
//go:wasmimport warden call
func hostCall(opPtr, opLen, reqPtr, reqLen uint32) uint64

// hostTake copies up to n bytes of the pending response to ptr and returns
// how many it copied; the response is then discarded.
//
//go:wasmimport warden take
func hostTake(ptr, n uint32) uint32

// wasmCaller is the caller of a module: the warden imports.
type wasmCaller struct{}

var defaultCaller Caller = wasmCaller{}

func bytesPtr(b []byte) uint32 {
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

// Call makes one host call. It yields afterwards (runtime.Gosched) so that
// the Go runtime's background GC runs: a Go guest's memory only shrinks
// when it yields.
func (wasmCaller) Call(_ context.Context, op string, req []byte) ([]byte, error) {
	opb := []byte(op)
	r := hostCall(bytesPtr(opb), uint32(len(opb)), bytesPtr(req), uint32(len(req)))
	runtime.KeepAlive(opb)
	runtime.KeepAlive(req)
	status, n := uint32(r>>32), uint32(r)
	var out []byte
	if n > 0 {
		out = make([]byte, n)
		if got := hostTake(bytesPtr(out), n); got != n {
			return nil, &Error{Code: CodeFailed, Message: fmt.Sprintf("host call %s: took %d of %d response bytes", op, got, n)}
		}
	}
	runtime.Gosched()
	if status != 0 {
		e := &Error{}
		if err := json.Unmarshal(out, e); err != nil || e.Code == "" {
			return nil, &Error{Code: CodeFailed, Message: fmt.Sprintf("host call %s failed: %s", op, out)}
		}
		return nil, e
	}
	return out, nil
}
