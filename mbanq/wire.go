package mbanq

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// The types in this file decode the loosely typed JSON of Fineract: ids come
// as numbers in some answers and as strings in others ("id":"107"), and
// httpStatusCode is a string. Public types use plain Go types; these exist
// only at the wire boundary.

// flexInt decodes a JSON number, a numeric string or null.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" || len(b) == 0 {
		*f = 0
		return nil
	}
	if b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*f = 0
			return nil
		}
		b = []byte(s)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		// Some numbers come as 12.0.
		fl, ferr := strconv.ParseFloat(string(b), 64)
		if ferr != nil || fl != float64(int64(fl)) {
			return fmt.Errorf("not an integer id: %q", b)
		}
		n = int64(fl)
	}
	*f = flexInt(n)
	return nil
}

// flexString decodes a JSON string, number or null as text.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*f = ""
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(s)
		return nil
	}
	*f = flexString(b)
	return nil
}

// flexBool decodes a JSON boolean, "true"/"false" or null.
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	switch string(bytes.Trim(bytes.TrimSpace(b), `"`)) {
	case "true":
		*f = true
	case "false", "null", "":
		*f = false
	default:
		return fmt.Errorf("not a boolean: %q", b)
	}
	return nil
}

// enumOption decodes Fineract's EnumOptionData ({"id","code","value"}) and
// also a bare number or string, which some MBanq answers use instead.
type enumOption struct {
	ID    int64
	Code  string
	Value string
}

func (e *enumOption) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		*e = enumOption{}
		return nil
	}
	if b[0] == '{' {
		var w struct {
			ID    flexInt    `json:"id"`
			Code  flexString `json:"code"`
			Value flexString `json:"value"`
		}
		if err := json.Unmarshal(b, &w); err != nil {
			return err
		}
		*e = enumOption{ID: int64(w.ID), Code: string(w.Code), Value: string(w.Value)}
		return nil
	}
	var id flexInt
	if err := id.UnmarshalJSON(b); err == nil {
		*e = enumOption{ID: int64(id)}
		return nil
	}
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	*e = enumOption{Value: string(s)}
	return nil
}

// idStrings encodes ids as JSON strings, as the MBanq tutorial sends role
// ids ("roles": ["2"]); Fineract reads both forms.
type idStrings []int64

func (ids idStrings) MarshalJSON() ([]byte, error) {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return json.Marshal(s)
}
