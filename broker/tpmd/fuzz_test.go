package tpmd

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/api/apitest"
)

// tpmdRoutes are T1–T3; T1 reads no body but gets one all the same.
var tpmdRoutes = []struct{ method, target string }{
	{"GET", "/get_tpm_keys" + v},
	{"POST", "/import_auth_key" + v},
	{"POST", "/sign_with_auth_key" + v},
}

// tpmdContentTypes: the body is JSON when Content-Type is absent or
// application/json (parameters allowed) and ignored otherwise.
var tpmdContentTypes = []string{"application/json", "", "application/json; charset=utf-8", "text/plain", "application/json;;"}

// FuzzTpmdRequest sends arbitrary bodies, with each kind of Content-Type,
// to T1–T3 in-process over a fake TPM that always succeeds (so every body
// the decoder accepts reaches the TPM call): never a panic, never a 5xx,
// and every error is aziot's {"message": "…"} with a 4xx status.
func FuzzTpmdRequest(f *testing.F) {
	fake := &fakeTPM{ek: []byte("ek"), srk: []byte("srk"), mac: []byte("mac")}
	e := newEnv(f, func(g *api.Guard, l *slog.Logger) *Server { return NewWithTPM(fake, g, slog.New(slog.DiscardHandler)) })
	seeds := []struct {
		route, ct int
		body      string
	}{
		{0, 0, ``},
		{0, 0, `{"key":"AA=="}`},
		{1, 0, `{"key":"` + b64([]byte("blob")) + `"}`},
		{1, 2, `{"key":""}`},
		{1, 0, `{"key":null}`},
		{1, 0, `{"key":"!!"}`},
		{1, 0, `{"key":"AA="}`},
		{1, 0, `{"key":["AA=="]}`},
		{1, 3, `{"key":"AA=="}`},
		{1, 4, `{"key":"AA=="}`},
		{2, 0, `{"data":"` + b64([]byte("sr\nse")) + `"}`},
		{2, 0, `{"data":"AA==","data":7}`},
		{2, 0, `{"digest":"AA=="}`},
		{2, 1, `{"data":"A\u0000=="}`},
		{2, 0, "{\"data\":\"AA==\"}\x00"},
		{2, 0, `{"data":"AA=="} {}`},
		{2, 0, `[]`}, {2, 0, `null`}, {2, 0, `"x"`}, {2, 0, `{`}, {2, 0, ``}, {2, 0, `1e999`},
	}
	for _, s := range seeds {
		f.Add(uint8(s.route+len(tpmdRoutes)*s.ct), s.body)
	}
	f.Fuzz(func(t *testing.T, sel uint8, body string) {
		rt := tpmdRoutes[int(sel)%len(tpmdRoutes)]
		ct := tpmdContentTypes[int(sel)/len(tpmdRoutes)%len(tpmdContentTypes)]
		what := rt.method + " " + rt.target + " " + strconv.Quote(body) + " as " + strconv.Quote(ct)
		// A hung call would only stall the fuzzer; a panic ends the worker
		// and the input is kept as a crasher.
		defer time.AfterFunc(30*time.Second, func() { panic("no answer in 30s: " + what) }).Stop()
		status, answer := e.do(rt.method, rt.target, body, "Content-Type", ct)
		apitest.CheckAnswer(t, what, status, answer)
	})
}
