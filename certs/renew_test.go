package certs

import (
	"context"
	"math/big"
	"sync"
	"testing"
	"time"
)

// noExpiry is RFC 5280's notAfter for "no well-defined expiration date".
var noExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

func TestNextRenewal(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(100 * time.Minute)
	pct := func(th, re int) RenewalPolicy {
		return RenewalPolicy{Threshold: Period{Percent: th}, Retry: Period{Percent: re}}
	}
	fixed := RenewalPolicy{Threshold: Period{Duration: 10 * time.Minute}, Retry: Period{Duration: time.Minute}}
	cases := []struct {
		name      string
		p         RenewalPolicy
		nb, na    time.Time
		now       time.Time
		want      time.Time
		wantRetry time.Duration
	}{
		{"80% of the lifetime", pct(80, 4), nb, na, nb, nb.Add(80 * time.Minute), 4 * time.Minute},
		{"50%", pct(50, 10), nb, na, nb.Add(time.Minute), nb.Add(50 * time.Minute), 10 * time.Minute},
		{"fixed: notAfter - 10min", fixed, nb, na, nb, na.Add(-10 * time.Minute), time.Minute},
		{"past threshold: now + retry", pct(50, 10), nb, na, nb.Add(60 * time.Minute), nb.Add(70 * time.Minute), 10 * time.Minute},
		{"expired: now", pct(50, 10), nb, na, na.Add(time.Hour), na.Add(time.Hour), 10 * time.Minute},
		{"invalid (notBefore >= notAfter): now", pct(50, 10), na, nb, nb, nb, time.Second},
		{"retry at least one second", pct(50, 1), nb, nb.Add(10 * time.Second), nb, nb.Add(5 * time.Second), time.Second},
		{"2-minute cert, 50%", pct(50, 4), nb, nb.Add(2 * time.Minute), nb, nb.Add(time.Minute), 4800 * time.Millisecond},
		// Lifetimes whose nanoseconds times the percentage pass int64: a
		// 5-year certificate at 80% (renewed at once before), and RFC 5280's
		// 99991231235959Z "no expiry" date, whose lifetime saturates.
		{"5-year cert, 80%", pct(80, 4), nb, nb.AddDate(5, 0, 0), nb, nb.Add(nb.AddDate(5, 0, 0).Sub(nb) / 5 * 4), nb.AddDate(5, 0, 0).Sub(nb) / 25},
		{"no-expiry cert, 80%", pct(80, 4), nb, noExpiry, nb, nb.Add(7378697629483820645), 368934881474191032}, // ⌊(2^63−1)·0.8⌋, ⌊(2^63−1)·0.04⌋
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.NextRenewal(tc.nb, tc.na, tc.now); !got.Equal(tc.want) {
				t.Errorf("NextRenewal = %s, want %s", got, tc.want)
			}
			if got := tc.p.RetryPeriod(tc.nb, tc.na); got != tc.wantRetry {
				t.Errorf("RetryPeriod = %s, want %s", got, tc.wantRetry)
			}
		})
	}
}

// TestSchedulerOrder: jobs run in time order, rescheduling replaces, and
// removal drops a job.
func TestSchedulerOrder(t *testing.T) {
	s := NewScheduler(nil)
	now := time.Now()
	s.Schedule("c", now.Add(60*time.Millisecond))
	s.Schedule("a", now.Add(20*time.Millisecond))
	s.Schedule("b", now.Add(40*time.Millisecond))
	s.Schedule("gone", now.Add(10*time.Millisecond))
	s.Remove("gone")
	s.Schedule("d", now.Add(time.Hour))
	s.Schedule("d", now.Add(80*time.Millisecond)) // moved earlier
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		s.Run(ctx, func(_ context.Context, id string) {
			mu.Lock()
			got = append(got, id)
			n := len(got)
			mu.Unlock()
			if n == 4 {
				close(done)
			}
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("jobs did not run")
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"a", "b", "c", "d"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
	if ids := s.IDs(); len(ids) != 0 {
		t.Fatalf("left scheduled: %v", ids)
	}
}

// TestSchedulerReschedule: a job may reschedule itself (retry) and an
// earlier job added while waiting wakes the loop.
func TestSchedulerReschedule(t *testing.T) {
	s := NewScheduler(nil)
	s.Schedule("late", time.Now().Add(time.Hour))
	runs := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		n := 0
		s.Run(ctx, func(_ context.Context, id string) {
			runs <- id
			if id == "retry" && n < 2 {
				n++
				s.Schedule(id, time.Now().Add(5*time.Millisecond))
			}
		})
	}()
	s.Schedule("retry", time.Now())
	for i := 0; i < 3; i++ {
		select {
		case id := <-runs:
			if id != "retry" {
				t.Fatalf("run %q", id)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no run")
		}
	}
	if at, ok := s.Next("late"); !ok || time.Until(at) < 50*time.Minute {
		t.Fatalf("late job: %v %v", at, ok)
	}
	cancel()
	<-stopped
}

// TestPercentOf: pct% of any duration is ⌊d·pct/100⌋, exact over the
// whole int64 range (computed here with big integers).
func TestPercentOf(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 99, 100, 101, time.Hour, 5 * 365 * 24 * time.Hour, 1<<63 - 1, 1<<63 - 100} {
		for _, pct := range []int{0, 1, 4, 50, 80, 99, 100} {
			want := new(big.Int).Mul(big.NewInt(int64(d)), big.NewInt(int64(pct)))
			want.Quo(want, big.NewInt(100))
			if got := percentOf(d, pct); int64(got) != want.Int64() {
				t.Errorf("percentOf(%d, %d) = %d, want %s", d, pct, got, want)
			}
		}
	}
}

// TestSchedulerWallClockStep: renewal times are wall-clock times, timers
// run on the monotonic clock. A step of the wall clock (a device without a
// real-time clock whose time NTP sets after boot) or a suspend must not
// leave a due job waiting for the timer set before it.
func TestSchedulerWallClockStep(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := start
	s := NewScheduler(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	s.maxWait = 20 * time.Millisecond
	s.Schedule("renew", start.Add(time.Hour))
	runs := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, func(_ context.Context, id string) { runs <- id })
	time.Sleep(50 * time.Millisecond) // the loop is waiting for an hour
	mu.Lock()
	now = start.Add(2 * time.Hour) // the wall clock steps
	mu.Unlock()
	select {
	case <-runs:
	case <-time.After(5 * time.Second):
		t.Fatal("a job due after a wall-clock step did not run")
	}
}
