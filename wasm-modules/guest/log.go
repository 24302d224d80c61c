package guest

import (
	"context"
	"log/slog"
	"strings"
)

// Log writes one structured log line through the host (log): args are
// slog-style key/value pairs or slog.Attrs. A failure to log is ignored.
func Log(ctx context.Context, level slog.Level, msg string, args ...any) {
	Logger(ctx).Log(ctx, level, msg, args...)
}

// Logger returns a *slog.Logger whose lines go to the host's log (one log
// host call per line), tagged there with the module's name and digest.
// Groups become dotted key prefixes.
func Logger(ctx context.Context) *slog.Logger {
	return slog.New(&hostHandler{caller: callerFrom(ctx)})
}

type hostHandler struct {
	caller Caller
	attrs  []slog.Attr
	prefix string
}

// Enabled lets every level through: the host's log level filters.
func (h *hostHandler) Enabled(context.Context, slog.Level) bool { return true }

// Handle sends r as one log host call.
func (h *hostHandler) Handle(ctx context.Context, r slog.Record) error {
	req := LogRequest{Level: levelName(r.Level), Msg: r.Message}
	if len(h.attrs) > 0 || r.NumAttrs() > 0 {
		req.Attrs = make(map[string]any, len(h.attrs)+r.NumAttrs())
		for _, a := range h.attrs {
			addAttr(req.Attrs, "", a)
		}
		r.Attrs(func(a slog.Attr) bool {
			addAttr(req.Attrs, h.prefix, a)
			return true
		})
	}
	// The caller is the handler's, so a logger made under Invoke keeps
	// logging to the same host.
	_ = Call(WithCaller(ctx, h.caller), OpLog, &req, nil)
	return nil
}

// WithAttrs returns a handler that adds as to every line.
func (h *hostHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := &hostHandler{caller: h.caller, prefix: h.prefix, attrs: append([]slog.Attr(nil), h.attrs...)}
	for _, a := range as {
		if h.prefix != "" {
			a.Key = h.prefix + a.Key
		}
		n.attrs = append(n.attrs, a)
	}
	return n
}

// WithGroup returns a handler that prefixes later keys with name and a dot.
func (h *hostHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &hostHandler{caller: h.caller, attrs: h.attrs, prefix: h.prefix + name + "."}
}

func addAttr(m map[string]any, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			addAttr(m, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	switch v.Kind() {
	case slog.KindDuration:
		m[prefix+a.Key] = v.Duration().String()
	case slog.KindTime:
		m[prefix+a.Key] = v.Time().UTC().Format("2006-01-02T15:04:05.000Z07:00")
	default:
		if err, ok := v.Any().(error); ok {
			m[prefix+a.Key] = err.Error()
			return
		}
		m[prefix+a.Key] = v.Any()
	}
}

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}

// ParseLevel is the inverse of the level names of LogRequest ("" is info).
func ParseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
