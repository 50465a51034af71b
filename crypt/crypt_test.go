package crypt

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	kcp "github.com/xtaci/kcp-go/v5"
	xpbkdf2 "golang.org/x/crypto/pbkdf2"
)

// aead is the extra surface kcp-go's AES-GCM BlockCrypt exposes; kcp-go
// switches to Seal/Open for such ciphers instead of Encrypt/Decrypt.
type aead interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	NonceSize() int
	Overhead() int
}

// reference pairs each name with the kcp-go constructor and the key slice
// kcptun hands it, written out independently of the table in crypt.go.
var reference = []struct {
	name  string
	build func(key []byte) (kcp.BlockCrypt, error)
	slice int
}{
	{"aes", kcp.NewAESBlockCrypt, 32},
	{"aes-128", kcp.NewAESBlockCrypt, 16},
	{"aes-192", kcp.NewAESBlockCrypt, 24},
	{"aes-128-gcm", kcp.NewAESGCMCrypt, 16},
	{"salsa20", kcp.NewSalsa20BlockCrypt, 32},
	{"blowfish", kcp.NewBlowfishBlockCrypt, 32},
	{"twofish", kcp.NewTwofishBlockCrypt, 32},
	{"cast5", kcp.NewCast5BlockCrypt, 16},
	{"3des", kcp.NewTripleDESBlockCrypt, 24},
	{"tea", kcp.NewTEABlockCrypt, 16},
	{"xtea", kcp.NewXTEABlockCrypt, 16},
	{"sm4", kcp.NewSM4BlockCrypt, 16},
	{"xor", kcp.NewSimpleXORBlockCrypt, 32},
	{"none", kcp.NewNoneBlockCrypt, 32},
}

func TestDeriveKeyKnownVectors(t *testing.T) {
	// Values computed with Python's hashlib.pbkdf2_hmac("sha1", pass, b"kcp-go", 4096, 32).
	tests := []struct{ pass, want string }{
		{"it's a secrect", "25d7d7bd51050742d8d791f2b653c6c8b2366b7e25a124cf7a2e12eaf4ffa444"},
		{"", "b23383c32eefa3753ab6db6e639a0ddc3b50ec6b6c623c9171a15ba0879945cd"},
		{"hunter2", "b5209b6b370454ee55d6b3d0985c6405882429ee229847fc30091dc0c570ad8f"},
	}
	for _, tt := range tests {
		if got := hex.EncodeToString(DeriveKey(tt.pass)); got != tt.want {
			t.Errorf("DeriveKey(%q) = %s, want %s", tt.pass, got, tt.want)
		}
	}
}

func TestDeriveKeyMatchesXCrypto(t *testing.T) {
	for _, pass := range []string{"a", "correct horse battery staple", strings.Repeat("k", 200)} {
		want := xpbkdf2.Key([]byte(pass), []byte("kcp-go"), 4096, 32, sha1.New)
		if got := DeriveKey(pass); !bytes.Equal(got, want) {
			t.Errorf("DeriveKey(%q) = %x, want %x", pass, got, want)
		}
	}
}

func TestNamesCoverReference(t *testing.T) {
	got := Names()
	if len(got) != len(reference)+1 {
		t.Fatalf("Names() has %d entries, want %d: %v", len(got), len(reference)+1, got)
	}
	seen := map[string]bool{}
	for _, n := range got {
		if !Valid(n) {
			t.Errorf("Names() lists %q but Valid(%q) is false", n, n)
		}
		seen[n] = true
	}
	for _, r := range reference {
		if !seen[r.name] {
			t.Errorf("Names() misses %q", r.name)
		}
	}
	if !seen["null"] {
		t.Error(`Names() misses "null"`)
	}
	got[0] = "mutated"
	if Names()[0] == "mutated" {
		t.Error("Names() returns its internal slice")
	}
}

func TestNull(t *testing.T) {
	b, err := New("null", "pass")
	if err != nil || b != nil {
		t.Fatalf(`New("null") = %v, %v; want nil, nil`, b, err)
	}
}

