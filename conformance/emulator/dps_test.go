package emulator

import (
	"encoding/json"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// TestSymmetricIndividual: register and poll with the enrollment's key;
// the device appears on the hub with that key.
func TestSymmetricIndividual(t *testing.T) {
	em := start(t, Options{})
	en, err := em.AddSymmetricEnrollment(SymmetricEnrollment{RegistrationID: "dev-1", Assignment: Assignment{DeviceID: "device-one"}})
	if err != nil {
		t.Fatal(err)
	}
	c := em.Client()
	r, polls := provision(t, em, c, "dev-1", dpsSAS(t, em, "dev-1", en.PrimaryKey), nil)
	st := state(r)
	if r.status != 200 || r.body["status"] != "assigned" || st["assignedHub"] != em.HubHostname() || st["deviceId"] != "device-one" || polls != 1 {
		t.Fatalf("poll %d: %d %s", polls, r.status, r.raw)
	}
	devs := em.Devices()
	if len(devs) != 1 || devs[0].DeviceID != "device-one" || devs[0].PrimaryKey != en.PrimaryKey || devs[0].Attestation != "symmetricKey" {
		t.Fatalf("devices %+v", devs)
	}
	regs := em.Registrations()
	if len(regs) != 1 || regs[0].Status != "assigned" || regs[0].Polls != 1 {
		t.Fatalf("registrations %+v", regs)
	}
}

// TestDPSSAS: the SAS check of spec/protocols.md §1.2, case by case.
func TestDPSSAS(t *testing.T) {
	em := start(t, Options{})
	en, _ := em.AddSymmetricEnrollment(SymmetricEnrollment{RegistrationID: "Dev-Case", SecondaryKey: NewKey()})
	scope := em.IDScope()
	sign := func(key, sr string, se int64, extra string) string {
		s := strconv.FormatInt(se, 10)
		sig, err := Sign(key, sr+"\n"+s)
		if err != nil {
			t.Fatal(err)
		}
		return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + s + extra
	}
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
	raw := scope + "/registrations/Dev-Case"
	for _, tc := range []struct {
		name string
		auth string
		want int
	}{
		{"aziot lower-cased", sign(en.PrimaryKey, "0ne00000001/registrations/dev-case", future, "&skn=registration"), 202},
		{"Node raw sr, skn before se", "SharedAccessSignature sr=" + raw + "&sig=" + url.QueryEscape(mustSign(t, en.PrimaryKey, raw+"\n"+strconv.FormatInt(future, 10))) + "&skn=registration&se=" + strconv.FormatInt(future, 10), 202},
		{"C SDK %2f lower hex", sign(en.PrimaryKey, url.PathEscape(scope)+"%2fregistrations%2fDev-Case", future, "&skn=registration"), 202},
		{"Python %2F, no skn", sign(en.PrimaryKey, url.QueryEscape(raw), future, ""), 202},
		{"secondary key", sign(en.SecondaryKey, raw, future, "&skn=registration"), 202},
		{"wrong key", sign(NewKey(), raw, future, "&skn=registration"), 401},
		{"expired", sign(en.PrimaryKey, raw, past, "&skn=registration"), 401},
		{"wrong skn", sign(en.PrimaryKey, raw, future, "&skn=iothubowner"), 401},
		{"other registration", sign(en.PrimaryKey, scope+"/registrations/other", future, ""), 401},
		{"other scope", sign(en.PrimaryKey, "0ne99999999/registrations/Dev-Case", future, ""), 401},
		{"signed differently than sent", "SharedAccessSignature sr=" + url.QueryEscape(raw) + "&sig=" + url.QueryEscape(mustSign(t, en.PrimaryKey, raw+"\n"+strconv.FormatInt(future, 10))) + "&se=" + strconv.FormatInt(future, 10), 401},
		{"no token", "", 401},
		{"garbage", "SharedAccessSignature sr=x", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, em.Client(), "PUT", regURL(em, "Dev-Case"), tc.auth, map[string]any{"registrationId": "Dev-Case"})
			if r.status != tc.want {
				t.Fatalf("%d, want %d: %s", r.status, tc.want, r.raw)
			}
			if r.status == 401 && (r.body["errorCode"] != float64(401002) || r.body["message"] == nil || r.body["trackingId"] == nil) {
				t.Fatalf("401 body %s", r.raw)
			}
			if r.status == 202 && (r.body["status"] != "assigning" || r.body["operationId"] == "" || r.header.Get("Retry-After") != "0") {
				t.Fatalf("202 %v %s", r.header, r.raw)
			}
		})
	}
}

