package sandbox

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Tokens are JWT-like, as MBanq's are (HS512, payload {"sub","isAccessToken",
// "exp","userId","iat"}), signed with a key made at start. They need no
// server-side storage, so checking one takes no lock. Two extra claims make
// forced expiry possible: "gen" is the generation the token was issued in,
// and ExpireAccessTokens / ExpireAllTokens move the generation on; "jti"
// makes every token unique.

type tokenClaims struct {
	Sub           string `json:"sub"`
	IsAccessToken bool   `json:"isAccessToken"`
	Exp           int64  `json:"exp"`
	UserID        int64  `json:"userId"`
	Iat           int64  `json:"iat"`
	Gen           int64  `json:"gen"`
	Jti           string `json:"jti"`
}

var tokenHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS512","typ":"JWT"}`))

type tokenIssuer struct {
	key        []byte
	accessGen  atomic.Int64
	refreshGen atomic.Int64
	// signed remembers the claims of tokens whose signature was checked
	// (token -> tokenClaims), so that a client using one token for many
	// calls pays for the HMAC and JSON once; expiry and generation are
	// still checked on every call. Cleared when it holds maxSigned.
	signed    sync.Map
	signedLen atomic.Int64
}

const maxSigned = 100_000

func newTokenIssuer() *tokenIssuer {
	key := make([]byte, 64)
	_, _ = rand.Read(key)
	return &tokenIssuer{key: key}
}

func (ti *tokenIssuer) sign(c tokenClaims) string {
	payload, _ := json.Marshal(c)
	unsigned := tokenHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha512.New, ti.key)
	mac.Write([]byte(unsigned))
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// verify returns the claims of a token signed by this server that has not
// expired and was issued in the current generation.
func (ti *tokenIssuer) verify(token string, access bool, now time.Time) (tokenClaims, string) {
	c, problem := ti.checkSignature(token)
	if problem != "" {
		return c, problem
	}
	if c.IsAccessToken != access {
		return c, "wrong kind of token"
	}
	gen := ti.accessGen.Load()
	if !access {
		gen = ti.refreshGen.Load()
	}
	if c.Gen < gen {
		return c, "token revoked"
	}
	if now.Unix() >= c.Exp {
		return c, "token expired"
	}
	return c, ""
}

// checkSignature returns the claims of a token signed by this server.
func (ti *tokenIssuer) checkSignature(token string) (tokenClaims, string) {
	if c, ok := ti.signed.Load(token); ok {
		return c.(tokenClaims), ""
	}
	var c tokenClaims
	i := strings.LastIndexByte(token, '.')
	if i < 0 || strings.Count(token, ".") != 2 {
		return c, "malformed token"
	}
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		return c, "malformed token"
	}
	mac := hmac.New(sha512.New, ti.key)
	mac.Write([]byte(token[:i]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return c, "invalid token signature"
	}
	payload, err := base64.RawURLEncoding.DecodeString(token[strings.IndexByte(token, '.')+1 : i])
	if err != nil || json.Unmarshal(payload, &c) != nil {
		return c, "malformed token"
	}
	if ti.signedLen.Add(1) > maxSigned {
		ti.signed.Clear()
		ti.signedLen.Store(1)
	}
	ti.signed.Store(token, c)
	return c, ""
}

// ExpireAccessTokens makes every access token issued so far invalid; refresh
// tokens stay valid, so clients renew with the refresh grant.
func (s *Server) ExpireAccessTokens() { s.tokens.accessGen.Add(1) }

// ExpireAllTokens makes every access and refresh token issued so far
// invalid, so clients must use the password grant.
func (s *Server) ExpireAllTokens() {
	s.tokens.accessGen.Add(1)
	s.tokens.refreshGen.Add(1)
}

// principal is the authenticated user of a request.
type principal struct {
	user *userRec
}

func (p *principal) can(perm string) bool {
	return p.user.perms[PermissionAll] || p.user.perms[perm]
}

// authenticate checks the bearer token of an API request.
func (s *Server) authenticate(r *http.Request) (*principal, *apiError) {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		token, ok = strings.CutPrefix(h, "bearer ")
	}
	if !ok || token == "" {
		return nil, errNotAuthenticated("No bearer token in the Authorization header.")
	}
	c, problem := s.tokens.verify(token, true, s.now())
	if problem != "" {
		return nil, errNotAuthenticated("Invalid access token: " + problem + ".")
	}
	u := s.users.byID(c.UserID)
	if u == nil || !u.Enabled || u.Username != c.Sub {
		return nil, errNotAuthenticated("Invalid access token: user no longer valid.")
	}
	return &principal{user: u}, nil
}

