package emulator

import (
	"net/http"
	"strconv"
	"time"
)

// Op names a kind of call, for faults and events.
type Op string

// The calls the emulator serves.
const (
	OpAny          Op = ""                 // matches every call (faults only)
	OpRegister     Op = "dps.register"     // PUT …/register
	OpPoll         Op = "dps.poll"         // GET …/operations/{id}
	OpModuleList   Op = "hub.listModules"  // GET /devices/{d}/modules
	OpModuleGet    Op = "hub.getModule"    // GET /devices/{d}/modules/{m}
	OpModulePut    Op = "hub.putModule"    // PUT /devices/{d}/modules/{m}
	OpModuleDelete Op = "hub.deleteModule" // DELETE /devices/{d}/modules/{m}
	OpTwin         Op = "hub.twin"         // GET /devices/{d}[/modules/{m}]/twin
	OpEvents       Op = "hub.events"       // POST /devices/{d}[/modules/{m}]/messages/events
)

// Fault is an injected failure of the next matching calls.
type Fault struct {
	// Op selects the calls; OpAny matches all.
	Op Op
	// ID, when set, limits the fault to calls about this registration ID
	// (DPS) or device ID (hub).
	ID string
	// Status is the HTTP status to answer (e.g. 429, 500, 503); 0 answers
	// normally after Delay (or drops the connection, with Drop).
	Status int
	// RetryAfter, when > 0, is sent as Retry-After (seconds) with Status.
	RetryAfter int
	// Delay holds the call this long before answering (a slow or hanging
	// server; the hold ends early when the client goes away or the
	// emulator closes).
	Delay time.Duration
	// Drop closes the connection without an answer (after Delay).
	Drop bool
	// Count is how many calls the fault affects; 0 means every matching
	// call until ClearFaults.
	Count int
}

// InjectFault adds a fault; faults are matched in the order added.
func (e *Emulator) InjectFault(f Fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := f
	e.faults = append(e.faults, &c)
}

// ClearFaults removes all faults.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = nil
}

// takeFault returns the first fault matching op and id, using up one of
// its calls.
func (e *Emulator) takeFault(op Op, id string) *Fault {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, f := range e.faults {
		if (f.Op != OpAny && f.Op != op) || (f.ID != "" && f.ID != id) {
			continue
		}
		c := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				e.faults = append(e.faults[:i:i], e.faults[i+1:]...)
			}
		}
		return &c
	}
	return nil
}

// applyFault runs a fault for one call; it reports whether the call was
// answered (or dropped) by the fault.
func (e *Emulator) applyFault(w http.ResponseWriter, r *http.Request, op Op, id string) bool {
	f := e.takeFault(op, id)
	if f == nil {
		return false
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			e.record(op, id, r, 0, "fault: client went away during the delay")
			return true
		case <-e.closed:
			t.Stop()
			return true
		}
	}
	if f.Drop {
		e.record(op, id, r, 0, "fault: connection dropped")
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.Status == 0 {
		return false
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(f.RetryAfter))
	}
	msg := "injected fault"
	if f.Status == http.StatusTooManyRequests {
		msg = "ThrottlingException: injected fault"
	}
	if op == OpRegister || op == OpPoll {
		writeDPSError(w, f.Status, f.Status*1000+1, msg)
	} else {
		writeHubError(w, f.Status, http.StatusText(f.Status), msg)
	}
	e.record(op, id, r, f.Status, "fault: "+msg)
	return true
}

// Event is one call the emulator answered.
type Event struct {
	Time   time.Time
	Op     Op
	Method string
	Path   string
	// ID is the registration ID (DPS) or "device" / "device/module" (hub).
	ID string
	// Status is the HTTP status sent (0 when the connection was dropped).
	Status int
	// Note says why a call failed, or what it did.
	Note string
}

func (e *Emulator) record(op Op, id string, r *http.Request, status int, note string) {
	ev := Event{Time: time.Now(), Op: op, Method: r.Method, Path: r.URL.Path, ID: id, Status: status, Note: note}
	e.mu.Lock()
	e.events = append(e.events, ev)
	e.mu.Unlock()
	e.logf("emulator: %s %s %s → %d %s", r.Method, r.URL.Path, id, status, note)
}

// Events returns the calls answered so far, oldest first.
func (e *Emulator) Events() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.events...)
}
