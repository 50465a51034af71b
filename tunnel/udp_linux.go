package tunnel

import "syscall"

// peekSize waits for the next datagram on rc and returns its length without
// taking it (Linux reports the whole length with MSG_TRUNC), so the reader
// can take a buffer of the right size; -1 if it cannot tell.
func peekSize(rc syscall.RawConn) (int, error) {
	var (
		n    int
		serr error
		one  [1]byte
	)
	err := rc.Read(func(fd uintptr) bool {
		n, _, serr = syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_TRUNC)
		return serr != syscall.EAGAIN && serr != syscall.EINTR
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return n, nil
}