func TestUnknownCipher(t *testing.T) {
	for _, name := range []string{"", "AES", "aes256", "rc4", "null "} {
		b, err := New(name, "pass")
		if b != nil || !errors.Is(err, ErrUnknownCipher) {
			t.Fatalf("New(%q) = %v, %v; want ErrUnknownCipher", name, b, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, `"`+name+`"`) || !strings.Contains(msg, "aes-128-gcm") || !strings.Contains(msg, "null") {
			t.Errorf("New(%q) error %q should name the input and list the valid ciphers", name, msg)
		}
		if Valid(name) {
			t.Errorf("Valid(%q) = true", name)
		}
	}
}

// packet returns a kcp-go style packet: a 16-byte random nonce, then payload.
func packet(t *testing.T, n int) []byte {
	t.Helper()
	p := make([]byte, 16+n)
	if _, err := rand.Read(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCiphersMatchKCPGo(t *testing.T) {
	const pass = "smuxtun test passphrase"
	key := DeriveKey(pass)
	other := DeriveKey(pass + "x")
	for _, r := range reference {
		t.Run(r.name, func(t *testing.T) {
			ours, err := New(r.name, pass)
			if err != nil {
				t.Fatal(err)
			}
			want, err := r.build(key[:r.slice])
			if err != nil {
				t.Fatal(err)
			}
			wrongKey, err := r.build(other[:r.slice])
			if err != nil {
				t.Fatal(err)
			}
			if a, ok := ours.(aead); ok {
				checkAEAD(t, a, want.(aead), wrongKey.(aead))
				return
			}
			checkBlock(t, r.name, ours, want, wrongKey)
		})
	}
}

func checkBlock(t *testing.T, name string, ours, want, wrongKey kcp.BlockCrypt) {
	t.Helper()
	for _, n := range []int{0, 1, 7, 8, 64, 1000, 1350} {
		plain := packet(t, n)
		enc := make([]byte, len(plain))
		ours.Encrypt(enc, plain)
		ref := make([]byte, len(plain))
		want.Encrypt(ref, plain)
		if !bytes.Equal(enc, ref) {
			t.Fatalf("len %d: ciphertext differs from kcp-go's with the same key slice", len(plain))
		}
		if name != "none" && n >= 8 && bytes.Equal(enc[16:], plain[16:]) {
			t.Fatalf("len %d: payload left in clear", len(plain))
		}
		if name == "none" && !bytes.Equal(enc, plain) {
			t.Fatalf("none changed the packet")
		}
		// Decrypt with the reference (the peer side) and with ours in place.
		dec := make([]byte, len(enc))
		want.Decrypt(dec, enc)
		if !bytes.Equal(dec, plain) {
			t.Fatalf("len %d: kcp-go cannot decrypt our ciphertext", len(plain))
		}
		ours.Decrypt(ref, ref)
		if !bytes.Equal(ref, plain) {
			t.Fatalf("len %d: in-place round trip failed", len(plain))
		}
		// A payload of a byte or two comes out right under a wrong key once
		// in 256 or so; from 8 bytes on that cannot happen by chance.
		if name != "none" && n >= 8 {
			wrongKey.Decrypt(dec, enc)
			if bytes.Equal(dec[16:], plain[16:]) {
				t.Fatalf("len %d: a different key decrypted the packet", len(plain))
			}
		}
	}
}

func checkAEAD(t *testing.T, ours, want, wrongKey aead) {
	t.Helper()
	nonce := make([]byte, ours.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 100, 1350} {
		plain := packet(t, n)
		enc := ours.Seal(make([]byte, 0, len(plain)+ours.Overhead()), nonce, plain, nil)
		ref := want.Seal(make([]byte, 0, len(plain)+want.Overhead()), nonce, plain, nil)
		if !bytes.Equal(enc, ref) {
			t.Fatalf("len %d: sealed packet differs from kcp-go's with the same key slice", len(plain))
		}
		dec, err := want.Open(nil, nonce, enc, nil)
		if err != nil || !bytes.Equal(dec, plain) {
			t.Fatalf("len %d: kcp-go cannot open our packet: %v", len(plain), err)
		}
		if _, err := wrongKey.Open(nil, nonce, enc, nil); err == nil {
			t.Fatalf("len %d: a different key opened the packet", len(plain))
		}
	}
}
