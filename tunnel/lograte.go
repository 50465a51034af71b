package tunnel

import (
	"log/slog"
	"sync"
	"time"
)

// warnEvery is how often one source may put the same kind of warning in the
// log: a misconfigured peer, or someone flooding the port with junk, must not
// be able to fill the disk.
const warnEvery = time.Minute

// warnLimiterMax bounds how many sources a limiter remembers. Past it, new
// sources are folded into one shared key, so a flood from many addresses
// still writes at most one line per period for all of them together.
const warnLimiterMax = 4096

// warnLimiter lets one warning per key through per period. Its zero value
// is not usable; see newWarnLimiter.
type warnLimiter struct {
	period time.Duration
	mu     sync.Mutex
	last   map[string]time.Time
	// suppressed counts, per key, the warnings held back since the last one
	// let through, so the next line can say how many were dropped.
	suppressed map[string]uint64
	// swept is when full maps were last swept: at most once a second, so
	// that a flood from many addresses costs no map walk per packet.
	swept time.Time
}

func newWarnLimiter(period time.Duration) *warnLimiter {
	return &warnLimiter{period: period, last: make(map[string]time.Time), suppressed: make(map[string]uint64)}
}

// overflowKey stands for every source the limiter had no room for.
const overflowKey = "\x00others"

// allow reports whether a warning for key may be logged at now and, if so,
// how many warnings for key were held back since the last one logged.
func (l *warnLimiter) allow(key string, now time.Time) (ok bool, held uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, known := l.last[key]; !known && len(l.last) >= warnLimiterMax {
		if now.Sub(l.swept) >= time.Second {
			l.swept = now
			l.expire(now)
		}
		if len(l.last) >= warnLimiterMax {
			key = overflowKey
		}
	}
	if t, seen := l.last[key]; seen && now.Sub(t) < l.period {
		l.suppressed[key]++
		return false, 0
	}
	l.last[key] = now
	held = l.suppressed[key]
	delete(l.suppressed, key)
	return true, held
}

// warn logs msg at Warn if allow lets key through now, with the count of
// warnings held back since the last one as held_back.
func (l *warnLimiter) warn(log *slog.Logger, key, msg string, args ...any) {
	ok, held := l.allow(key, time.Now())
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "held_back", held)
	}
	log.Warn(msg, args...)
}

// expire forgets keys whose period has passed (and what they held back).
func (l *warnLimiter) expire(now time.Time) {
	for k, t := range l.last {
		if now.Sub(t) >= l.period {
			delete(l.last, k)
			delete(l.suppressed, k)
		}
	}
}