func mustSign(t *testing.T, key, msg string) string {
	t.Helper()
	s, err := Sign(key, msg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestGroupEnrollment: devices of a group register with keys derived from
// the group key; the group key itself and another group's keys fail.
func TestGroupEnrollment(t *testing.T) {
	em := start(t, Options{})
	g, _ := em.AddGroupEnrollment(GroupEnrollment{Name: "fleet", Assignment: Assignment{IoTHub: "fleet-hub.example"}})
	other, _ := em.AddGroupEnrollment(GroupEnrollment{Name: "other"})
	// Vector: group key base64("group-key"), registration id "sensor-1".
	if k, _ := DeriveDeviceKey("Z3JvdXAta2V5", "sensor-1"); k != mustSign(t, "Z3JvdXAta2V5", "sensor-1") || len(k) != 44 {
		t.Fatalf("derived key %q", k)
	}
	c := em.Client()
	for _, id := range []string{"sensor-1", "sensor-2"} {
		k, _ := DeriveDeviceKey(g.PrimaryKey, id)
		r, _ := provision(t, em, c, id, dpsSAS(t, em, id, k), nil)
		if st := state(r); r.body["status"] != "assigned" || st["assignedHub"] != "fleet-hub.example" || st["deviceId"] != id {
			t.Fatalf("%s: %s", id, r.raw)
		}
	}
	k, _ := DeriveDeviceKey(other.PrimaryKey, "sensor-3")
	r, _ := provision(t, em, c, "sensor-3", dpsSAS(t, em, "sensor-3", k), nil)
	if r.body["status"] != "assigned" || state(r)["assignedHub"] != em.HubHostname() {
		t.Fatalf("other group: %s", r.raw)
	}
	for name, key := range map[string]string{"group key itself": g.PrimaryKey, "derived for another id": mustSign(t, g.PrimaryKey, "sensor-9")} {
		r := call(t, c, "PUT", regURL(em, "sensor-4"), dpsSAS(t, em, "sensor-4", key), map[string]any{"registrationId": "sensor-4"})
		if r.status != 401 {
			t.Errorf("%s: %d", name, r.status)
		}
	}
}

// TestDeferredAndPayload: assigning for N polls, then assigned with the
// payload echoed, set by the enrollment, or transformed by Allocate; a
// failing Allocate makes the registration failed.
func TestDeferredAndPayload(t *testing.T) {
	em := start(t, Options{RetryAfter: 1, AssignAfterPolls: 2, Allocate: func(a AllocationRequest) (Allocation, error) {
		if a.RegistrationID == "custom" {
			var p map[string]any
			json.Unmarshal(a.Payload, &p)
			out, _ := json.Marshal(map[string]any{"seen": p["model"], "by": "allocate"})
			return Allocation{IoTHub: "custom-hub.example", DeviceID: "custom-device", Payload: out}, nil
		}
		if a.RegistrationID == "refused" {
			return Allocation{}, errTest
		}
		return a.Default, nil
	}})
	c := em.Client()
	for _, tc := range []struct {
		id        string
		en        Assignment
		payload   any
		wantPolls int
		status    string
		want      string // JSON of registrationState.payload
		hub       string
	}{
		{"echo", Assignment{}, map[string]any{"model": "m1"}, 3, "assigned", `{"model":"m1"}`, ""},
		{"fixed", Assignment{Payload: json.RawMessage(`{"fixed":true}`), AssignAfterPolls: 4}, map[string]any{"x": 1}, 5, "assigned", `{"fixed":true}`, ""},
		{"none", Assignment{}, nil, 3, "assigned", ``, ""},
		{"custom", Assignment{}, map[string]any{"model": "m2"}, 3, "assigned", `{"by":"allocate","seen":"m2"}`, "custom-hub.example"},
		{"refused", Assignment{}, nil, 3, "failed", ``, ""},
	} {
		t.Run(tc.id, func(t *testing.T) {
			en, _ := em.AddSymmetricEnrollment(SymmetricEnrollment{RegistrationID: tc.id, Assignment: tc.en})
			r, polls := provision(t, em, c, tc.id, dpsSAS(t, em, tc.id, en.PrimaryKey), tc.payload)
			if polls != tc.wantPolls || r.body["status"] != tc.status || r.status != 200 {
				t.Fatalf("after %d polls: %d %s", polls, r.status, r.raw)
			}
			st := state(r)
			got := ""
			if st["payload"] != nil {
				b, _ := json.Marshal(st["payload"])
				got = string(b)
			}
			if got != tc.want {
				t.Errorf("payload %s, want %s", got, tc.want)
			}
			if tc.hub != "" && st["assignedHub"] != tc.hub {
				t.Errorf("hub %v", st["assignedHub"])
			}
			if tc.status == "failed" && (st["errorCode"] == nil || st["errorMessage"] == nil) {
				t.Errorf("failed state %s", r.raw)
			}
		})
	}
}

// TestPollChecks: a poll needs the registration's credentials and a known
// operation ID.
func TestPollChecks(t *testing.T) {
	em := start(t, Options{AssignAfterPolls: 5})
	en, _ := em.AddSymmetricEnrollment(SymmetricEnrollment{RegistrationID: "p"})
	c := em.Client()
	auth := dpsSAS(t, em, "p", en.PrimaryKey)
	r := call(t, c, "PUT", regURL(em, "p"), auth, map[string]any{"registrationId": "p"})
	op := r.body["operationId"].(string)
	for _, tc := range []struct {
		name, op, auth string
		want           int
	}{
		{"good", op, auth, 202},
		{"unknown operation", "4.nope", auth, 404},
		{"wrong key", op, dpsSAS(t, em, "p", NewKey()), 401},
		{"no auth", op, "", 401},
	} {
		if r := call(t, c, "GET", opURL(em, "p", tc.op), tc.auth, nil); r.status != tc.want {
			t.Errorf("%s: %d, want %d: %s", tc.name, r.status, tc.want, r.raw)
		}
	}
	if r := call(t, c, "PUT", em.URL()+"/"+em.IDScope()+"/registrations/p/register", auth, map[string]any{"registrationId": "p"}); r.status != 400 {
		t.Errorf("no api-version: %d", r.status)
	}
	if r := call(t, c, "PUT", regURL(em, "p"), auth, map[string]any{"registrationId": "q"}); r.status != 400 {
		t.Errorf("body registrationId mismatch: %d", r.status)
	}
}
