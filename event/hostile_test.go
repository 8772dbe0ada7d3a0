package event

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// hostileInput is one entry of the catalogue of hostile messages: what
// anyone who can publish on the request subject can send. Each is at or
// near MaxEventSize, since a message is refused unread beyond it.
type hostileInput struct {
	name   string
	header nats.Header
	body   []byte
	// reason is the refusal reason Decode gives, and wantID the request id
	// the refusal still carries so that the request is answered ("" when
	// the message names none that can be read).
	reason, wantID string
}

// Parts of a valid request's data, to build hostile data around.
const (
	validEmployee = `"employee":{"id":"E-42","firstName":"Ada","lastName":"Lovelace"}`
	// structuredHead is a valid structured event up to its data.
	structuredHead = `{"specversion":"1.0","id":"req-0001","source":"urn:erp:acme","type":"employee.card.requested","subject":"E-42","datacontenttype":"application/json",`
)

// fill repeats unit, then cuts it, to n bytes (n < 0 gives "").
func fill(unit string, n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}

// repeatN repeats unit as often as it fits in n bytes, whole.
func repeatN(unit string, n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat(unit, n/len(unit))
}

// nested opens and closes brackets so that the whole takes about n bytes, or
// depth levels when depth > 0.
func nested(open, close string, n, depth int) string {
	if depth <= 0 {
		depth = n / (len(open) + len(close))
	}
	return strings.Repeat(open, depth) + strings.Repeat(close, depth)
}

