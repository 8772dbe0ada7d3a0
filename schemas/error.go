package schemas

import "strings"

// ValidationError reports why a document does not match a schema. Its Error
// is one line, so it fits a log attribute and a card.failed message.
type ValidationError struct {
	// Schema is the file in FS the document was checked against.
	Schema string
	// Violations lists every failed constraint, in the validator's order.
	Violations []Violation
}

// Violation is one failed constraint.
type Violation struct {
	// Path is the JSON Pointer of the offending value; "" is the whole document.
	Path string
	// Message says what is wrong with it.
	Message string
}

func (v Violation) String() string {
	p := v.Path
	if p == "" {
		p = "/"
	}
	return p + ": " + v.Message
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(e.Schema, ".json"))
	b.WriteString(" schema: ")
	for i, v := range e.Violations {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(v.String())
	}
	return oneLine(b.String())
}

// oneLine keeps messages on one line even when a violation quotes a value
// with a line break in it.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
