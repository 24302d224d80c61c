// Command probe is the host's test module, hostile on demand: the job is a
// list of steps, each a host call (op and raw JSON request) or a behaviour
// (loop, alloc, trap, exit, gopanic, panic, fail, output, stderr, newlines,
// badptr, spin, gosleep, version).
// Build: GOOS=wasip1 GOARCH=wasm go build -o probe.wasm . ; -ldflags
// "-X main.version=v2" gives a second version with another digest.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

var version = "v1"

type step struct {
	Op  string          `json:"op"`
	Req json.RawMessage `json:"req,omitempty"`
	N   int             `json:"n,omitempty"`
}

type job struct {
	Steps []step `json:"steps"`
}

type outcome struct {
	Op    string          `json:"op"`
	Resp  json.RawMessage `json:"resp,omitempty"`
	Error *guest.Error    `json:"error,omitempty"`
}

var (
	counter uint64
	hoard   [][]byte
)

func main() { guest.Run(handle) }

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var j job
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, guest.Errorf("bad_job", "%v", err)
	}
	var outs []outcome
	for _, s := range j.Steps {
		switch s.Op {
		case "loop": // never returns
			for {
				counter++
			}
		case "alloc": // keeps n MiB (0: without end) live
			for i := 0; s.N == 0 || i < s.N; i++ {
				b := make([]byte, 1<<20)
				b[len(b)-1] = byte(i)
				hoard = append(hoard, b)
			}
		case "trap": // out-of-bounds store: a WASM trap
			*(*byte)(unsafe.Pointer(uintptr(0xFFFFFFF0))) = 1
		case "exit":
			os.Exit(s.N)
		case "gopanic": // an unrecovered panic in another goroutine: exit 2
			done := make(chan bool)
			go func() { panic("probe goroutine panic") }()
			<-done
		case "panic": // recovered by guest.Run: a module error
			panic("probe panic")
		case "fail":
			return nil, guest.Errorf("probe_failed", "failed as asked")
		case "output":
			return strings.Repeat("x", s.N), nil
		case "stderr":
			for i := 0; i < s.N; i++ {
				fmt.Fprintf(os.Stderr, "probe stderr line %d\n", i)
			}
		case "newlines": // n empty lines on stderr, in one write
			os.Stderr.Write([]byte(strings.Repeat("\n", s.N)))
		case "badptr":
			hostCall(0xFFFFFF00, 64, 0, 0)
		case "spin": // host calls without end
			for {
				guest.Call(ctx, guest.OpLog, guest.LogRequest{Msg: "spin"}, nil)
			}
		case "gosleep": // time.Sleep in the guest, n ms
			time.Sleep(time.Duration(s.N) * time.Millisecond)
		case "version":
			outs = append(outs, outcome{Op: "version", Resp: json.RawMessage(fmt.Sprintf("%q", version))})
		default:
			var resp json.RawMessage
			o := outcome{Op: s.Op}
			if err := guest.Call(ctx, s.Op, s.Req, &resp); err != nil {
				o.Error = guest.AsError(err)
			} else {
				o.Resp = resp
			}
			outs = append(outs, o)
		}
	}
	return map[string]any{"version": version, "steps": outs}, nil
}

//go:wasmimport warden call
func hostCall(opPtr, opLen, reqPtr, reqLen uint32) uint64
