//go:build !linux

package tunnel

// checkRawTCP fails: tcpraw works on Linux only.
func checkRawTCP() error { return ErrRawTCPPlatform }

// rawTCPRuleProblem is never reached: checkRawTCP fails first.
func rawTCPRuleProblem() string { return "" }
