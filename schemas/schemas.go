// Package schemas holds the JSON Schemas (draft 2020-12) of the data payloads
// cardbridge reads and writes, and validators compiled from them once.
//
// The .json files are the published contract: ERP integrators and subscribers
// read them as they are, so each file is self-contained (no cross-file $ref).
//
// Decisions the files encode (their descriptions say the same):
//   - Every object has additionalProperties false, the incoming request
//     included. A card order moves money: an ERP field we do not know (a
//     spending limit, say) must be refused, not silently ignored. A new
//     field enters through a new version of the schema.
//   - Strings that can reach a NATS header (the employee id, which is the
//     CloudEvent subject) exclude control characters and surrounding white
//     space, which transports and the CloudEvents SDK trim; names must not be
//     blank. Lengths are MBanq's limits (names 100, employee id 64).
//   - Integers are capped at 2^53-1 so that JavaScript subscribers read the
//     ids exactly.
//   - card.failed's reason is an enum; the Go list is event.Reasons, and a
//     test keeps the two equal.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// FS holds the schema files, named after the CloudEvent type whose data they
// describe, for anyone who serves or prints them.
//
//go:embed *.json
var FS embed.FS

// File names in FS.
const (
	RequestFile = "employee.card.requested.json"
	IssuedFile  = "card.issued.json"
	FailedFile  = "card.failed.json"
)

// base is the URL prefix of every schema's $id; the compiler resolves ids
// against the embedded files and never goes to the network.
const base = "https://github.com/cardbridge/cardbridge/schemas/"

type compiled struct {
	request, issued, failed *jsonschema.Schema
}

// load compiles the schemas on first use, not at init, so that a program that
// never validates does not pay for it; a broken embedded schema is a build
// defect and panics, which every test run catches at once.
var load = sync.OnceValue(func() compiled {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// Draft 2020-12 treats format as an annotation by default; we want
	// "email" and "date-time" enforced.
	c.AssertFormat()
	compile := func(file string) *jsonschema.Schema {
		raw, err := FS.ReadFile(file)
		if err != nil {
			panic(fmt.Sprintf("schemas: reading %s: %v", file, err))
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			panic(fmt.Sprintf("schemas: parsing %s: %v", file, err))
		}
		if err := c.AddResource(base+file, doc); err != nil {
			panic(fmt.Sprintf("schemas: adding %s: %v", file, err))
		}
		s, err := c.Compile(base + file)
		if err != nil {
			panic(fmt.Sprintf("schemas: compiling %s: %v", file, err))
		}
		return s
	}
	return compiled{
		request: compile(RequestFile),
		issued:  compile(IssuedFile),
		failed:  compile(FailedFile),
	}
})

// ValidateRequestData validates the data of an employee.card.requested event.
// See [Validate] for what v may be.
func ValidateRequestData(v any) error { return validate(RequestFile, load().request, v) }

// ValidateIssued validates the data of a card.issued event.
// See [Validate] for what v may be.
func ValidateIssued(v any) error { return validate(IssuedFile, load().issued, v) }

// ValidateFailed validates the data of a card.failed event.
// See [Validate] for what v may be.
func ValidateFailed(v any) error { return validate(FailedFile, load().failed, v) }

// Validate validates v against the schema in FS named file (one of the File
// constants). v may be raw JSON ([]byte or json.RawMessage), a value decoded
// from JSON (preferably with json.Decoder.UseNumber, so that large integers
// keep their precision), or any other Go value, which is first encoded to
// JSON exactly as it would be sent.
func Validate(file string, v any) error {
	c := load()
	switch file {
	case RequestFile:
		return validate(file, c.request, v)
	case IssuedFile:
		return validate(file, c.issued, v)
	case FailedFile:
		return validate(file, c.failed, v)
	}
	return fmt.Errorf("schemas: no schema named %q", file)
}

func validate(file string, s *jsonschema.Schema, v any) error {
	doc, err := instance(v)
	if err != nil {
		return &ValidationError{Schema: file, Violations: []Violation{{Message: err.Error()}}}
	}
	err = s.Validate(doc)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return &ValidationError{Schema: file, Violations: []Violation{{Message: err.Error()}}}
	}
	out := &ValidationError{Schema: file}
	collect(ve, &out.Violations)
	return out
}

// instance turns v into the generic JSON value the validator walks.
func instance(v any) (any, error) {
	switch v := v.(type) {
	case nil, bool, string, json.Number, float64, map[string]any, []any:
		return v, nil
	case json.RawMessage:
		return parse(v)
	case []byte:
		return parse(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding to JSON: %w", err)
	}
	return parse(b)
}

func parse(b []byte) (any, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	return doc, nil
}

// printer renders the validator's messages; English is what operators and
// logs get.
var printer = message.NewPrinter(language.English)

// collect flattens the validator's error tree to its leaves: the nodes in
// between only repeat "this subschema failed" and make a message multi-line.
func collect(e *jsonschema.ValidationError, out *[]Violation) {
	if len(e.Causes) == 0 {
		*out = append(*out, Violation{Path: pointer(e.InstanceLocation), Message: describe(e)})
		return
	}
	for _, c := range e.Causes {
		collect(c, out)
	}
}

// describe words a failed constraint. For patterns and formats the
// library's message quotes the offending value (a name, an e-mail address),
// which would put personal data into logs and events; these say what is
// wrong without it, from the $defs entry that holds the pattern.
func describe(e *jsonschema.ValidationError) string {
	switch k := e.ErrorKind.(type) {
	case *kind.Pattern:
		switch {
		case strings.HasSuffix(e.SchemaURL, "/$defs/identifier"):
			return "must not be empty, start or end with white space, or contain control characters"
		case strings.HasSuffix(e.SchemaURL, "/$defs/text"):
			return "must not be blank or contain control characters"
		}
		return "must not contain control characters"
	case *kind.Format:
		return "is not a valid " + k.Want
	}
	return e.ErrorKind.LocalizedString(printer)
}

// pointer renders an instance location as a JSON Pointer (RFC 6901).
func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		b.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return b.String()
}
