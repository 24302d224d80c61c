package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DecisionLogOptions configure a DecisionLog.
type DecisionLogOptions struct {
	// BufferSize is how many entries may wait to be written; when it is
	// full, Record blocks until the writer catches up (back-pressure).
	// Default 4096.
	BufferSize int
	// FailClosed makes Record return an error while the last write failed,
	// so that the broker refuses the request. Otherwise write errors are
	// logged and the lines dropped.
	FailClosed bool
	// FlushInterval is how long a batch may wait for more entries before
	// it is written. 0 (the default) writes as soon as the queue is empty.
	FlushInterval time.Duration
	// Logger receives write errors; nil means slog.Default().
	Logger *slog.Logger
}

// DecisionEntry is one line of the decision log. It holds no secret: the
// token's id but never the token, and the keys of action.details but never
// their values.
type DecisionEntry struct {
	Time      time.Time    `json:"time"`               // when the decision was made (UTC)
	Caller    Caller       `json:"caller"`             // the peer: uid, gid, pid, exe, principal
	TokenID   string       `json:"token_id,omitempty"` // the capability token's id (jti), "" without a token
	Action    LoggedAction `json:"action"`             // what was asked, details reduced to their keys
	Module    *Module      `json:"module,omitempty"`   // the WASM module of a host call, or nil
	Result    string       `json:"result"`             // "allow" or "deny"
	Reasons   []string     `json:"reasons"`            // the decision's reasons
	Revision  string       `json:"revision"`           // the policy revision that decided
	LatencyUS int64        `json:"latency_us"`         // time to decide, microseconds
	// Error is set when no decision could be made (the request was denied).
	Error string `json:"error,omitempty"`
}

// LoggedAction is the action of a DecisionEntry: details reduced to their keys.
type LoggedAction struct {
	Service     string   `json:"service"`                // Action.Service
	Operation   string   `json:"operation"`              // Action.Operation
	Resource    string   `json:"resource"`               // Action.Resource
	APIVersion  string   `json:"api_version"`            // Action.APIVersion
	DetailsKeys []string `json:"details_keys,omitempty"` // the keys of Action.Details, sorted; never the values
}

