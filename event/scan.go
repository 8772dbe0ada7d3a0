package event

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Limits on the data of a request, checked by scanData in one pass before
// anything decodes or validates it. Each is above what
// schemas/employee.card.requested.json accepts (a test reads the schema to
// keep it so), so they refuse no data the schema would take; what they
// refuse would cost the decoder and the validator more than the rest of
// the request: the validator compares numbers as big.Rat (1e999999 is a
// million-digit integer to it), runs patterns over whole strings, and the
// decoder allocates for every value.
const (
	// maxDataDepth bounds the nesting of objects and arrays. The schema
	// nests two objects (the data and its employee); one more level lets
	// the validator say what is wrong with an array where a string belongs.
	maxDataDepth = 3
	// maxDataValues bounds the values in the data (objects, arrays,
	// strings, numbers and literals; member names are not counted). A
	// request has at most 8.
	maxDataValues = 64
	// maxStringRunes bounds every string, member names included: the
	// longest the schema allows is an e-mail address of 254 characters.
	maxStringRunes = 254
	// maxNumberLength bounds how a number is written; the largest the
	// schema allows, 2^53-1, takes 16 digits.
	maxNumberLength = 32
)

// scanData checks that data stays within the limits above, without decoding
// it: a single pass, whose work is linear in len(data) and stops at the first
// value past a limit. Numbers with an exponent are refused too: the schema's
// only number is clientId, an integer that must be written plainly to fit
// int64, and 1e999999 costs the validator a tenth of a second.
//
// It returns nil when data is within the limits, and also when data is not
// JSON (the decoder then says so); otherwise a schema_invalid error naming
// the first offending value.
func scanData(b []byte) *DecodeError {
	var stack [maxDataDepth]frame
	depth, values := 0, 0
	for i := 0; i < len(b); {
		c := b[i]
		switch c {
		case ' ', '\t', '\n', '\r', ':':
			i++
			continue
		case ',':
			if depth > 0 && !stack[depth-1].object {
				stack[depth-1].index++
			}
			i++
			continue
		case '}', ']':
			if depth == 0 {
				return nil // not JSON
			}
			depth--
			i++
			continue
		}
		end := 0
		if c == '"' {
			end = stringEndWithin(b, i, maxStringRunes)
			if end == tooManyRunes {
				if isName(b, i, depth, stack[:]) {
					return scanError(stack[:depth-1], "a member name is longer than %d characters", maxStringRunes)
				}
				return scanError(stack[:depth], "string is longer than %d characters", maxStringRunes)
			}
			if end < 0 {
				return nil // not JSON
			}
			if j := skipSpace(b, end); j < len(b) && b[j] == ':' && depth > 0 && stack[depth-1].object {
				stack[depth-1].key = b[i:end]
				i = j + 1
				continue
			}
		}
		values++
		if values > maxDataValues {
			return schemaInvalid("data has more than %d values", maxDataValues)
		}
		switch {
		case c == '"':
			i = end
		case c == '{' || c == '[':
			if depth == maxDataDepth {
				return scanError(stack[:depth], "objects and arrays are nested more than %d deep", maxDataDepth)
			}
			stack[depth] = frame{object: c == '{'}
			depth++
			i++
		case c == '-' || (c >= '0' && c <= '9'):
			j := i
			for j < len(b) && !isDelimiter(b[j]) {
				j++
			}
			switch number := b[i:j]; {
			case bytes.IndexAny(number, "eE") >= 0:
				return scanError(stack[:depth], "number has an exponent; write integers plainly")
			case len(number) > maxNumberLength:
				return scanError(stack[:depth], "number has more than %d characters", maxNumberLength)
			}
			i = j
		case c == 't' || c == 'f' || c == 'n':
			for i < len(b) && !isDelimiter(b[i]) {
				i++
			}
		default:
			return nil // not JSON
		}
	}
	return nil
}

// frame is an object or array scanData is in.
type frame struct {
	object bool
	key    []byte // objects: the raw name of the current member
	index  int    // arrays: the index of the current element
}

// tooManyRunes is what stringEndWithin returns for a string past its limit.
const tooManyRunes = -2

// stringEndWithin returns the index after the JSON string starting at b[i];
// -1 when it does not end; tooManyRunes as soon as it has more than max
// characters, so that it reads at most 12 bytes per character allowed.
// Characters are counted as the decoder will see them, or fewer (the second
// half of an escaped surrogate pair counts for nothing), so that no string
// within max is ever refused. b is valid UTF-8.
func stringEndWithin(b []byte, i, max int) int {
	runes := 0
	for j := i + 1; j < len(b); {
		switch c := b[j]; {
		case c == '"':
			return j + 1
		case c == '\\':
			if j+5 < len(b) && b[j+1] == 'u' {
				if !lowSurrogate(b[j+2 : j+6]) {
					runes++
				}
				j += 6
			} else {
				runes++
				j += 2
			}
		case c&0xC0 != 0x80: // the first byte of a character
			runes++
			j++
		default:
			j++
		}
		if runes > max {
			return tooManyRunes
		}
	}
	return -1
}

// lowSurrogate reports four hex digits in DC00-DFFF.
func lowSurrogate(hex []byte) bool {
	return (hex[0] == 'd' || hex[0] == 'D') && strings.IndexByte("cdefCDEF", hex[1]) >= 0
}

// isName reports whether the string at b[i] is a member name: it follows
// '{' or ',' in an object. Only used to word an error.
func isName(b []byte, i, depth int, stack []frame) bool {
	if depth == 0 || !stack[depth-1].object {
		return false
	}
	j := i - 1
	for j >= 0 && (b[j] == ' ' || b[j] == '\t' || b[j] == '\n' || b[j] == '\r') {
		j--
	}
	return j >= 0 && (b[j] == '{' || b[j] == ',')
}

// scanError words a refusal by scanData with the JSON Pointer of the value,
// as the validator's messages do.
func scanError(stack []frame, format string, args ...any) *DecodeError {
	e := schemaInvalid(format, args...)
	e.Message = "data: " + quoteShort(pointerOf(stack)) + ": " + e.Message
	return e
}

// pointerOf renders the position of scanData as a JSON Pointer ("/" for
// the data itself).
func pointerOf(stack []frame) string {
	if len(stack) == 0 {
		return "/"
	}
	var p strings.Builder
	for _, f := range stack {
		p.WriteByte('/')
		if !f.object {
			p.WriteString(strconv.Itoa(f.index))
			continue
		}
		var name string
		if json.Unmarshal(f.key, &name) != nil {
			name = string(f.key)
		}
		name = strings.ReplaceAll(name, "~", "~0")
		p.WriteString(strings.ReplaceAll(name, "/", "~1"))
	}
	return p.String()
}
