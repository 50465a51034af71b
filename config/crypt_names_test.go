package config_test

import (
	"slices"
	"testing"

	"github.com/smuxtun/smuxtun/config"
	"github.com/smuxtun/smuxtun/crypt"
)

// config keeps its own copy of the cipher names to stay free of kcp-go; this
// test fails as soon as the two lists drift apart.
func TestCiphersMatchCrypt(t *testing.T) {
	if got, want := config.Ciphers(), crypt.Names(); !slices.Equal(got, want) {
		t.Fatalf("config.Ciphers() = %v, crypt.Names() = %v", got, want)
	}
}
