package secret

import (
	"strconv"
	"strings"
)

// urlMask replaces a password or token in a URL, as url.URL.Redacted does.
const urlMask = "xxxxx"

// RedactURL returns raw, a URL or a comma-separated list of them (as
// NATS_URL may be), with every password replaced by "xxxxx", as
// url.URL.Redacted does. In a NATS URL (nats, tls, ws, wss, or no scheme,
// which NATS reads as nats) a user name without a password is a token, and
// is masked too: nats://xxxxx@host. Everything else is left as written, so
// the result names the same servers.
//
// It works on the text, not on a parsed URL, so that a URL that does not
// parse is masked as well: that is the one an error message shows.
func RedactURL(raw string) string {
	if !strings.Contains(raw, "@") {
		return raw
	}
	parts := splitURLs(raw)
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

// splitURLs splits a comma-separated list of URLs. When they have schemes,
// only a comma before a scheme separates two URLs, so that a password
// holding a comma is not cut in two (and half of it left unmasked).
func splitURLs(raw string) []string {
	if !strings.Contains(raw, "://") {
		return strings.Split(raw, ",")
	}
	var parts []string
	start := 0
	for i := 0; i < len(raw); i++ {
		if raw[i] == ',' && startsWithScheme(strings.TrimLeft(raw[i+1:], " \t")) {
			parts = append(parts, raw[start:i])
			start = i + 1
		}
	}
	return append(parts, raw[start:])
}

// startsWithScheme reports whether s begins with "scheme://".
func startsWithScheme(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return false
	}
	for i, c := range scheme {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

// redactOne masks the user information of one URL.
func redactOne(u string) string {
	scheme, rest, hasScheme := strings.Cut(u, "://")
	prefix := scheme + "://"
	if !hasScheme {
		scheme, rest, prefix = "", u, ""
	}
	// The user information is what precedes the last '@'. A password
	// written unescaped may hold '@', '/', '?' or '#', which a host never
	// does; an '@' in a path or query masks more than needed, never less.
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return u
	}
	userinfo, after := rest[:at], rest[at:]
	if user, _, ok := strings.Cut(userinfo, ":"); ok {
		return prefix + user + ":" + urlMask + after
	}
	switch strings.ToLower(strings.TrimSpace(scheme)) {
	case "", "nats", "tls", "ws", "wss":
		return prefix + urlMask + after
	}
	return u
}

// RedactURLIn returns text, typically an error message from a library
// given raw, with each URL of raw (and its quoted form) replaced by its
// redacted form. An error about a URL that does not parse quotes it whole,
// password included; this keeps such an error fit to print.
func RedactURLIn(text, raw string) string {
	if !strings.Contains(raw, "@") {
		return text
	}
	urls := []string{raw}
	for _, p := range splitURLs(raw) {
		// NATS trims each URL and its trailing slash before parsing it.
		urls = append(urls, p, strings.TrimSpace(p), strings.TrimSuffix(strings.TrimSpace(p), "/"))
	}
	for _, u := range urls {
		if u == "" || !strings.Contains(u, "@") {
			continue
		}
		red := RedactURL(u)
		text = strings.ReplaceAll(text, u, red)
		if q := strconv.Quote(u); q[1:len(q)-1] != u {
			rq := strconv.Quote(red)
			text = strings.ReplaceAll(text, q[1:len(q)-1], rq[1:len(rq)-1])
		}
	}
	return text
}
