package cli

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// printable returns s fit for a terminal: what a publisher, a bank or a
// database wrote (request ids, sources, reasons, error texts) may hold
// control characters, and an escape sequence printed raw can clear the
// screen, rewrite earlier lines or change a terminal's settings. Every
// character strconv.IsPrint refuses (C0 controls including tab and newline,
// DEL, C1 controls such as CSI U+009B, bidirectional overrides, zero-width
// and other format characters, separators other than the space) is written
// as \u escapes (\u001b for ESC, a UTF-16 pair beyond U+FFFF), and each
// byte of invalid UTF-8 as \xNN, so the escape sequence shows as text. The
// \u escapes are JSON's too, so a compact JSON document stays valid
// through printable. Everything else, backslashes included, is left as it
// is.
//
// Every value the commands print that they did not write themselves goes
// through it.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+size])
		case r > 0xffff:
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, hi, lo)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}
