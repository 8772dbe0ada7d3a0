package secret

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStringIsRedactedEverywhere(t *testing.T) {
	t.Parallel()
	s := New("hunter2")
	type creds struct {
		User     string
		Password String
	}
	c := creds{"ada", s}
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %+v %#v", s, s, s, s, c, c), s.String(),
	} {
		require.NotContains(t, out, "hunter2")
	}
	b, err := json.Marshal(c)
	require.NoError(t, err)
	require.NotContains(t, string(b), "hunter2")
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("login", "password", s, "creds", c)
	require.NotContains(t, buf.String(), "hunter2")
	require.Equal(t, "hunter2", s.Reveal())
}

func TestBoxSealsBoundToContextAndRotates(t *testing.T) {
	t.Parallel()
	k1, k2 := bytes.Repeat([]byte{1}, KeySize), bytes.Repeat([]byte{2}, KeySize)
	b1, err := NewBox(k1)
	require.NoError(t, err)
	sealed, err := b1.Seal(New("pw"), []byte("row-1"))
	require.NoError(t, err)
	again, err := b1.Seal(New("pw"), []byte("row-1"))
	require.NoError(t, err)
	require.NotEqual(t, sealed, again, "fresh nonce each time")

	p, err := b1.Open(sealed, []byte("row-1"))
	require.NoError(t, err)
	require.Equal(t, "pw", p.Reveal())
	_, err = b1.Open(sealed, []byte("row-2"))
	require.ErrorIs(t, err, ErrDecrypt, "bound to its row")
	_, err = b1.Open(sealed[:5], []byte("row-1"))
	require.ErrorIs(t, err, ErrDecrypt)

	b2, err := NewBox(k2, k1)
	require.NoError(t, err)
	p, stale, err := b2.OpenStale(sealed, []byte("row-1"))
	require.NoError(t, err)
	require.True(t, stale)
	require.Equal(t, "pw", p.Reveal())

	_, err = NewBox(k1[:16])
	require.Error(t, err)
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	for _, enc := range []string{"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"} {
		k, err := ParseKey(New(enc))
		require.NoError(t, err)
		require.Len(t, k, KeySize)
	}
	_, err := ParseKey(New("c2hvcnQ="))
	require.ErrorContains(t, err, "decodes to 5 bytes: it must be 32 random bytes, base64-encoded")
	_, err = ParseKey(New(""))
	require.Error(t, err)
}

func TestBoxTellsWhichKeyOpened(t *testing.T) {
	t.Parallel()
	k1, k2, k3 := bytes.Repeat([]byte{1}, KeySize), bytes.Repeat([]byte{2}, KeySize), bytes.Repeat([]byte{3}, KeySize)
	old, err := NewBox(k1)
	require.NoError(t, err)
	sealed, err := old.Seal(New("pw"), []byte("row"))
	require.NoError(t, err)

	b, err := NewBox(k3, k2, k1)
	require.NoError(t, err)
	p, key, err := b.OpenKey(sealed, []byte("row"))
	require.NoError(t, err)
	require.Equal(t, 2, key, "the second previous key")
	require.Equal(t, "pw", p.Reveal())

	fresh, err := b.Seal(New("pw"), []byte("row"))
	require.NoError(t, err)
	_, key, err = b.OpenKey(fresh, []byte("row"))
	require.NoError(t, err)
	require.Equal(t, KeyPrimary, key)

	_, key, err = b.OpenKey(sealed, []byte("another row"))
	require.ErrorIs(t, err, ErrDecrypt)
	require.Equal(t, KeyNone, key)
}

func TestKeyIDNamesTheKeyWithoutShowingIt(t *testing.T) {
	t.Parallel()
	k1, k2 := bytes.Repeat([]byte{1}, KeySize), bytes.Repeat([]byte{2}, KeySize)
	b1, err := NewBox(k1, k2)
	require.NoError(t, err)
	again, err := NewBox(k1)
	require.NoError(t, err)
	b2, err := NewBox(k2, k1)
	require.NoError(t, err)

	require.Len(t, b1.KeyID(), 16)
	require.Equal(t, b1.KeyID(), again.KeyID(), "a function of the primary key alone")
	require.Equal(t, KeyID(k1), b1.KeyID())
	require.NotEqual(t, b1.KeyID(), b2.KeyID())
	for _, enc := range []string{hex.EncodeToString(k1), base64.StdEncoding.EncodeToString(k1)} {
		require.NotContains(t, enc, b1.KeyID())
	}
	plain := sha256.Sum256(k1)
	require.NotContains(t, hex.EncodeToString(plain[:]), b1.KeyID(), "not a bare hash of the key")
}
