package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/schemas"
)

func TestScanData(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", maxStringRunes+1)
	for data, want := range map[string]string{
		validData: "",
		`{"employee":{"id":"E-42","firstName":"` + strings.Repeat("😀", maxStringRunes) + `"}}`:            "",
		`{"employee":{"id":"E-42","firstName":"` + strings.Repeat(`\ud83d\ude00`, maxStringRunes) + `"}}`: "",
		`{"employee":{"id":"E-42","firstName":"` + strings.Repeat(`\u0041`, maxStringRunes) + `"}}`:       "",
		`{"clientId":-9007199254740991,"x":[1.5,true,false,null,{}]}`:                                     "",
		`{"employee":{"id":"E-42","firstName":"` + long + `"}}`:                                           `data: "/employee/firstName": string is longer than 254 characters`,
		`{"employee":{"id":"E-42","firstName":"` + strings.Repeat(`\u0041`, maxStringRunes+1) + `"}}`:     `data: "/employee/firstName": string is longer than 254 characters`,
		`{"employee":{"` + long + `":1}}`:                                                                 `data: "/employee": a member name is longer than 254 characters`,
		`{"employee":{"id":"E-42"},"clientId":1e3}`:                                                       `data: "/clientId": number has an exponent; write integers plainly`,
		`{"clientId":1E-999999}`:                                     `data: "/clientId": number has an exponent; write integers plainly`,
		`{"clientId":1` + strings.Repeat("0", maxNumberLength) + `}`: `data: "/clientId": number has more than 32 characters`,
		`{"employee":{"id":[[1]]}}`:                                  `data: "/employee/id/0": objects and arrays are nested more than 3 deep`,
		`{"a/b~c":[0,[[2]]]}`:                                        `data: "/a~1b~0c/1/0": objects and arrays are nested more than 3 deep`,
		`[` + strings.Repeat("0,", maxDataValues) + `0]`:             "data has more than 64 values",
		`1e999999`: `data: "/": number has an exponent; write integers plainly`,
		// Not JSON: left to the decoder, which says so.
		`{"employee":`: "",
		`]]]`:          "",
		`{"a":"b`:      "",
		`{"a":@}`:      "",
	} {
		derr := scanData([]byte(data))
		if want == "" {
			require.Nil(t, derr, "%.80s", data)
			continue
		}
		require.NotNil(t, derr, "%.80s", data)
		require.Equal(t, ReasonSchemaInvalid, derr.Reason)
		require.Equal(t, want, derr.Message)
	}
}

// The limits of scanData refuse no data the schema accepts: they sit above
// every bound the schema file states.
func TestScanLimitsFitTheSchema(t *testing.T) {
	t.Parallel()
	raw, err := schemas.FS.ReadFile(schemas.RequestFile)
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(raw, &schema))

	maxLength, depth, values := 0.0, 0, 0
	var walk func(s map[string]any, level int)
	walk = func(s map[string]any, level int) {
		if ref, ok := s["$ref"].(string); ok {
			def := schema["$defs"].(map[string]any)[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
			walk(def, level)
		}
		switch s["type"] {
		case "object":
			depth = max(depth, level)
			values++
			props, _ := s["properties"].(map[string]any)
			for _, p := range props {
				walk(p.(map[string]any), level+1)
			}
			require.Equal(t, false, s["additionalProperties"], "objects are closed")
		case "string", "integer":
			values++
		case nil:
		default:
			t.Fatalf("the schema now has a %v: scanData's limits must be reviewed", s["type"])
		}
		if n, ok := s["maxLength"].(float64); ok {
			maxLength = max(maxLength, n)
		}
		if n, ok := s["maximum"].(float64); ok {
			require.LessOrEqual(t, n, float64(1<<53-1))
			require.LessOrEqual(t, len(strconv.FormatFloat(n, 'f', -1, 64))+1, maxNumberLength) // a sign too
		}
		if n, ok := s["minimum"].(float64); ok {
			require.Greater(t, n, -math.Pow(10, maxNumberLength-2))
		}
	}
	walk(schema, 1)
	require.Equal(t, 2, depth, "the schema nests two objects")
	require.LessOrEqual(t, depth, maxDataDepth)
	require.LessOrEqual(t, values, maxDataValues)
	require.Equal(t, 254.0, maxLength)
	require.LessOrEqual(t, int(maxLength), maxStringRunes)
}

