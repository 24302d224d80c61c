package certs

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Period is a renewal threshold or retry period as aziot's cert-renewal
// crate has them: a share of the certificate's lifetime (Percent, 1–99) or
// a fixed time (Duration). Exactly one is set.
type Period struct {
	Percent  int
	Duration time.Duration
}

// RenewalPolicy says when a certificate is renewed and how failures retry.
type RenewalPolicy struct {
	// Threshold: renew when this share of the lifetime has passed, or this
	// long before notAfter.
	Threshold Period
	// Retry is the wait after a failed renewal.
	Retry Period
	// RotateKey renews with a new key pair.
	RotateKey bool
}

// DefaultRenewalPolicy is aziot's default: 80%, retry 4%, rotate the key.
var DefaultRenewalPolicy = RenewalPolicy{Threshold: Period{Percent: 80}, Retry: Period{Percent: 4}, RotateKey: true}

// RetryPeriod is how long to wait after a failed renewal of a certificate
// valid from notBefore to notAfter: retry% of the lifetime (at least one
// second) or the fixed period.
func (p RenewalPolicy) RetryPeriod(notBefore, notAfter time.Time) time.Duration {
	if p.Retry.Percent == 0 {
		if p.Retry.Duration <= 0 {
			return time.Second
		}
		return p.Retry.Duration
	}
	d := percentOf(notAfter.Sub(notBefore), p.Retry.Percent)
	if d < time.Second {
		d = time.Second
	}
	return d
}

// percentOf is pct% (0–100) of d. Multiplying first would overflow for
// any lifetime past ~3.6 years at 80% (2^63 ns is ~292 years), wrapping to
// a renewal date in the past.
func percentOf(d time.Duration, pct int) time.Duration {
	p := time.Duration(pct)
	return d/100*p + d%100*p/100
}

// NextRenewal is when to renew a certificate valid from notBefore to
// notAfter, seen at now: notBefore + threshold% of the lifetime, or
// notAfter − the fixed threshold. A time already past is moved to now plus
// one retry period; an expired or invalid (notBefore ≥ notAfter)
// certificate renews now.
func (p RenewalPolicy) NextRenewal(notBefore, notAfter, now time.Time) time.Time {
	if !notBefore.Before(notAfter) || !now.Before(notAfter) {
		return now
	}
	var at time.Time
	if p.Threshold.Percent != 0 {
		at = notBefore.Add(percentOf(notAfter.Sub(notBefore), p.Threshold.Percent))
	} else {
		at = notAfter.Add(-p.Threshold.Duration)
	}
	if !at.After(now) {
		return now.Add(p.RetryPeriod(notBefore, notAfter))
	}
	return at
}

// maxTimerWait is the longest the scheduler sleeps before it looks at the
// clock again. Renewal times are wall-clock times (from notBefore and
// notAfter) while timers run on the monotonic clock, which follows neither
// a step of the wall clock (a device without a real-time clock whose time
// NTP sets after boot) nor a suspend.
const maxTimerWait = time.Minute

// Scheduler runs renewals at their times: a min-heap of (time, ID) drives a
// single timer. It is safe for concurrent use; Run executes due jobs one at
// a time, in time order.
type Scheduler struct {
	mu   sync.Mutex
	h    entryHeap
	byID map[string]*entry
	wake chan struct{}
	now  func() time.Time
	// maxWait is maxTimerWait (tests shorten it).
	maxWait time.Duration
}

type entry struct {
	id    string
	at    time.Time
	index int
}

// NewScheduler returns an empty scheduler; now may be nil (time.Now).
func NewScheduler(now func() time.Time) *Scheduler {
	if now == nil {
		now = time.Now
	}
	return &Scheduler{
		byID:    map[string]*entry{},
		wake:    make(chan struct{}, 1),
		now:     now,
		maxWait: maxTimerWait,
	}
}

// Schedule sets the time of id's next run, replacing any earlier one.
func (s *Scheduler) Schedule(id string, at time.Time) {
	s.mu.Lock()
	if e, ok := s.byID[id]; ok {
		e.at = at
		heap.Fix(&s.h, e.index)
	} else {
		e := &entry{id: id, at: at}
		heap.Push(&s.h, e)
		s.byID[id] = e
	}
	s.mu.Unlock()
	s.poke()
}

// Remove drops id; a job already running finishes.
func (s *Scheduler) Remove(id string) {
	s.mu.Lock()
	if e, ok := s.byID[id]; ok {
		heap.Remove(&s.h, e.index)
		delete(s.byID, id)
	}
	s.mu.Unlock()
	s.poke()
}

// Next returns the time of id's next run.
func (s *Scheduler) Next(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byID[id]; ok {
		return e.at, true
	}
	return time.Time{}, false
}

// IDs returns the scheduled IDs.
func (s *Scheduler) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byID))
	for id := range s.byID {
		out = append(out, id)
	}
	return out
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run calls run(ctx, id) for each ID when its time comes, removing it from
// the schedule first (run reschedules it as it sees fit), until ctx is done.
func (s *Scheduler) Run(ctx context.Context, run func(ctx context.Context, id string)) {
	for {
		s.mu.Lock()
		var due string
		wait := time.Duration(-1)
		if len(s.h) > 0 {
			top := s.h[0]
			if d := top.at.Sub(s.now()); d <= 0 {
				due = top.id
				heap.Pop(&s.h)
				delete(s.byID, due)
			} else {
				wait = d
			}
		}
		s.mu.Unlock()
		if due != "" {
			run(ctx, due)
			if ctx.Err() != nil {
				return
			}
			continue
		}
		var timer <-chan time.Time
		stop := func() bool { return false }
		if wait >= 0 {
			t := time.NewTimer(min(wait, s.maxWait))
			timer, stop = t.C, t.Stop
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-s.wake:
			stop()
		case <-timer:
		}
	}
}

// entryHeap orders entries by time (container/heap.Interface).
type entryHeap []*entry

// Len, Less, Swap, Push and Pop implement heap.Interface.

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
