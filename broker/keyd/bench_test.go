package keyd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
)

// BenchmarkHandler measures keyd's handler in-process (no socket): body
// decoding, handle verification, the policy decision (every time, or
// reused from the decision cache), the key operation and the answer.
func BenchmarkHandler(b *testing.B) {
	for _, ttl := range []time.Duration{0, time.Second} {
		e := newEnvWith(b, Options{DecisionTTL: ttl}, nil)
		e.t = &testing.T{}
		kp := e.post("/keypair", `{"keyId":"b-ec"}`).field("keyHandle")
		key := e.post("/key", `{"keyId":"b-mac","usage":"sign","keyBytes":"`+strings.Repeat("A", 43)+`="}`).field("keyHandle")
		d := sha256.Sum256([]byte("x"))
		bodies := map[string]string{
			"ecdsa": jsonBody(map[string]any{"keyHandle": kp, "algorithm": "ECDSA", "parameters": map[string]any{"digest": d[:]}}),
			"hmac":  jsonBody(map[string]any{"keyHandle": key, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": []byte("message")}}),
		}
		for _, name := range []string{"ecdsa", "hmac"} {
			b.Run(fmt.Sprintf("%s/decision-ttl=%v", name, ttl), func(b *testing.B) {
				ctx := api.WithPeer(context.Background(), api.Peer{UID: 0, PID: 1})
				body := []byte(bodies[name])
				b.ReportAllocs()
				for b.Loop() {
					r := httptest.NewRequest(http.MethodPost, "/sign?api-version=2021-05-01", bytes.NewReader(body)).WithContext(ctx)
					r.Header.Set("Content-Type", "application/json")
					w := httptest.NewRecorder()
					e.h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						var m map[string]string
						json.Unmarshal(w.Body.Bytes(), &m)
						b.Fatalf("status %d: %v", w.Code, m)
					}
				}
			})
		}
	}
}
