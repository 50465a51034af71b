// Package crypt turns a kcptun cipher name and passphrase into the packet
// cipher kcp-go uses, deriving and slicing the key exactly as kcptun does so
// that both ends of a mixed kcptun/smuxtun deployment agree on every byte.
//
// It also provides Stream, the authenticated encryption (AES-256-GCM, keys
// from DeriveKey and per-connection salts) of smuxtun's own TCP transport,
// which kcptun does not have; see stream.go for its wire format.
package crypt

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"errors"
	"fmt"
	"strings"

	kcp "github.com/xtaci/kcp-go/v5"
)

// Parameters of kcptun's passphrase stretching; changing any of them breaks
// interoperability with every deployed kcptun peer.
const (
	salt       = "kcp-go"
	iterations = 4096
	keyLen     = 32
)

// ErrUnknownCipher is returned by New for a name that is not in Names.
var ErrUnknownCipher = errors.New("unknown cipher")

// method describes one cipher: how many leading bytes of the derived key it
// takes (0 means the whole key) and the kcp-go constructor that builds it.
type method struct {
	keySize int
	build   func(key []byte) (kcp.BlockCrypt, error)
}

// methods is keyed by the names kcptun accepts on its --crypt flag.
var methods = map[string]method{
	"aes":         {32, kcp.NewAESBlockCrypt},
	"aes-128":     {16, kcp.NewAESBlockCrypt},
	"aes-192":     {24, kcp.NewAESBlockCrypt},
	"aes-128-gcm": {16, kcp.NewAESGCMCrypt},
	"salsa20":     {32, kcp.NewSalsa20BlockCrypt},
	"blowfish":    {32, kcp.NewBlowfishBlockCrypt},
	"twofish":     {32, kcp.NewTwofishBlockCrypt},
	"cast5":       {16, kcp.NewCast5BlockCrypt},
	"3des":        {24, kcp.NewTripleDESBlockCrypt},
	"tea":         {16, kcp.NewTEABlockCrypt},
	"xtea":        {16, kcp.NewXTEABlockCrypt},
	"sm4":         {16, kcp.NewSM4BlockCrypt},
	"xor":         {32, kcp.NewSimpleXORBlockCrypt},
	"none":        {32, kcp.NewNoneBlockCrypt},
	"null":        {0, nil},
}

// names lists the ciphers in the order they are documented.
var names = []string{
	"aes", "aes-128", "aes-192", "aes-128-gcm", "salsa20", "blowfish", "twofish",
	"cast5", "3des", "tea", "xtea", "sm4", "xor", "none", "null",
}

// Names returns every cipher name New accepts. The caller owns the slice.
func Names() []string {
	return append([]string(nil), names...)
}

// Valid reports whether name is a cipher New accepts.
func Valid(name string) bool {
	_, ok := methods[name]
	return ok
}

// DeriveKey stretches a passphrase into the 32-byte key kcptun uses:
// PBKDF2-HMAC-SHA1 with salt "kcp-go" and 4096 iterations.
func DeriveKey(pass string) []byte {
	key, err := pbkdf2.Key(sha1.New, pass, []byte(salt), iterations, keyLen)
	if err != nil {
		// Only reachable in FIPS-140 only mode, where SHA-1 key derivation
		// is forbidden; kcptun's wire format cannot be produced there.
		panic(fmt.Sprintf("crypt: pbkdf2: %v", err))
	}
	return key
}

// New returns the kcp.BlockCrypt for a kcptun cipher name, keyed from pass.
// "null" yields (nil, nil): kcp-go then sends packets with no crypto header at
// all, which is different from "none" (header present, payload in clear).
func New(name, pass string) (kcp.BlockCrypt, error) {
	m, ok := methods[name]
	if !ok {
		return nil, fmt.Errorf("crypt %q: %w (valid: %s)", name, ErrUnknownCipher, strings.Join(names, ", "))
	}
	if m.build == nil {
		return nil, nil
	}
	key := DeriveKey(pass)
	block, err := m.build(key[:m.keySize])
	if err != nil {
		return nil, fmt.Errorf("crypt %q: %w", name, err)
	}
	return block, nil
}