// hostileData are data payloads: each takes the room it is given (bytes)
// and returns the data, which must come near filling it.
var hostileData = []struct {
	name string
	data func(room int) string
}{
	// Numbers: the validator compares numbers as big.Rat, and 1e999999
	// is a million-digit integer to it.
	{"exponent clientId", func(int) string { return `{` + validEmployee + `,"clientId":1e999999}` }},
	{"negative exponent clientId", func(int) string { return `{` + validEmployee + `,"clientId":1E-999999}` }},
	{"exponent everywhere", func(int) string {
		return `{"employee":{"id":1e999999,"firstName":2e999999,"lastName":3e999999,"email":4e999999},"clientId":5e999999,"reference":6e999999}`
	}},
	{"data an exponent", func(int) string { return `1e999999` }},
	{"exponents in an array", func(room int) string {
		p := `{` + validEmployee + `,"clientId":[`
		return p + strings.TrimSuffix(repeatN("1e999999,", room-len(p)-2), ",") + `]}`
	}},
	{"exponents under unknown keys", func(room int) string {
		var b strings.Builder
		b.WriteString(`{` + validEmployee + `,"clientId":7`)
		for i := 0; b.Len() < room-30; i++ {
			fmt.Fprintf(&b, `,"k%d":1e999999`, i)
		}
		b.WriteString(`}`)
		return b.String()
	}},
	{"long integer clientId", func(room int) string {
		p := `{` + validEmployee + `,"clientId":1`
		return p + fill("0", room-len(p)-1) + `}`
	}},
	{"long fraction clientId", func(room int) string {
		p := `{` + validEmployee + `,"clientId":0.`
		return p + fill("0", room-len(p)-2) + `1}`
	}},
	{"long exponent digits", func(room int) string {
		p := `{` + validEmployee + `,"clientId":1e`
		return p + fill("9", room-len(p)-1) + `}`
	}},
	{"many small numbers", func(room int) string {
		p := `{` + validEmployee + `,"clientId":7,"x":[`
		return p + strings.TrimSuffix(repeatN("0,", room-len(p)-2), ",") + `]}`
	}},
	{"data an array of numbers", func(room int) string {
		return `[` + strings.TrimSuffix(repeatN("1,", room-2), ",") + `]`
	}},

	// Nesting: every level used to add a path string as long as the path.
	{"deep arrays 9999", func(int) string {
		return `{` + validEmployee + `,"clientId":7,"x":` + nested("[", "]", 0, 9999) + `}`
	}},
	{"deep arrays to the limit", func(room int) string {
		p := `{` + validEmployee + `,"clientId":7,"x":`
		return p + nested("[", "]", room-len(p)-1, 0) + `}`
	}},
	{"deep objects 9999", func(int) string {
		return `{` + validEmployee + `,"clientId":7,"x":` + nested(`{"x":`, `}`, 0, 9998) + `}`
	}},
	{"deep objects to the limit", func(room int) string {
		p := `{` + validEmployee + `,"clientId":7,"x":`
		return p + nested(`{"":`, `}`, room-len(p)-1, 0) + `}`
	}},
	{"deep arrays in employee", func(int) string {
		return `{"employee":{"id":` + nested("[", "]", 0, 9990) + `},"clientId":7}`
	}},
	{"deep arrays ending in an exponent", func(int) string {
		return `{` + validEmployee + `,"clientId":` + strings.Repeat("[", 9990) + `1e999999` + strings.Repeat("]", 9990) + `}`
	}},
	{"unclosed arrays", func(room int) string { return fill("[", room) }},

	// Strings: the validator runs patterns and format checks on them.
	{"long firstName", func(room int) string {
		p := `{"employee":{"id":"E-42","lastName":"L","firstName":"`
		return p + fill("a", room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"long lastName of spaces", func(room int) string {
		p := `{"employee":{"id":"E-42","firstName":"A","lastName":"`
		return p + fill(" ", room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"long employee id", func(room int) string {
		p := `{"employee":{"firstName":"A","lastName":"L","id":"E`
		return p + fill("-", room-len(p)-len(` "},"clientId":7}`)) + ` "},"clientId":7}`
	}},
	{"long email", func(room int) string {
		p := `{"employee":{"id":"E-42","firstName":"A","lastName":"L","email":"a`
		return p + fill("@a.", room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"long reference", func(room int) string {
		p := `{` + validEmployee + `,"clientId":7,"reference":"`
		return p + fill("r", room-len(p)-len("\\u0001\"}")) + `\u0001"}`
	}},
	{"firstName of escapes", func(room int) string {
		p := `{"employee":{"id":"E-42","lastName":"L","firstName":"`
		return p + repeatN(`\u0000`, room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"firstName of surrogate pairs", func(room int) string {
		p := `{"employee":{"id":"E-42","lastName":"L","firstName":"`
		return p + repeatN(`\ud83d\ude00`, room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"firstName of 4-byte runes", func(room int) string {
		p := `{"employee":{"id":"E-42","lastName":"L","firstName":"`
		return p + repeatN("😀", room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"long key", func(room int) string {
		p := `{` + validEmployee + `,"clientId":7,"`
		return p + fill("k", room-len(p)-len(`":1}`)) + `":1}`
	}},

	// Keys.
	{"many unknown keys", func(room int) string {
		var b strings.Builder
		b.WriteString(`{` + validEmployee + `,"clientId":7`)
		for i := 0; b.Len() < room-20; i++ {
			fmt.Fprintf(&b, `,"%x":0`, i)
		}
		b.WriteString(`}`)
		return b.String()
	}},
	{"many unknown keys in employee", func(room int) string {
		var b strings.Builder
		b.WriteString(`{"clientId":7,"employee":{"id":"E-42","firstName":"A","lastName":"L"`)
		for i := 0; b.Len() < room-20; i++ {
			fmt.Fprintf(&b, `,"%x":0`, i)
		}
		b.WriteString(`}}`)
		return b.String()
	}},
	{"many duplicated keys", func(room int) string {
		p := `{` + validEmployee + `,"clientId":0`
		return p + repeatN(`,"reference":"x"`, room-len(p)-1) + `}`
	}},
	{"many duplicated exponents", func(room int) string {
		p := `{` + validEmployee
		return p + repeatN(`,"clientId":1e999999`, room-len(p)-len(`,"clientId":7}`)) + `,"clientId":7}`
	}},

	// Bytes that are not JSON, or not text.
	{"invalid UTF-8 in firstName", func(room int) string {
		p := `{"employee":{"id":"E-42","lastName":"L","firstName":"`
		return p + fill("\xff", room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"NUL bytes in firstName", func(room int) string {
		p := `{"employee":{"id":"E-42","lastName":"L","firstName":"`
		return p + fill("\x00", room-len(p)-len(`"},"clientId":7}`)) + `"},"clientId":7}`
	}},
	{"junk", func(room int) string {
		r := rand.New(rand.NewPCG(12, 12))
		b := make([]byte, room)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return string(b)
	}},
	{"white space", func(room int) string { return fill(" \t\r\n", room) }},
	{"data a long string", func(room int) string { return `"` + fill("s", room-2) + `"` }},
}

// hostileInputs builds the catalogue: every hostile data in binary mode and
// in structured mode, then hostile headers and hostile structured events.
func hostileInputs() []hostileInput {
	var out []hostileInput
	for _, d := range hostileData {
		h := binaryHeader()
		out = append(out, hostileInput{name: "binary/" + d.name, header: h,
			body: []byte(d.data(MaxEventSize - size(h, nil)))})

		h = structured()
		room := MaxEventSize - size(h, nil) - len(structuredHead) - len(`"data":}`)
		out = append(out, hostileInput{name: "structured/" + d.name, header: h,
			body: []byte(structuredHead + `"data":` + d.data(room) + `}`)})
	}
	out = append(out, hostileHeaders()...)
	out = append(out, hostileStructured()...)
	out = append(out, hostileOversized()...)
	for i := range out {
		out[i].reason, out[i].wantID = hostileExpected(out[i].name)
	}
	return out
}

// schemaInvalidData is data the schema refuses, for messages whose hostile
// part is elsewhere.
const schemaInvalidData = `{` + validEmployee + `,"clientId":0}`

func hostileHeaders() []hostileInput {
	var out []hostileInput
	add := func(name string, edit func(h nats.Header, room int)) {
		h := binaryHeader()
		edit(h, MaxEventSize-size(h, []byte(schemaInvalidData)))
		out = append(out, hostileInput{name: "header/" + name, header: h, body: []byte(schemaInvalidData)})
	}
	add("many extensions", func(h nats.Header, room int) {
		for i := 0; room > 20; i++ {
			name, value := fmt.Sprintf("ce-x%d", i), "v"
			h.Set(name, value)
			room -= len(name) + len(value)
		}
	})
	add("many other headers", func(h nats.Header, room int) {
		for i := 0; room > 20; i++ {
			name, value := fmt.Sprintf("X-%d", i), "v"
			h.Set(name, value)
			room -= len(name) + len(value)
		}
	})
	add("one header given many times", func(h nats.Header, room int) {
		for ; room > 20; room -= len("ce-id") + len("req-0001") {
			h.Add("ce-id", "req-0001")
		}
	})
	add("long traceparent", func(h nats.Header, room int) {
		h.Set("ce-traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"+fill("f", room-100))
	})
	add("long tracestate", func(h nats.Header, room int) {
		h.Set("ce-traceparent", testTraceParent)
		h.Set("ce-tracestate", fill("a=b,", room-200))
	})
	add("long content type", func(h nats.Header, room int) {
		h.Set("content-type", "application/json; p="+fill("x", room-100))
	})
	add("content type with many parameters", func(h nats.Header, room int) {
		var b strings.Builder
		b.WriteString("application/json")
		for i := 0; b.Len() < room-100; i++ {
			fmt.Fprintf(&b, "; p%d=v", i)
		}
		h.Set("content-type", b.String())
	})
	add("long time", func(h nats.Header, room int) {
		h.Set("ce-time", "2026-11-25T09:30:00"+fill("9", room-100)+"Z")
	})
	add("long specversion", func(h nats.Header, room int) { h.Set("ce-specversion", fill("1.0", room-100)) })
	add("long type", func(h nats.Header, room int) { h.Set("ce-type", fill("t", room-100)) })
	add("long subject", func(h nats.Header, room int) { h.Set("ce-subject", fill("s", room-100)) })
	add("long id", func(h nats.Header, room int) { h.Set("ce-id", fill("i", room-100)) })
	add("long header name", func(h nats.Header, room int) { h.Set("ce-"+fill("n", room-100), "v") })
	add("NUL in subject", func(h nats.Header, room int) { h.Set("ce-subject", "E-42"+fill("\x00", room-100)) })
	add("invalid UTF-8 in source", func(h nats.Header, room int) { h.Set("ce-source", fill("\xff", room-100)) })
	add("control characters in an extension", func(h nats.Header, room int) { h.Set("ce-x", fill("\x01", room-100)) })
	return out
}

// hostileStructured are structured events whose hostile part is outside the
// data.
func hostileStructured() []hostileInput {
	var out []hostileInput
	room := MaxEventSize - size(structured(), nil)
	add := func(name, body string) {
		out = append(out, hostileInput{name: "event/" + name, header: structured(), body: []byte(body)})
	}
	tail := `"data":` + schemaInvalidData + `}`
	withMembers := func(member func(i int) string) string {
		var b strings.Builder
		b.WriteString(structuredHead)
		for i := 0; b.Len() < room-len(tail)-40; i++ {
			b.WriteString(member(i))
		}
		b.WriteString(tail)
		return b.String()
	}
	add("many extensions", withMembers(func(i int) string { return fmt.Sprintf(`"x%d":"v",`, i) }))
	add("many exponent extensions", withMembers(func(i int) string { return fmt.Sprintf(`"x%d":1e999999,`, i) }))
	add("many duplicated ids", withMembers(func(int) string { return `"id":"req-0001",` }))
	add("long number extension", structuredHead+`"x":1`+fill("0", room-len(structuredHead)-len(tail)-10)+`,`+tail)
	add("long exponent extension", structuredHead+`"x":1e`+fill("9", room-len(structuredHead)-len(tail)-10)+`,`+tail)
	add("deep extension", structuredHead+`"x":`+nested("[", "]", 0, 9999)+`,`+tail)
	add("deep object extension", structuredHead+`"x":`+nested(`{"x":`, "}", 0, 9998)+`,`+tail)
	add("id an exponent", `{"specversion":"1.0","id":1e999999,"source":"urn:erp:acme","type":"employee.card.requested","data":`+schemaInvalidData+`}`)
	add("long time", structuredHead+`"time":"2026-11-25T09:30:00`+fill("9", room-len(structuredHead)-len(tail)-40)+`Z",`+tail)
	add("long traceparent", structuredHead+`"traceparent":"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-`+fill("f", room-len(structuredHead)-len(tail)-120)+`",`+tail)
	data := `{"employee":{"id":1e999999,"firstName":2e999999,"lastName":3e999999},"clientId":5e999999}`
	add("data_base64 of exponents", `{"specversion":"1.0","id":"req-0001","source":"urn:erp:acme","type":"employee.card.requested","datacontenttype":"application/json","data_base64":"`+
		base64.StdEncoding.EncodeToString([]byte(data))+`"}`)
	deep := `{` + validEmployee + `,"clientId":7,"x":` + nested("[", "]", 0, 9999) + `}`
	add("data_base64 of deep arrays", `{"specversion":"1.0","id":"req-0001","source":"urn:erp:acme","type":"employee.card.requested","datacontenttype":"application/json","data_base64":"`+
		base64.StdEncoding.EncodeToString([]byte(deep))+`"}`)
	add("NUL bytes", structuredHead+`"x":"`+fill("\x00", room-len(structuredHead)-len(tail)-10)+`",`+tail)
	add("invalid UTF-8", structuredHead+`"x":"`+fill("\xfe", room-len(structuredHead)-len(tail)-10)+`",`+tail)
	add("cut short", (structuredHead + `"x":"` + fill("y", room))[:room])
	add("braces", fill("{", room))
	return out
}

// hostileOversized are just over the limit: refused unread, but their
// request must still be found.
func hostileOversized() []hostileInput {
	h := structured()
	tail := `,"id":"req-0001","source":"urn:erp:acme"}`
	n := MaxEventSize - size(h, nil) - len(`{"data":`) - len(tail) + 2
	return []hostileInput{
		{name: "oversized/nested before the id", header: h,
			body: []byte(`{"data":` + nested("[", "]", n, 0) + tail)},
		{name: "oversized/1 MiB nested before the id", header: h,
			body: []byte(`{"data":` + nested("[", "]", maxScan-len(tail)-10, 0) + tail)},
		{name: "oversized/binary", header: binaryHeader(),
			body: []byte(`{"pad":"` + fill("x", MaxEventSize) + `"}`)},
	}
}

// hostileRefusals is how each hostile input is refused: the reason, and the
// request id the refusal carries. They are the refusals cardbridge gave
// before it scanned events for hostile input, except where marked: an event with too many attributes, too
// long a content type or too long a number in an attribute is now refused
// for that, before its data is read; and
// exponents in structured data, which the SDK failed to skip, are now
// refused as in binary mode.
var hostileRefusals = map[string]struct{ reason, id string }{
	"binary/exponent clientId":                     {ReasonSchemaInvalid, "req-0001"},
	"structured/exponent clientId":                 {ReasonSchemaInvalid, "req-0001"},
	"binary/negative exponent clientId":            {ReasonSchemaInvalid, "req-0001"},
	"structured/negative exponent clientId":        {ReasonSchemaInvalid, "req-0001"},
	"binary/exponent everywhere":                   {ReasonSchemaInvalid, "req-0001"},
	"structured/exponent everywhere":               {ReasonSchemaInvalid, "req-0001"}, // was invalid_event: the SDK misread the numbers; now as in binary mode
	"binary/data an exponent":                      {ReasonSchemaInvalid, "req-0001"},
	"structured/data an exponent":                  {ReasonSchemaInvalid, "req-0001"},
	"binary/exponents in an array":                 {ReasonSchemaInvalid, "req-0001"},
	"structured/exponents in an array":             {ReasonSchemaInvalid, "req-0001"}, // was invalid_event: the SDK misread the numbers; now as in binary mode
	"binary/exponents under unknown keys":          {ReasonSchemaInvalid, "req-0001"},
	"structured/exponents under unknown keys":      {ReasonSchemaInvalid, "req-0001"}, // was invalid_event: the SDK misread the numbers; now as in binary mode
	"binary/long integer clientId":                 {ReasonSchemaInvalid, "req-0001"},
	"structured/long integer clientId":             {ReasonSchemaInvalid, "req-0001"},
	"binary/long fraction clientId":                {ReasonSchemaInvalid, "req-0001"},
	"structured/long fraction clientId":            {ReasonSchemaInvalid, "req-0001"},
	"binary/long exponent digits":                  {ReasonSchemaInvalid, "req-0001"},
	"structured/long exponent digits":              {ReasonSchemaInvalid, "req-0001"},
	"binary/many small numbers":                    {ReasonSchemaInvalid, "req-0001"},
	"structured/many small numbers":                {ReasonSchemaInvalid, "req-0001"},
	"binary/data an array of numbers":              {ReasonSchemaInvalid, "req-0001"},
	"structured/data an array of numbers":          {ReasonSchemaInvalid, "req-0001"},
	"binary/deep arrays 9999":                      {ReasonSchemaInvalid, "req-0001"},
	"structured/deep arrays 9999":                  {ReasonInvalidEvent, ""},
	"binary/deep arrays to the limit":              {ReasonSchemaInvalid, "req-0001"},
	"structured/deep arrays to the limit":          {ReasonInvalidEvent, ""},
	"binary/deep objects 9999":                     {ReasonSchemaInvalid, "req-0001"},
	"structured/deep objects 9999":                 {ReasonInvalidEvent, ""},
	"binary/deep objects to the limit":             {ReasonSchemaInvalid, "req-0001"},
	"structured/deep objects to the limit":         {ReasonInvalidEvent, ""},
	"binary/deep arrays in employee":               {ReasonSchemaInvalid, "req-0001"},
	"structured/deep arrays in employee":           {ReasonSchemaInvalid, "req-0001"},
	"binary/deep arrays ending in an exponent":     {ReasonSchemaInvalid, "req-0001"},
	"structured/deep arrays ending in an exponent": {ReasonSchemaInvalid, "req-0001"},
	"binary/unclosed arrays":                       {ReasonSchemaInvalid, "req-0001"},
	"structured/unclosed arrays":                   {ReasonInvalidEvent, ""},
	"binary/long firstName":                        {ReasonSchemaInvalid, "req-0001"},
	"structured/long firstName":                    {ReasonSchemaInvalid, "req-0001"},
	"binary/long lastName of spaces":               {ReasonSchemaInvalid, "req-0001"},
	"structured/long lastName of spaces":           {ReasonSchemaInvalid, "req-0001"},
	"binary/long employee id":                      {ReasonSchemaInvalid, "req-0001"},
	"structured/long employee id":                  {ReasonSchemaInvalid, "req-0001"},
	"binary/long email":                            {ReasonSchemaInvalid, "req-0001"},
	"structured/long email":                        {ReasonSchemaInvalid, "req-0001"},
	"binary/long reference":                        {ReasonSchemaInvalid, "req-0001"},
	"structured/long reference":                    {ReasonSchemaInvalid, "req-0001"},
	"binary/firstName of escapes":                  {ReasonSchemaInvalid, "req-0001"},
	"structured/firstName of escapes":              {ReasonSchemaInvalid, "req-0001"},
	"binary/firstName of surrogate pairs":          {ReasonSchemaInvalid, "req-0001"},
	"structured/firstName of surrogate pairs":      {ReasonSchemaInvalid, "req-0001"},
	"binary/firstName of 4-byte runes":             {ReasonSchemaInvalid, "req-0001"},
	"structured/firstName of 4-byte runes":         {ReasonSchemaInvalid, "req-0001"},
	"binary/long key":                              {ReasonSchemaInvalid, "req-0001"},
	"structured/long key":                          {ReasonSchemaInvalid, "req-0001"},
	"binary/many unknown keys":                     {ReasonSchemaInvalid, "req-0001"},
	"structured/many unknown keys":                 {ReasonSchemaInvalid, "req-0001"},
	"binary/many unknown keys in employee":         {ReasonSchemaInvalid, "req-0001"},
	"structured/many unknown keys in employee":     {ReasonSchemaInvalid, "req-0001"},
	"binary/many duplicated keys":                  {ReasonSchemaInvalid, "req-0001"},
	"structured/many duplicated keys":              {ReasonSchemaInvalid, "req-0001"},
	"binary/many duplicated exponents":             {ReasonSchemaInvalid, "req-0001"},
	"structured/many duplicated exponents":         {ReasonSchemaInvalid, "req-0001"}, // was invalid_event: the SDK misread the numbers; now as in binary mode
	"binary/invalid UTF-8 in firstName":            {ReasonSchemaInvalid, "req-0001"},
	"structured/invalid UTF-8 in firstName":        {ReasonInvalidEvent, "req-0001"},
	"binary/NUL bytes in firstName":                {ReasonSchemaInvalid, "req-0001"},
	"structured/NUL bytes in firstName":            {ReasonInvalidEvent, ""},
	"binary/junk":                                  {ReasonSchemaInvalid, "req-0001"},
	"structured/junk":                              {ReasonInvalidEvent, ""},
	"binary/white space":                           {ReasonSchemaInvalid, "req-0001"},
	"structured/white space":                       {ReasonInvalidEvent, ""},
	"binary/data a long string":                    {ReasonSchemaInvalid, "req-0001"},
	"structured/data a long string":                {ReasonSchemaInvalid, "req-0001"},
	"header/many extensions":                       {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: now refused for its attributes, before its data
	"header/many other headers":                    {ReasonSchemaInvalid, "req-0001"},
	"header/one header given many times":           {ReasonSchemaInvalid, "req-0001"},
	"header/long traceparent":                      {ReasonInvalidEvent, "req-0001"},
	"header/long tracestate":                       {ReasonSchemaInvalid, "req-0001"},
	"header/long content type":                     {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: now refused for its attributes, before its data
	"header/content type with many parameters":     {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: now refused for its attributes, before its data
	"header/long time":                             {ReasonInvalidEvent, "req-0001"},
	"header/long specversion":                      {ReasonInvalidEvent, "req-0001"},
	"header/long type":                             {ReasonInvalidEvent, "req-0001"},
	"header/long subject":                          {ReasonInvalidEvent, "req-0001"},
	"header/long id":                               {ReasonInvalidEvent, ""},
	"header/long header name":                      {ReasonSchemaInvalid, "req-0001"},
	"header/NUL in subject":                        {ReasonInvalidEvent, "req-0001"},
	"header/invalid UTF-8 in source":               {ReasonInvalidEvent, "req-0001"},
	"header/control characters in an extension":    {ReasonInvalidEvent, "req-0001"},
	"event/many extensions":                        {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: now refused for its attributes, before its data
	"event/many exponent extensions":               {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: now refused for its attributes, before its data
	"event/many duplicated ids":                    {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: now refused for its attributes, before its data
	"event/long number extension":                  {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: a 64 KB number is no CloudEvents integer
	"event/long exponent extension":                {ReasonInvalidEvent, "req-0001"}, // was schema_invalid: a 64 KB number is no CloudEvents integer
	"event/deep extension":                         {ReasonInvalidEvent, "req-0001"},
	"event/deep object extension":                  {ReasonInvalidEvent, ""},
	"event/id an exponent":                         {ReasonInvalidEvent, ""},
	"event/long time":                              {ReasonInvalidEvent, "req-0001"},
	"event/long traceparent":                       {ReasonInvalidEvent, "req-0001"},
	"event/data_base64 of exponents":               {ReasonSchemaInvalid, "req-0001"},
	"event/data_base64 of deep arrays":             {ReasonSchemaInvalid, "req-0001"},
	"event/NUL bytes":                              {ReasonInvalidEvent, ""},
	"event/invalid UTF-8":                          {ReasonInvalidEvent, "req-0001"},
	"event/cut short":                              {ReasonInvalidEvent, ""},
	"event/braces":                                 {ReasonInvalidEvent, ""},
	"oversized/nested before the id":               {ReasonInvalidEvent, "req-0001"},
	"oversized/1 MiB nested before the id":         {ReasonInvalidEvent, "req-0001"},
	"oversized/binary":                             {ReasonInvalidEvent, "req-0001"},
}

func hostileExpected(name string) (string, string) {
	r, ok := hostileRefusals[name]
	if !ok {
		panic("no expected refusal for hostile input " + name)
	}
	return r.reason, r.id
}

// Every hostile input is refused for the right reason, and still names its
// request when it did so before, so that the request is answered.
func TestDecodeRejectsHostile(t *testing.T) {
	t.Parallel()
	for _, in := range hostileInputs() {
		t.Run(in.name, func(t *testing.T) {
			got, err := Decode(in.header, in.body)
			require.Nil(t, got)
			de := requireDecodeError(t, err, in.reason)
			require.NotEmpty(t, de.Message)
			require.LessOrEqual(t, len(de.Message), maxDecodeMessage)
			require.LessOrEqual(t, len(de.TraceParent), maxTraceParent)
			require.Equal(t, in.wantID, de.ID)
			if in.wantID != "" && in.name != "header/invalid UTF-8 in source" {
				require.Equal(t, "urn:erp:acme", de.Source)
				require.True(t, de.Correlatable())
			}
		})
	}
}
