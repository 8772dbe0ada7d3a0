package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeySize is the length in bytes of the key a Box takes (AES-256).
const KeySize = 32

// ErrDecrypt is returned when a ciphertext cannot be opened: it was made
// under another key, or it was altered.
var ErrDecrypt = errors.New("secret: cannot decrypt (wrong key or corrupted ciphertext)")

// Box encrypts secrets at rest with AES-256-GCM. Each sealed value carries a
// fresh random nonce and is bound to additional data (for example the row it
// belongs to), so a ciphertext copied to another row does not open.
//
// A Box seals with its primary key and opens with the primary or any of the
// previous keys it was given, which is how the key is rotated: start with
// the new key as primary and the old one as previous, reseal what was
// sealed under the old key (OpenStale and OpenKey report it), then drop the
// old key.
type Box struct {
	aead     cipher.AEAD
	keyID    string
	previous []cipher.AEAD
}

// KeyPrimary and KeyNone are what OpenKey reports for a value opened by the
// primary key and for one no key opens. Previous key i (0-based, in the
// order given to NewBox) is reported as i+1.
const (
	KeyPrimary = 0
	KeyNone    = -1
)

// ParseKey decodes a base64 (standard or URL alphabet, padded or not) key of
// exactly KeySize bytes. Its errors never contain the key.
func ParseKey(encoded String) ([]byte, error) {
	s := encoded.Reveal()
	if s == "" {
		return nil, fmt.Errorf("key is empty: it must be %d random bytes, base64-encoded", KeySize)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("key decodes to %d bytes: it must be %d random bytes, base64-encoded (%d characters)", len(k), KeySize, base64.StdEncoding.EncodedLen(KeySize))
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("key is not base64: it must be %d random bytes, base64-encoded (a hex string or a passphrase will not do)", KeySize)
}

// NewBox returns a Box sealing with key and opening with key or any of
// previous. Every key is KeySize bytes.
func NewBox(key []byte, previous ...[]byte) (*Box, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	b := &Box{aead: aead, keyID: KeyID(key)}
	for _, k := range previous {
		a, err := newAEAD(k)
		if err != nil {
			return nil, err
		}
		b.previous = append(b.previous, a)
	}
	return b, nil
}

// KeyID returns the fingerprint of the Box's primary key: the key that
// seals, recorded next to what it sealed.
func (b *Box) KeyID() string { return b.keyID }

// KeyID returns a short fingerprint of key (16 hex digits), to record which
// key sealed a value and to compare keys in logs and metrics without
// showing them. It is a truncated SHA-256 under a label of its own, so it
// reveals nothing usable about the key and matches no other hash of it.
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("cardbridge/secret-key-id/v1\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plain, bound to ad. The result is nonce || ciphertext.
func (b *Box) Seal(plain String, ad []byte) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plain.v)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secret: reading nonce: %w", err)
	}
	return b.aead.Seal(nonce, nonce, []byte(plain.v), ad), nil
}

// Open decrypts a value made by Seal with the same ad, under the primary
// key or a previous one.
func (b *Box) Open(sealed, ad []byte) (String, error) {
	s, _, err := b.OpenStale(sealed, ad)
	return s, err
}

// OpenStale is Open that also reports whether the value was sealed under a
// previous key and should be sealed again.
func (b *Box) OpenStale(sealed, ad []byte) (String, bool, error) {
	s, key, err := b.OpenKey(sealed, ad)
	return s, key > KeyPrimary, err
}

// OpenKey is Open that also tells which key opened the value: KeyPrimary,
// i+1 for previous key i, or KeyNone with ErrDecrypt.
func (b *Box) OpenKey(sealed, ad []byte) (String, int, error) {
	if s, ok := open(b.aead, sealed, ad); ok {
		return s, KeyPrimary, nil
	}
	for i, a := range b.previous {
		if s, ok := open(a, sealed, ad); ok {
			return s, i + 1, nil
		}
	}
	return String{}, KeyNone, ErrDecrypt
}

func open(a cipher.AEAD, sealed, ad []byte) (String, bool) {
	n := a.NonceSize()
	if len(sealed) < n+a.Overhead() {
		return String{}, false
	}
	plain, err := a.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return String{}, false
	}
	return String{v: string(plain)}, true
}