// tokenResponse is the answer of POST /oauth/token.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
}

// handleToken serves POST /oauth/token, with the fields as a form (as the
// API reference says) or as JSON (as the tutorial sends them).
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	fields, aerr := tokenFields(r)
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	clientOK := subtle.ConstantTimeCompare([]byte(fields["client_id"]), []byte(s.oauthClientID)) == 1
	secretOK := subtle.ConstantTimeCompare([]byte(fields["client_secret"]), []byte(s.oauthClientSecret)) == 1
	if !clientOK || !secretOK {
		s.stats.unauthorized.Add(1)
		e := errInvalidClient()
		// Spring sends its OAuth2 errors with no-store, like its tokens.
		w.Header().Set("Cache-Control", "no-store")
		s.writeJSON(w, e.status, e.body)
		return
	}
	var u *userRec
	switch fields["grant_type"] {
	case "password":
		if fields["username"] == "" || fields["password"] == "" {
			s.writeError(w, errValidation(field("validation.msg.oauth.username.cannot.be.blank", "username", nil, "username and password are required with the password grant.")))
			return
		}
		s.stats.passwordGrants.Add(1)
		u = s.users.byUsername(fields["username"])
		if u == nil || !u.checkPassword(fields["password"]) || !u.Enabled {
			s.stats.unauthorized.Add(1)
			s.writeError(w, errNotAuthenticated("Bad credentials."))
			return
		}
	case "refresh_token":
		s.stats.refreshGrants.Add(1)
		c, problem := s.tokens.verify(fields["refresh_token"], false, s.now())
		if problem != "" {
			s.stats.unauthorized.Add(1)
			s.writeError(w, errNotAuthenticated("Invalid refresh token: "+problem+"."))
			return
		}
		u = s.users.byID(c.UserID)
		if u == nil || !u.Enabled || u.Username != c.Sub {
			s.stats.unauthorized.Add(1)
			s.writeError(w, errNotAuthenticated("Invalid refresh token: user no longer valid."))
			return
		}
	case "":
		s.writeError(w, errValidation(field("validation.msg.oauth.grant_type.cannot.be.blank", "grant_type", nil, "grant_type is required.")))
		return
	default:
		s.writeError(w, errValidation(field("validation.msg.oauth.grant_type.not.supported", "grant_type", fields["grant_type"],
			"grant_type must be password or refresh_token.", fields["grant_type"])))
		return
	}

	accessLife, refreshLife := s.faults.lifetimes()
	now := s.now()
	expiresIn := int64((accessLife + time.Second - 1) / time.Second)
	access := s.tokens.sign(tokenClaims{
		Sub: u.Username, IsAccessToken: true, UserID: u.ID,
		Iat: now.Unix(), Exp: expiryOf(now, accessLife), Gen: s.tokens.accessGen.Load(), Jti: randomID(),
	})
	refresh := s.tokens.sign(tokenClaims{
		Sub: u.Username, IsAccessToken: false, UserID: u.ID,
		Iat: now.Unix(), Exp: expiryOf(now, refreshLife), Gen: s.tokens.refreshGen.Load(), Jti: randomID(),
	})
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: access, TokenType: "bearer", RefreshToken: refresh, ExpiresIn: expiresIn, Scope: "all",
	})
}

// tokenFields reads the token request's fields from a form or JSON body.
func tokenFields(r *http.Request) (map[string]string, *apiError) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	out := map[string]string{}
	if ct == "application/json" {
		var m map[string]any
		dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			return nil, errMalformedJSON("expected an object")
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				out[k] = v
			case json.Number:
				out[k] = v.String()
			case bool:
				out[k] = fmt.Sprint(v)
			}
		}
		return out, nil
	}
	r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		return nil, errValidation(field("validation.msg.invalid.form", "body", nil, "The request body is not a valid form."))
	}
	for k := range r.PostForm {
		out[k] = r.PostForm.Get(k)
	}
	return out, nil
}

// expiryOf returns the "exp" claim of a token issued at now: whole seconds,
// rounded up, so that a token is never valid for less than its lifetime.
func expiryOf(now time.Time, lifetime time.Duration) int64 {
	end := now.Add(lifetime).UnixNano()
	return (end + int64(time.Second) - 1) / int64(time.Second)
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