// The longest request the schema allows, written with as many bytes as
// JSON permits, is accepted in both modes.
func TestDecodeAcceptsTheLongestRequest(t *testing.T) {
	t.Parallel()
	escaped := func(n int) string { return strings.Repeat(`\ud83d\ude00`, n) } // one character in 12 bytes
	email := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	require.Len(t, email, 254)
	data := `{"employee":{"id":"` + escaped(64) + `","firstName":"` + escaped(100) + `","lastName":"` + strings.Repeat("😀", 100) +
		`","email":"` + strings.Repeat(`\u0061`, 64) + email[64:] + `"},"clientId":9007199254740991,"reference":"` + escaped(128) + `"}`
	require.Nil(t, scanData([]byte(data)))

	h := binaryHeader()
	h.Del("ce-subject")
	r, err := Decode(h, []byte(data))
	require.NoError(t, err)
	require.Equal(t, int64(9007199254740991), r.Data.ClientID)
	require.Equal(t, email, r.Data.Employee.Email)

	body := `{"specversion":"1.0","id":"req-0001","source":"urn:erp:acme","type":"employee.card.requested","datacontenttype":"application/json","data":` + data + `}`
	got, err := Decode(structured(), []byte(body))
	require.NoError(t, err)
	require.Equal(t, r.Data, got.Data)
}

// FuzzScanData holds scanData to refusing only data the schema refuses: when
// it refuses, decoding and validating the data in full, without the scan,
// refuses it too.
func FuzzScanData(f *testing.F) {
	f.Add([]byte(validData))
	f.Add([]byte(`{"employee":{"id":"E-42","firstName":"A","lastName":"L"},"clientId":9007199254740991,"reference":"` + strings.Repeat(`\u00e9`, 128) + `"}`))
	f.Add([]byte(`{"employee":{"id":"E","firstName":"A","lastName":"L"},"clientId":7,"clientId":7,"clientId":7}`))
	f.Add([]byte(`{"employee":{"id":"E","firstName":"A","lastName":"L"},"clientId":7e0}`))
	f.Add([]byte(`{"employee":{"id":"E","firstName":"A","lastName":"L"},"clientId":[[[7]]]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if scanData(data) == nil || !json.Valid(data) {
			return
		}
		// Numbers the scan refuses would cost the validator seconds;
		// the decode into int64 refuses them anyway.
		var out RequestData
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil || bytes.ContainsAny(data, "eE") && json.Unmarshal(data, &out) != nil {
			return
		}
		if schemas.ValidateRequestData(doc) == nil {
			require.Error(t, json.Unmarshal(data, &out), "scanData refused data the schema accepts: %q", data)
		}
	})
}

// Refusing a hostile input is bounded work, counted rather than timed (the
// benchmark BenchmarkRejectHostile reports the time): few allocations, few
// bytes allocated, and the validator, when reached, is handed only a small
// document. Before the scan, deep nesting made 30,000 allocations and 100 MB,
// 1e999999 made 2 MB of big.Rat, and long strings reached the validator's
// patterns whole. Not parallel: it swaps validateRequestData and counts the
// whole process's allocations.
func TestRejectingHostileInputIsBoundedWork(t *testing.T) {
	const (
		maxAllocs = 512
		maxBytes  = 16 * MaxEventSize
	)
	var handed []any
	defer func(v func(any) error) { validateRequestData = v }(validateRequestData)
	validateRequestData = func(doc any) error {
		handed = append(handed, doc)
		return schemas.ValidateRequestData(doc)
	}
	for _, in := range hostileInputs() {
		t.Run(in.name, func(t *testing.T) {
			_, err := Decode(in.header, in.body) // warm, and the validator's view
			require.Error(t, err)
			for _, doc := range handed {
				requireSmallDocument(t, doc, 1)
			}
			handed = nil

			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err = Decode(in.header, in.body)
			runtime.ReadMemStats(&after)
			require.Error(t, err)
			require.LessOrEqual(t, after.Mallocs-before.Mallocs, uint64(maxAllocs), "allocations")
			require.LessOrEqual(t, after.TotalAlloc-before.TotalAlloc, uint64(maxBytes), "bytes allocated")
		})
	}
}

// requireSmallDocument checks a decoded JSON value against scanData's limits.
func requireSmallDocument(t *testing.T, v any, depth int) int {
	t.Helper()
	values := 1
	switch v := v.(type) {
	case map[string]any:
		require.LessOrEqual(t, depth, maxDataDepth)
		for k, e := range v {
			require.LessOrEqual(t, len([]rune(k)), maxStringRunes)
			values += requireSmallDocument(t, e, depth+1)
		}
	case []any:
		require.LessOrEqual(t, depth, maxDataDepth)
		for _, e := range v {
			values += requireSmallDocument(t, e, depth+1)
		}
	case string:
		require.LessOrEqual(t, len([]rune(v)), maxStringRunes)
	case json.Number:
		require.LessOrEqual(t, len(v), maxNumberLength)
		require.NotContains(t, strings.ToLower(string(v)), "e", fmt.Sprintf("number %s", v))
	}
	require.LessOrEqual(t, values, maxDataValues)
	return values
}
