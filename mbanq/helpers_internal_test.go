package mbanq

import (
	"encoding/json"

	"github.com/cardbridge/cardbridge/internal/secret"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func jsonMarshal(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func secretOf(s string) secret.String { return secret.New(s) }
