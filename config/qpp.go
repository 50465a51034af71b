package config

import "fmt"

// kcptun's Quantum Permutation Pads (--QPP, --QPPCount): every stream's bytes
// go through one of QPPCount byte permutations ("pads") built from the key,
// chosen by a pseudo-random sequence seeded from the key. The pads cost
// memory and start-up time in proportion to their count, and kcptun's
// advice on the count is a warning, not a rule, so only a count that cannot
// work is refused.

// MinSecureQPPCount is the fewest pads that can hold all the entropy of a
// permutation of 256 byte values (log2(256!) bits, 32 bytes of seed per
// pad): qpp.QPPMinimumPads(8), which kcptun warns below.
const MinSecureQPPCount = 7

// qppCountHint explains the range of qpp-count when QPP is on.
const qppCountHint = " pads (each takes 512 bytes of memory and about 0.1 ms to build at start-up)"

// QPPWarnings returns kcptun's advice about the QPP settings, one line each,
// for a configuration that Validate accepted; nil if QPP is off or there is
// nothing to say. The advice never stops the tunnel: the count must equal
// the peer's, so a kcptun deployment with a count kcptun only warns about
// has to keep working when one side switches to smuxtun.
func (s *Common) QPPWarnings() []string {
	if !s.QPP {
		return nil
	}
	var out []string
	if s.QPPCount < MinSecureQPPCount {
		out = append(out, fmt.Sprintf("QPPCount %d is below %d: so few pads cannot use all of the key's entropy (change it on both ends at once, they must match)",
			s.QPPCount, MinSecureQPPCount))
	}
	if !isPrime(s.QPPCount) {
		out = append(out, fmt.Sprintf("QPPCount %d is not a prime number: kcptun asks for a prime count of pads, e.g. the default 61 (change it on both ends at once, they must match)",
			s.QPPCount))
	}
	return out
}

// isPrime reports whether n is a prime number; n is at most MaxQPPCount, so
// trial division is quick.
func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
