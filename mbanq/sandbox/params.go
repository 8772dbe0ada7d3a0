package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// params reads a JSON request body the way Fineract does: an object whose
// unknown fields are refused, whose numbers may come as strings ("roles":
// ["2"]), and whose errors are collected so that one answer lists them all.
type params struct {
	resource string // "user", "card": the middle of validation codes
	raw      map[string]json.RawMessage
	errs     []fieldError
}

// parseParams decodes body and refuses fields outside supported.
func parseParams(body []byte, resource string, supported []string) (*params, *apiError) {
	p := &params{resource: resource}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errMalformedJSON("the body is empty")
	}
	if err := json.Unmarshal(body, &p.raw); err != nil || p.raw == nil {
		return nil, errMalformedJSON("expected a JSON object")
	}
	var unknown []string
	for k := range p.raw {
		if !slices.Contains(supported, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, errUnsupportedParameters(unknown)
	}
	return p, nil
}

func (p *params) has(name string) bool {
	v, ok := p.raw[name]
	return ok && string(bytes.TrimSpace(v)) != "null"
}

func (p *params) fail(param, what, message string, value any, args ...any) {
	code := fmt.Sprintf("validation.msg.%s.%s.%s", p.resource, param, what)
	p.errs = append(p.errs, field(code, param, value, message, args...))
}

// str returns a string parameter; numbers and booleans are taken as text.
func (p *params) str(name string) string {
	v, ok := p.raw[name]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	t := strings.TrimSpace(string(v))
	if t == "null" || strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		if t != "null" {
			p.fail(name, "not.a.string", fmt.Sprintf("The parameter %s must be a string.", name), nil)
		}
		return ""
	}
	return t
}

// int returns an integer parameter given as a number or a numeric string.
func (p *params) int(name string) int64 {
	v, ok := p.raw[name]
	if !ok {
		return 0
	}
	n, ok := parseID(v)
	if !ok {
		p.fail(name, "not.a.number", fmt.Sprintf("The parameter %s must be a whole number.", name), rawText(v))
	}
	return n
}

// boolean returns a boolean parameter (true/false or "true"/"false") and
// whether it was present.
func (p *params) boolean(name string) (bool, bool) {
	v, ok := p.raw[name]
	if !ok || string(bytes.TrimSpace(v)) == "null" {
		return false, false
	}
	switch strings.Trim(strings.TrimSpace(string(v)), `"`) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	p.fail(name, "not.a.boolean", fmt.Sprintf("The parameter %s must be true or false.", name), rawText(v))
	return false, true
}

// ids returns a list of ids given as numbers or numeric strings.
func (p *params) ids(name string) []int64 {
	v, ok := p.raw[name]
	if !ok || string(bytes.TrimSpace(v)) == "null" {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		p.fail(name, "not.an.array", fmt.Sprintf("The parameter %s must be an array of ids.", name), nil)
		return nil
	}
	out := make([]int64, 0, len(items))
	for _, it := range items {
		n, ok := parseID(it)
		if !ok || n <= 0 {
			p.fail(name, "invalid.id", fmt.Sprintf("The parameter %s must hold positive ids.", name), rawText(it))
			continue
		}
		out = append(out, n)
	}
	return out
}

func parseID(v json.RawMessage) (int64, bool) {
	t := strings.TrimSpace(string(v))
	if strings.HasPrefix(t, `"`) {
		var s string
		if json.Unmarshal(v, &s) != nil {
			return 0, false
		}
		t = strings.TrimSpace(s)
	}
	n, err := strconv.ParseInt(t, 10, 64)
	return n, err == nil
}

func rawText(v json.RawMessage) any {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return nil
	}
	return x
}
