package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStringIsRedactedEverywhere(t *testing.T) {
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
	for _, enc := range []string{"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"} {
		k, err := ParseKey(New(enc))
		require.NoError(t, err)
		require.Len(t, k, KeySize)
	}
	_, err := ParseKey(New("c2hvcnQ="))
	require.ErrorContains(t, err, "5 bytes, want 32")
	_, err = ParseKey(New(""))
	require.Error(t, err)
}
