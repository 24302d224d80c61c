package emulator

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestFaults: statuses with Retry-After, counts, per-ID faults, delays,
// dropped connections, and a hang the client times out on.
func TestFaults(t *testing.T) {
	em := start(t, Options{})
	en, _ := em.AddSymmetricEnrollment(SymmetricEnrollment{RegistrationID: "f"})
	dev, _ := em.AddHubDevice(HubDevice{DeviceID: "hd"})
	c := em.Client()
	auth := dpsSAS(t, em, "f", en.PrimaryKey)
	put := func() reply { return call(t, c, "PUT", regURL(em, "f"), auth, map[string]any{"registrationId": "f"}) }

	em.InjectFault(Fault{Op: OpRegister, Status: 429, RetryAfter: 7, Count: 2})
	for i := 0; i < 2; i++ {
		if r := put(); r.status != 429 || r.header.Get("Retry-After") != "7" || r.body["errorCode"] != float64(429001) {
			t.Fatalf("429 #%d: %d %v %s", i, r.status, r.header, r.raw)
		}
	}
	if r := put(); r.status != 202 {
		t.Fatalf("after the fault: %d", r.status)
	}

	em.InjectFault(Fault{Op: OpRegister, ID: "someone-else", Status: 500})
	if r := put(); r.status != 202 {
		t.Fatalf("fault for another id: %d", r.status)
	}
	em.ClearFaults()

	em.InjectFault(Fault{Op: OpModuleList, Status: 500, Count: 1})
	if r := call(t, c, "GET", modURL(em, "hd", ""), hubSAS(t, em, "devices/hd", dev.PrimaryKey), nil); r.status != 500 || !strings.Contains(r.body["Message"].(string), "ErrorCode:") {
		t.Fatalf("hub 500: %d %s", r.status, r.raw)
	}

	em.InjectFault(Fault{Delay: 200 * time.Millisecond, Count: 1})
	t0 := time.Now()
	if r := put(); r.status != 202 || time.Since(t0) < 200*time.Millisecond {
		t.Fatalf("delay: %d after %v", r.status, time.Since(t0))
	}

	em.InjectFault(Fault{Op: OpRegister, Drop: true, Count: 1})
	req, _ := http.NewRequest("PUT", regURL(em, "f"), strings.NewReader(`{"registrationId":"f"}`))
	req.Header.Set("Authorization", auth)
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("dropped connection answered %d", resp.StatusCode)
	}

	em.InjectFault(Fault{Op: OpAny, Delay: time.Hour})
	short := em.Client()
	short.Timeout = 300 * time.Millisecond
	req, _ = http.NewRequest("PUT", regURL(em, "f"), strings.NewReader(`{"registrationId":"f"}`))
	req.Header.Set("Authorization", auth)
	if resp, err := short.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("hang answered %d", resp.StatusCode)
	}
	em.ClearFaults()
	if r := put(); r.status != 202 {
		t.Fatalf("after clearing: %d", r.status)
	}
	var faults int
	for _, ev := range em.Events() {
		if strings.HasPrefix(ev.Note, "fault:") {
			faults++
		}
	}
	if faults < 4 {
		t.Errorf("events record %d faults", faults)
	}
}
