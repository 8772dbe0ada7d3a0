package schemas

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEverySchemaCompiles(t *testing.T) {
	entries, err := FS.ReadDir(".")
	require.NoError(t, err)
	require.Len(t, entries, 3)
	for _, f := range []string{RequestFile, IssuedFile, FailedFile} {
		// An empty object fails every one of them (required properties),
		// which proves each is compiled and reachable by name.
		require.Error(t, Validate(f, []byte(`{}`)), f)
	}
	require.Error(t, Validate("nope.json", []byte(`{}`)))
}

func TestRequestData(t *testing.T) {
	valid := `{"employee":{"id":"E-1","firstName":"Zoë","lastName":"O'Neil","email":"zoe@acme.example"},"clientId":12,"reference":"PO-1"}`
	require.NoError(t, ValidateRequestData([]byte(valid)))
	require.NoError(t, ValidateRequestData([]byte(`{"employee":{"id":"E-1","firstName":"A","lastName":"B"},"clientId":1,"reference":""}`)))

	tests := []struct {
		name, data, path string
	}{
		{"no employee", `{"clientId":1}`, ""},
		{"empty id", `{"employee":{"id":"","firstName":"A","lastName":"B"},"clientId":1}`, "/employee/id"},
		{"id too long", `{"employee":{"id":"` + strings.Repeat("x", 65) + `","firstName":"A","lastName":"B"},"clientId":1}`, "/employee/id"},
		{"blank first name", `{"employee":{"id":"1","firstName":" \t","lastName":"B"},"clientId":1}`, "/employee/firstName"},
		{"line break in last name", `{"employee":{"id":"1","firstName":"A","lastName":"B\nC"},"clientId":1}`, "/employee/lastName"},
		{"last name too long", `{"employee":{"id":"1","firstName":"A","lastName":"` + strings.Repeat("é", 101) + `"},"clientId":1}`, "/employee/lastName"},
		{"bad email", `{"employee":{"id":"1","firstName":"A","lastName":"B","email":"not-an-address"},"clientId":1}`, "/employee/email"},
		{"client id zero", `{"employee":{"id":"1","firstName":"A","lastName":"B"},"clientId":0}`, "/clientId"},
		{"client id fraction", `{"employee":{"id":"1","firstName":"A","lastName":"B"},"clientId":1.5}`, "/clientId"},
		{"client id string", `{"employee":{"id":"1","firstName":"A","lastName":"B"},"clientId":"1"}`, "/clientId"},
		{"reference too long", `{"employee":{"id":"1","firstName":"A","lastName":"B"},"clientId":1,"reference":"` + strings.Repeat("r", 129) + `"}`, "/reference"},
		{"unknown top-level field", `{"employee":{"id":"1","firstName":"A","lastName":"B"},"clientId":1,"limit":5}`, ""},
		{"unknown employee field", `{"employee":{"id":"1","firstName":"A","lastName":"B","phone":"1"},"clientId":1}`, "/employee"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateRequestData([]byte(tc.data))
			var ve *ValidationError
			require.True(t, errors.As(err, &ve), "got %v", err)
			require.Equal(t, RequestFile, ve.Schema)
			require.NotEmpty(t, ve.Violations)
			require.Equal(t, tc.path, ve.Violations[0].Path)
			require.NotContains(t, err.Error(), "\n")
			require.NotContains(t, err.Error(), "not-an-address", "values are not echoed")
			t.Log(err)
		})
	}
}

func TestIssuedAndFailed(t *testing.T) {
	issued := `{"requestId":"r","requestSource":"urn:erp:a","employeeId":"E","clientId":1,"cardId":2,"cardToken":"t","productId":3,"status":"ACTIVE","issuedAt":"2026-11-25T09:30:00Z"}`
	require.NoError(t, ValidateIssued([]byte(issued)))
	require.Error(t, ValidateIssued([]byte(strings.Replace(issued, `"2026-11-25T09:30:00Z"`, `"yesterday"`, 1))), "date-time format is asserted")
	require.Error(t, ValidateIssued([]byte(strings.Replace(issued, `"status"`, `"extra":1,"status"`, 1))), "no unknown fields")

	failed := `{"requestId":"r","requestSource":"urn:erp:a","reason":"bank_rejected","message":"m","bankErrorCode":"error.msg.x"}`
	require.NoError(t, ValidateFailed([]byte(failed)))
	require.Error(t, ValidateFailed([]byte(strings.Replace(failed, "bank_rejected", "oops", 1))))
	require.Error(t, ValidateFailed([]byte(`{"requestId":"","requestSource":"s","reason":"invalid_event","message":"m"}`)))
}

func TestValidateAcceptsGoValues(t *testing.T) {
	type employee struct {
		ID        string `json:"id"`
		FirstName string `json:"firstName"`
		LastName  string `json:"lastName"`
	}
	v := struct {
		Employee employee `json:"employee"`
		ClientID int64    `json:"clientId"`
	}{employee{"1", "A", "B"}, 9007199254740991}
	require.NoError(t, ValidateRequestData(v))
	v.ClientID++
	require.Error(t, ValidateRequestData(v), "beyond 2^53-1")
	require.Error(t, ValidateRequestData([]byte(`{`)))
	require.Error(t, ValidateRequestData(make(chan int)))
}

func TestEmployeeIDTravelsInHeaders(t *testing.T) {
	for _, id := range []string{" E", "E ", "\u00a0E", "E\u3000", "E\u0085x", "E\x7f"} {
		data := `{"employee":{"id":` + quote(id) + `,"firstName":"A","lastName":"B"},"clientId":1}`
		require.Error(t, ValidateRequestData([]byte(data)), "%q", id)
	}
	for _, id := range []string{"E", "E 1", "Ünal-7", "社員42"} {
		data := `{"employee":{"id":` + quote(id) + `,"firstName":"A","lastName":"B"},"clientId":1}`
		require.NoError(t, ValidateRequestData([]byte(data)), "%q", id)
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
