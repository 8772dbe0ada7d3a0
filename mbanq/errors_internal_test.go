package mbanq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func answer(status int, header map[string]string) *http.Response {
	h := http.Header{}
	for k, v := range header {
		h.Set(k, v)
	}
	return &http.Response{StatusCode: status, Header: h}
}

func TestDecodeError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		header map[string]string
		body   string
		want   Error
	}{
		{
			name:   "fineract not found, status as string",
			status: 404,
			header: map[string]string{"x-request-id": "r1"},
			body: `{"developerMessage":"Client with identifier 21994 does not exist","httpStatusCode":"404",
				"defaultUserMessage":"Client with identifier 21994 does not exist","userMessageGlobalisationCode":"error.msg.resource.not.found",
				"errors":[{"developerMessage":"d","defaultUserMessage":"Client with identifier 21994 does not exist",
				"userMessageGlobalisationCode":"error.msg.client.id.invalid","parameterName":"id","value":null,"args":[{"value":21994}]}]}`,
			want: Error{Op: "op", HTTPStatus: 404, Code: "error.msg.resource.not.found", Message: "Client with identifier 21994 does not exist",
				DeveloperMessage: "Client with identifier 21994 does not exist", RequestID: "r1",
				Errors: []FieldError{{Code: "error.msg.client.id.invalid", Message: "Client with identifier 21994 does not exist", Parameter: "id"}}},
		},
		{
			name:   "status as number, value echoed",
			status: 403,
			body:   `{"httpStatusCode":403,"defaultUserMessage":"User with username bob already exists.","userMessageGlobalisationCode":"error.msg.user.duplicate.username","errors":[{"userMessageGlobalisationCode":"error.msg.user.duplicate.username","parameterName":"username","value":"bob"}]}`,
			want: Error{Op: "op", HTTPStatus: 403, Code: CodeDuplicateUsername, Message: "User with username bob already exists.",
				Errors: []FieldError{{Code: CodeDuplicateUsername, Parameter: "username", Value: "bob"}}},
		},
		{
			name:   "password value dropped",
			status: 400,
			body:   `{"httpStatusCode":"400","userMessageGlobalisationCode":"validation.msg.validation.errors.exist","errors":[{"userMessageGlobalisationCode":"validation.msg.user.password.invalid","parameterName":"password","value":"hunter2-secret"},{"parameterName":"officeId","value":0,"userMessageGlobalisationCode":"x"}]}`,
			want: Error{Op: "op", HTTPStatus: 400, Code: CodeValidationErrorsExist, Message: "Bad Request",
				Errors: []FieldError{{Code: "validation.msg.user.password.invalid", Parameter: "password"}, {Code: "x", Parameter: "officeId", Value: "0"}}},
		},
		{
			name:   "oauth2 style",
			status: 401,
			body:   `{"error":"invalid_grant","error_description":"Bad credentials"}`,
			want:   Error{Op: "op", HTTPStatus: 401, Code: "invalid_grant", Message: "Bad credentials"},
		},
		{
			name:   "html from a proxy, with Retry-After",
			status: 503,
			header: map[string]string{"Retry-After": "7"},
			body:   "<html><body>Service Unavailable</body></html>",
			want:   Error{Op: "op", HTTPStatus: 503, Message: "Service Unavailable", DeveloperMessage: "<html><body>Service Unavailable</body></html>", RetryAfter: 7 * time.Second},
		},
		{
			name:   "empty body",
			status: 502,
			want:   Error{Op: "op", HTTPStatus: 502, Message: "Bad Gateway"},
		},
		{
			name:   "broken JSON",
			status: 500,
			body:   `{"httpStatusCode":`,
			want:   Error{Op: "op", HTTPStatus: 500, Message: "Internal Server Error", DeveloperMessage: `{"httpStatusCode":`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeError("op", answer(tt.status, tt.header), []byte(tt.body))
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", *got, tt.want)
			}
			if strings.Contains(got.Error(), "hunter2-secret") {
				t.Errorf("secret in %q", got.Error())
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	t.Parallel()
	e := &Error{Op: "create user", HTTPStatus: 400, Code: CodeValidationErrorsExist, Message: "Validation errors exist.", RequestID: "r9",
		Errors: []FieldError{{Code: "validation.msg.user.firstname.cannot.be.blank", Parameter: "firstname"}, {Code: "c2", Parameter: "password", Value: "never-shown"}}}
	want := "mbanq: create user: HTTP 400 validation.msg.validation.errors.exist: Validation errors exist. [firstname: validation.msg.user.firstname.cannot.be.blank; password: c2] (request-id r9)"
	if e.Error() != want {
		t.Errorf("got  %q\nwant %q", e.Error(), want)
	}
	n := &Error{Op: "order card", Err: io.ErrUnexpectedEOF}
	if got := n.Error(); got != "mbanq: order card: unexpected EOF" {
		t.Errorf("got %q", got)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	status := func(s int, code string) error { return &Error{Op: "op", HTTPStatus: s, Code: code} }
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, ClassNone},
		{"400", status(400, CodeValidationErrorsExist), ClassPermanent},
		{"401", status(401, CodeNotAuthenticated), ClassReauth},
		{"401 tenant", status(401, CodeInvalidTenant), ClassConfig},
		{"401 oauth client", status(401, CodeInvalidClient), ClassConfig},
		{"403 not authorized", status(403, CodeNotAuthorized), ClassConfig},
		{"403 domain rule", status(403, CodeDomainRuleViolation), ClassPermanent},
		{"403 duplicate", status(403, CodeDuplicateUsername), ClassPermanent},
		{"404", status(404, CodeResourceNotFound), ClassPermanent},
		{"409", status(409, ""), ClassUnknown},
		{"key reused with another body", status(422, CodeIdempotencyKeyReused), ClassUnknown},
		{"password outdated", status(400, CodePasswordOutdated), ClassReauth},
		{"self-service login refused, OAuth style", status(400, CodeInvalidGrant), ClassReauth},
		{"422", status(422, ""), ClassPermanent},
		{"418 other 4xx", status(418, ""), ClassPermanent},
		{"408", status(408, ""), ClassRetry},
		{"429", status(429, ""), ClassRetry},
		{"500", status(500, ""), ClassRetry},
		{"502", status(502, ""), ClassUnknown},
		{"503", status(503, ""), ClassRetry},
		{"504", status(504, ""), ClassUnknown},
		{"503 after an unknown attempt", &Error{HTTPStatus: 503, OutcomeUnknown: true}, ClassUnknown},
		{"403 after an unknown attempt", &Error{HTTPStatus: 403, OutcomeUnknown: true}, ClassPermanent},
		{"302", status(302, ""), ClassConfig},
		{"malformed 200", &Error{HTTPStatus: 200, Code: CodeMalformedResponse}, ClassUnknown},
		{"wrapped 503", fmt.Errorf("ordering card: %w", status(503, "")), ClassRetry},
		{"canceled", &Error{Op: "op", Err: context.Canceled}, ClassCanceled},
		{"bare canceled", context.Canceled, ClassCanceled},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), ClassCanceled},
		{"attempt timeout", &Error{Op: "op", Err: fmt.Errorf("GET /x: %w after 1s", errAttemptTimeout)}, ClassUnknown},
		{"connection refused", &Error{Op: "op", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, ClassConfig},
		{"no such host", &Error{Op: "op", Err: &net.DNSError{Err: "no such host", Name: "bank.invalid", IsNotFound: true}}, ClassConfig},
		{"certificate", &Error{Op: "op", Err: x509.UnknownAuthorityError{}}, ClassConfig},
		{"plain http answer to TLS", &Error{Op: "op", Err: tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}}, ClassConfig},
		{"EOF", &Error{Op: "op", Err: io.EOF}, ClassUnknown},
		{"bare net error", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, ClassUnknown},
		{"other", errors.New("boom"), ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	tests := map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"3":                             3 * time.Second,
		"1.5":                           1500 * time.Millisecond,
		"-1":                            0,
		"soon":                          0,
		"Wed, 25 Nov 2026 09:00:30 GMT": 30 * time.Second,
		"Wed, 25 Nov 2026 08:00:00 GMT": 0,
	}
	for in, want := range tests {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	t.Parallel()
	c := &Client{cfg: Config{BaseBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, MaxRetryAfter: 10 * time.Second}}
	for attempt := 1; attempt <= 10; attempt++ {
		full := min(100*time.Millisecond<<(attempt-1), time.Second)
		for range 50 {
			d, ok := c.backoff(attempt, 0)
			if !ok || d < full/2 || d > full {
				t.Fatalf("attempt %d: wait %s outside [%s, %s]", attempt, d, full/2, full)
			}
		}
	}
	if d, ok := c.backoff(1, 3*time.Second); !ok || d != 3*time.Second {
		t.Errorf("Retry-After not honoured: %s %v", d, ok)
	}
	if _, ok := c.backoff(1, time.Minute); ok {
		t.Error("a Retry-After beyond MaxRetryAfter must end the call")
	}
}

func TestWireTolerance(t *testing.T) {
	t.Parallel()
	var w struct {
		A flexInt    `json:"a"`
		B flexInt    `json:"b"`
		C flexInt    `json:"c"`
		D flexBool   `json:"d"`
		E enumOption `json:"e"`
		F enumOption `json:"f"`
		G clientRefs `json:"g"`
	}
	err := jsonUnmarshal(`{"a":"107","b":12,"c":null,"d":"true","e":{"id":2,"code":"legalFormType.entity","value":"ENTITY"},"f":"ACTIVE","g":[1,"2",{"id":3}]}`, &w)
	if err != nil {
		t.Fatal(err)
	}
	if w.A != 107 || w.B != 12 || w.C != 0 || !bool(w.D) || w.E.ID != 2 || w.F.Value != "ACTIVE" || !reflect.DeepEqual([]int64(w.G), []int64{1, 2, 3}) {
		t.Errorf("decoded %+v", w)
	}
	if err := jsonUnmarshal(`{"a":"x"}`, &w); err == nil {
		t.Error("want an error for a non-numeric id")
	}
}

func TestSelfServiceRoleChoice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		roles []Role
		want  int64
	}{
		{[]Role{{ID: 1, Name: "Super user"}, {ID: 7, Name: "Customer", IsSelfService: true}}, 7},
		{[]Role{{ID: 1, Name: "Super user"}, {ID: 3, Name: "Self Service User"}}, 3},
		{[]Role{{ID: 3, Name: "self-service user", Disabled: true}, {ID: 4, Name: "SELF_SERVICE"}}, 4},
		{[]Role{{ID: 1, Name: "Super user"}}, 0},
	}
	for _, tt := range tests {
		got, err := selfServiceRole(tt.roles)
		if got != tt.want || (tt.want == 0) != errors.Is(err, ErrNoSelfServiceRole) {
			t.Errorf("selfServiceRole(%v) = %d, %v; want %d", tt.roles, got, err, tt.want)
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	a := IdempotencyKey("order-card", "urn:erp:acme", "42")
	if a != IdempotencyKey("order-card", "urn:erp:acme", "42") {
		t.Error("not stable")
	}
	if a == IdempotencyKey("order-card", "urn:erp:acme4", "2") {
		t.Error("parts are not separated")
	}
	if len(a) != 36 {
		t.Errorf("not a UUID: %q", a)
	}
}

func TestRequestBodiesRevealPasswordsOnlyOnTheWire(t *testing.T) {
	t.Parallel()
	body, err := jsonMarshal(CreateUserRequest{Username: "u", Roles: []int64{5}, Password: secretOf("s3cret-x")})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"password":"s3cret-x"`, `"repeatPassword":"s3cret-x"`, `"roles":["5"]`, `"sendPasswordToEmail":false`} {
		if !strings.Contains(body, want) {
			t.Errorf("%s missing in %s", want, body)
		}
	}
	// Printing the request, as a careless log line would, shows nothing.
	if s := fmt.Sprintf("%v %+v", CreateUserRequest{Password: secretOf("s3cret-x")}, UpdateUserRequest{Password: secretOf("s3cret-x")}); strings.Contains(s, "s3cret-x") {
		t.Errorf("password printed: %s", s)
	}
	body, err = jsonMarshal(UpdateUserRequest{Firstname: "F"})
	if err != nil || body != `{"firstname":"F"}` {
		t.Errorf("update body %s %v", body, err)
	}
}
