package broker

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/warden-iot/warden/broker/config"
)

// logBuffer collects a logger's output.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReloadWarnsOfRestartSettings: a reload that changes a [warden]
// setting it does not apply says so, the decision log and the socket group
// included. Before, those changes were dropped without a word: an operator
// who turned the decision log on by SIGHUP had no log and no warning.
func TestReloadWarnsOfRestartSettings(t *testing.T) {
	cfg, dir := testConfig(t, "")
	var logs logBuffer
	b, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	for _, c := range []struct {
		name   string
		change func(w *config.Warden)
	}{
		{"decision_log", func(w *config.Warden) { w.Policy.DecisionLog = filepath.Join(dir, "decisions.log") }},
		{"decision_log_fail_closed", func(w *config.Warden) { w.Policy.DecisionLogFailClosed = true }},
		{"socket_group", func(w *config.Warden) { w.SocketGroup = "0" }},
		{"max_ttl", func(w *config.Warden) { w.Tokens.MaxTTL.Duration *= 2 }},
	} {
		next := *cfg
		c.change(&next.Warden)
		before := len(logs.String())
		if err := b.Reload(context.Background(), &next); err != nil {
			t.Fatal(err)
		}
		if out := logs.String()[before:]; !strings.Contains(out, "level=WARN") || !strings.Contains(out, "next restart") {
			t.Errorf("%s changed: no warning in\n%s", c.name, out)
		}
	}
	// A reload that changes none of them does not warn.
	before := len(logs.String())
	if err := b.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if out := logs.String()[before:]; strings.Contains(out, "level=WARN") {
		t.Errorf("unchanged configuration: %s", out)
	}
}
