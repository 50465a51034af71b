package tunnel

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/smuxtun/smuxtun/config"
)

// TestDualListener: --tcp's server listener hands out the sessions of both
// its halves, and closes both, once, whichever way it ends.
func TestDualListener(t *testing.T) {
	listen := func() net.Listener {
		t.Helper()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a, b := listen(), listen()
	d := newDualListener(a, b)
	if d.Addr() != a.Addr() {
		t.Errorf("Addr %v, want the first listener's %v", d.Addr(), a.Addr())
	}
	for _, l := range []net.Listener{a, b} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, err := d.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got.LocalAddr().String() != l.Addr().String() {
			t.Errorf("accepted on %v, want %v", got.LocalAddr(), l.Addr())
		}
		got.Close()
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	if _, err := d.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := net.DialTimeout("tcp", b.Addr().String(), time.Second); err == nil {
		t.Error("the second listener still accepts after Close")
	}

	// One half failing ends the whole.
	a, b = listen(), listen()
	d = newDualListener(a, b)
	b.Close()
	if _, err := d.Accept(); err == nil {
		t.Fatal("Accept after a half failed: no error")
	}
	if _, err := net.DialTimeout("tcp", a.Addr().String(), time.Second); err == nil {
		t.Error("the other half still accepts after one failed")
	}
	d.Close()
}

// TestCheckPrivileges: only --tcp asks for anything, and what it asks for
// is named.
func TestCheckPrivileges(t *testing.T) {
	var c config.Common
	if err := CheckPrivileges(c); err != nil {
		t.Errorf("without --tcp: %v", err)
	}
	c.TCP = true
	err := CheckPrivileges(c)
	if err != nil && !errors.Is(err, ErrRawTCPPrivilege) && !errors.Is(err, ErrRawTCPPlatform) {
		t.Errorf("with --tcp: %v, want nil, ErrRawTCPPrivilege or ErrRawTCPPlatform", err)
	}
	t.Logf("with --tcp here: %v", err)
}
