package tunnel

import (
	"strconv"
	"testing"
	"time"
)

func TestWarnLimiterOnePerKeyPerPeriod(t *testing.T) {
	l := newWarnLimiter(time.Minute)
	t0 := time.Unix(1000, 0)
	if ok, _ := l.allow("a", t0); !ok {
		t.Fatal("first warning for a held back")
	}
	for i := range 10000 {
		if ok, _ := l.allow("a", t0.Add(time.Duration(i)*time.Millisecond)); ok {
			t.Fatalf("warning %d for a let through within the period", i)
		}
	}
	if ok, _ := l.allow("b", t0); !ok {
		t.Fatal("another source is held back by the first")
	}
	ok, held := l.allow("a", t0.Add(time.Minute))
	if !ok || held != 10000 {
		t.Fatalf("after the period: ok=%v held=%d, want true 10000", ok, held)
	}
}

func TestWarnLimiterBoundedUnderManySources(t *testing.T) {
	l := newWarnLimiter(time.Minute)
	t0 := time.Unix(1000, 0)
	let := 0
	for i := range 3 * warnLimiterMax {
		if ok, _ := l.allow("10.0.0."+strconv.Itoa(i), t0); ok {
			let++
		}
	}
	if len(l.last) > warnLimiterMax+1 {
		t.Fatalf("limiter remembers %d sources, bound %d", len(l.last), warnLimiterMax+1)
	}
	if let > warnLimiterMax+1 {
		t.Fatalf("%d warnings let through for %d sources in one period, want at most %d", let, 3*warnLimiterMax, warnLimiterMax+1)
	}
}
