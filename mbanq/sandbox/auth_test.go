package sandbox_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// A wrong OAuth client gets Spring Security OAuth2's RFC 6749 answer; a
// wrong user password keeps Fineract's, so a client can tell them apart.
func TestTokenRefusalsTellClientFromUser(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	token := func(clientID, clientSecret, password string) (*http.Response, string) {
		form := url.Values{
			"grant_type": {"password"}, "username": {sandbox.DefaultAdminUsername}, "password": {password},
			"client_id": {clientID}, "client_secret": {clientSecret},
		}
		return h.mustDo(http.MethodPost, "/oauth/token", form.Encode(), map[string]string{
			"tenantId": sandbox.DefaultTenantID, "Content-Type": "application/x-www-form-urlencoded",
		})
	}
	const invalidClient = `{"error":"invalid_client","error_description":"Bad client credentials"}`
	for _, tc := range []struct{ what, id, secret string }{
		{"wrong secret", sandbox.DefaultOAuthClientID, "n0t-the-secret"},
		{"wrong client", "someone-else", sandbox.DefaultOAuthClientSecret},
		{"no client", "", ""},
	} {
		// The user's password is wrong too: the client is checked first.
		resp, body := token(tc.id, tc.secret, "wr0ng-Pw-x1")
		equal(t, resp.StatusCode, http.StatusUnauthorized, tc.what+" status")
		equal(t, strings.TrimSpace(body), invalidClient, tc.what+" body")
		equal(t, resp.Header.Get("Content-Type"), "application/json", tc.what+" content type")
	}

	resp, body := token(sandbox.DefaultOAuthClientID, sandbox.DefaultOAuthClientSecret, "wr0ng-Pw-x1")
	equal(t, resp.StatusCode, http.StatusUnauthorized, "wrong password status")
	equal(t, strings.Contains(body, `"userMessageGlobalisationCode":"error.msg.not.authenticated"`), true, "Fineract code: "+body)
	equal(t, strings.Contains(body, `"httpStatusCode":"401"`), true, "Fineract shape: "+body)
	equal(t, strings.Contains(body, "invalid_client"), false, "not a client error: "+body)
	equal(t, h.sb.Stats().Unauthorized, int64(4), "every refusal counted")
}