// NewDecisionEntry builds the log entry of one decision.
func NewDecisionEntry(in *Input, d Decision, latency time.Duration, err error) DecisionEntry {
	e := DecisionEntry{
		Time:      time.Now().UTC(),
		Result:    "deny",
		Reasons:   d.Reasons,
		Revision:  d.Revision,
		LatencyUS: latency.Microseconds(),
	}
	if d.Allow {
		e.Result = "allow"
	}
	if err != nil {
		e.Error = err.Error()
	}
	if in == nil {
		return e
	}
	e.Caller = in.Caller
	if in.Token != nil {
		e.TokenID = in.Token.ID
	}
	e.Module = in.Module
	e.Action = LoggedAction{
		Service:    in.Action.Service,
		Operation:  in.Action.Operation,
		Resource:   in.Action.Resource,
		APIVersion: in.Action.APIVersion,
	}
	if len(in.Action.Details) > 0 {
		keys := make([]string, 0, len(in.Action.Details))
		for k := range in.Action.Details {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		e.Action.DetailsKeys = keys
	}
	return e
}

// ErrDecisionLogClosed is returned by Record after Close (fail-closed logs).
var ErrDecisionLogClosed = errors.New("decision log closed")

// maxBatchBytes bounds one write.
const maxBatchBytes = 256 << 10

// DecisionLog writes decision entries as JSON lines without serialising the
// requests that record them: Record encodes in the caller's goroutine and
// enqueues on a bounded channel; one goroutine writes what is queued as one
// batch per write. It is safe for concurrent use.
type DecisionLog struct {
	w          io.Writer
	closer     io.Closer // the file opened by OpenDecisionLog, else nil
	failClosed bool
	interval   time.Duration
	log        *slog.Logger

	ch       chan []byte
	mu       sync.RWMutex // guards closed against in-flight Records
	closed   bool
	inflight sync.WaitGroup
	done     chan struct{} // closed when the writer goroutine exits

	lastErr   atomic.Pointer[error] // non-nil while the last write failed
	closeOnce sync.Once
	closeErr  error
}

// NewDecisionLog starts a decision log writing to w. Close it to flush.
func NewDecisionLog(w io.Writer, opts DecisionLogOptions) *DecisionLog {
	if opts.BufferSize <= 0 {
		opts.BufferSize = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &DecisionLog{
		w:          w,
		failClosed: opts.FailClosed,
		interval:   opts.FlushInterval,
		log:        opts.Logger,
		ch:         make(chan []byte, opts.BufferSize),
		done:       make(chan struct{}),
	}
	go l.run()
	return l
}

// OpenDecisionLog opens (creating it 0600) the file at path for appending
// and starts a decision log on it; Close closes the file.
func OpenDecisionLog(path string, opts DecisionLogOptions) (*DecisionLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open decision log: %w", err)
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().Perm()&0o077 != 0 {
		l := opts.Logger
		if l == nil {
			l = slog.Default()
		}
		l.Warn("decision log is readable or writable by others than its owner", "path", path, "mode", fi.Mode().Perm().String())
	}
	l := NewDecisionLog(f, opts)
	l.closer = f
	return l, nil
}

// Err returns the error of the last write, or nil when it succeeded.
func (l *DecisionLog) Err() error {
	if p := l.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Record enqueues e, blocking while the buffer is full. A fail-closed log
// whose last write failed still enqueues e, marked denied, and returns an
// error: the broker must then refuse the request. A fail-open log never
// returns an error (problems are logged).
func (l *DecisionLog) Record(e DecisionEntry) error {
	failing := l.Err()
	if failing != nil && l.failClosed {
		e.Result = "deny"
		e.Reasons = append(slices.Clip(e.Reasons), "denied: "+ErrDecisionLog.Error())
	}
	line, err := json.Marshal(&e)
	if err != nil {
		return l.fail(fmt.Errorf("decision log: encode entry: %w", err))
	}
	line = append(line, '\n')
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		return l.fail(ErrDecisionLogClosed)
	}
	l.inflight.Add(1)
	l.mu.RUnlock()
	l.ch <- line
	l.inflight.Done()
	if failing != nil && l.failClosed {
		return fmt.Errorf("decision log: last write failed: %w", failing)
	}
	return nil
}

// fail returns err for a fail-closed log; a fail-open one logs it.
func (l *DecisionLog) fail(err error) error {
	if l.failClosed {
		return err
	}
	l.log.Warn("decision log entry dropped", "err", err)
	return nil
}

// Close stops accepting entries, writes those queued, closes the file
// opened by OpenDecisionLog and returns the last write error, if any.
func (l *DecisionLog) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.inflight.Wait() // no Record is between its check and its send
		close(l.ch)
		<-l.done
		err := l.Err()
		if err != nil {
			err = fmt.Errorf("decision log: last write failed: %w", err)
		}
		if l.closer != nil {
			if cerr := l.closer.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("close decision log: %w", cerr))
			}
		}
		l.closeErr = err
	})
	return l.closeErr
}

// run is the writer: it takes what is queued (waiting up to the flush
// interval for more) and writes it in one call.
func (l *DecisionLog) run() {
	defer close(l.done)
	buf := make([]byte, 0, 64<<10)
	var timer *time.Timer
	for {
		line, ok := <-l.ch
		if !ok {
			return
		}
		buf = append(buf[:0], line...)
		n := 1
		var expired <-chan time.Time
		if l.interval > 0 {
			if timer == nil {
				timer = time.NewTimer(l.interval)
			} else {
				timer.Reset(l.interval)
			}
			expired = timer.C
		}
	gather:
		for len(buf) < maxBatchBytes {
			select {
			case line, ok = <-l.ch:
				if !ok {
					break gather
				}
				buf = append(buf, line...)
				n++
				continue
			default:
			}
			if expired == nil {
				break gather
			}
			select {
			case line, ok = <-l.ch:
				if !ok {
					break gather
				}
				buf = append(buf, line...)
				n++
			case <-expired:
				expired = nil
				break gather
			}
		}
		if timer != nil && expired != nil {
			timer.Stop()
		}
		l.write(buf, n)
		if !ok {
			return
		}
	}
}

func (l *DecisionLog) write(buf []byte, n int) {
	_, err := l.w.Write(buf)
	if err != nil {
		if l.lastErr.Swap(&err) == nil {
			l.log.Error("decision log write failed", "err", err, "lines_lost", n, "fail_closed", l.failClosed)
		} else {
			l.log.Debug("decision log write failed again", "err", err, "lines_lost", n)
		}
		return
	}
	if prev := l.lastErr.Swap(nil); prev != nil {
		l.log.Info("decision log writes succeed again", "previous_err", *prev)
	}
}
