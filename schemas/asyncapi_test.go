package schemas_test

import (
	"bytes"
	"encoding/json"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/schemas"
)

// The AsyncAPI document is read by people and tools outside cardbridge;
// these tests keep it true to the schemas it references.

const schemaBase = "https://github.com/cardbridge/cardbridge/schemas/"

func loadAsyncAPI(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("asyncapi.yaml")
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	return doc
}

// refs lists every $ref in v with the JSON pointer of where it stands.
func refs(v any, at string, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if k == "$ref" {
				out[at] = child.(string)
				continue
			}
			refs(child, at+"/"+k, out)
		}
	case []any:
		for i, child := range v {
			refs(child, at+"/"+strconv.Itoa(i), out)
		}
	}
}

// resolve follows a local JSON pointer (#/a/b) in doc.
func resolve(doc map[string]any, ref string) (any, bool) {
	var cur any = doc
	for _, seg := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		seg = strings.ReplaceAll(strings.ReplaceAll(seg, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// deref returns v, or what its $ref names when it is a reference.
func deref(t *testing.T, doc map[string]any, v any) any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	if ref, ok := m["$ref"].(string); ok && strings.HasPrefix(ref, "#/") {
		target, found := resolve(doc, ref)
		require.True(t, found, ref)
		return deref(t, doc, target)
	}
	return v
}

func TestAsyncAPIReferencesResolve(t *testing.T) {
	doc := loadAsyncAPI(t)
	require.Equal(t, "3.0.0", doc["asyncapi"])
	all := map[string]string{}
	refs(doc, "#", all)
	require.NotEmpty(t, all)
	files := map[string]bool{}
	for at, ref := range all {
		if strings.HasPrefix(ref, "#/") {
			_, ok := resolve(doc, ref)
			require.True(t, ok, "%s: %s does not resolve", at, ref)
			continue
		}
		file := strings.TrimPrefix(ref, "./")
		require.NotContains(t, file, "#", "%s: refer to a whole schema file", at)
		_, err := schemas.FS.ReadFile(file)
		require.NoError(t, err, "%s: %s is not a schema file in schemas/", at, ref)
		files[file] = true
	}
	require.Equal(t, map[string]bool{schemas.RequestFile: true, schemas.IssuedFile: true, schemas.FailedFile: true}, files,
		"every payload schema is part of the document")

	var addresses []string
	for _, ch := range doc["channels"].(map[string]any) {
		addresses = append(addresses, ch.(map[string]any)["address"].(string))
	}
	sort.Strings(addresses)
	require.Equal(t, []string{event.TypeCardFailed, event.TypeCardIssued, event.TypeCardRequested}, addresses)
}

// compiler compiles the document's inline schemas, resolving their
// references to the schema files against the files' own $id.
func compiler(t *testing.T) *jsonschema.Compiler {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, f := range []string{schemas.RequestFile, schemas.IssuedFile, schemas.FailedFile} {
		raw, err := schemas.FS.ReadFile(f)
		require.NoError(t, err)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		require.NoError(t, err)
		require.NoError(t, c.AddResource(schemaBase+f, doc))
	}
	return c
}

// asJSON turns a YAML value into what the validator walks.
func asJSON(t *testing.T, v any) any {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	require.NoError(t, err)
	return out
}

func TestAsyncAPIExamplesValidate(t *testing.T) {
	doc := loadAsyncAPI(t)
	c := compiler(t)
	messages := doc["components"].(map[string]any)["messages"].(map[string]any)
	require.Len(t, messages, 4)
	inline := 0
	compileInline := func(name string, schema any) *jsonschema.Schema {
		inline++
		url := schemaBase + "asyncapi-" + name + "-" + strconv.Itoa(inline) + ".json"
		require.NoError(t, c.AddResource(url, asJSON(t, schema)))
		s, err := c.Compile(url)
		require.NoError(t, err, name)
		return s
	}
	examples := 0
	for name, raw := range messages {
		m := raw.(map[string]any)
		require.Contains(t, []string{event.TypeCardRequested, event.TypeCardIssued, event.TypeCardFailed}, m["name"], name)
		payload := jsonSchemaPayload(t, doc, name, m["payload"])
		var headers *jsonschema.Schema
		if h, ok := m["headers"]; ok {
			headers = compileInline(name+"-headers", deref(t, doc, h))
		}
		for _, ex := range m["examples"].([]any) {
			ex := ex.(map[string]any)
			examples++
			body := ex["payload"]
			require.NotNil(t, body, "%s: example %v has a payload", name, ex["name"])
			if ref, ok := payload["$ref"].(string); ok && !strings.HasPrefix(ref, "#/") {
				// The payload is a schema file: validate as the consumer does.
				require.NoError(t, schemas.Validate(strings.TrimPrefix(ref, "./"), body), "%s: example %v", name, ex["name"])
			} else {
				envelope := compileInline(name+"-payload", payload)
				require.NoError(t, envelope.Validate(asJSON(t, body)), "%s: example %v", name, ex["name"])
				data := body.(map[string]any)["data"]
				require.NoError(t, schemas.Validate(schemas.RequestFile, data), "%s: example %v data", name, ex["name"])
			}
			if h, ok := ex["headers"].(map[string]any); ok {
				require.NotNil(t, headers, "%s: example headers without a headers schema", name)
				require.NoError(t, headers.Validate(asJSON(t, h)), "%s: example %v headers", name, ex["name"])
				require.Equal(t, m["name"], h["ce-type"], "%s: example %v type", name, ex["name"])
			}
		}
	}
	require.GreaterOrEqual(t, examples, 5)
}

// jsonSchemaPayload returns the JSON Schema of a message's payload, which
// must be a Multi Format Schema Object declaring JSON Schema 2020-12 (read
// as an AsyncAPI Schema, a $ref drops the keywords beside it).
func jsonSchemaPayload(t *testing.T, doc map[string]any, name string, payload any) map[string]any {
	t.Helper()
	p, ok := deref(t, doc, payload).(map[string]any)
	require.True(t, ok, "%s: a payload", name)
	require.Equal(t, jsonSchemaFormat, p["schemaFormat"], "%s: the payload declares its format", name)
	schema, ok := p["schema"].(map[string]any)
	require.True(t, ok, "%s: the payload's schema", name)
	return schema
}

const jsonSchemaFormat = "application/schema+json;version=2020-12"

// Every payload is declared as JSON Schema 2020-12, and every part of a
// schema file that bounds a string says it is one: Ajv's strict mode
// refuses maxLength, pattern or format without a type, and the keywords
// beside a $ref are easy to lose.
func TestSchemasDeclareWhatTheyAre(t *testing.T) {
	doc := loadAsyncAPI(t)
	for name, raw := range doc["components"].(map[string]any)["messages"].(map[string]any) {
		jsonSchemaPayload(t, doc, name, raw.(map[string]any)["payload"])
	}
	for _, f := range []string{schemas.RequestFile, schemas.IssuedFile, schemas.FailedFile} {
		raw, err := schemas.FS.ReadFile(f)
		require.NoError(t, err)
		var schema any
		require.NoError(t, json.Unmarshal(raw, &schema))
		var untyped []string
		stringKeywordsWithoutType(schema, f+"#", &untyped)
		require.Empty(t, untyped, "string keywords without \"type\"")
	}
	bad := map[string]any{"properties": map[string]any{"x": map[string]any{"$ref": "#/$defs/text", "maxLength": 3}}}
	var untyped []string
	stringKeywordsWithoutType(bad, "bad#", &untyped)
	require.Equal(t, []string{"bad#/properties/x"}, untyped, "the check finds what Ajv's strict mode refuses")
}

func stringKeywordsWithoutType(v any, at string, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		if _, typed := v["type"]; !typed {
			for _, k := range []string{"maxLength", "minLength", "pattern", "format"} {
				if _, ok := v[k]; ok {
					*out = append(*out, at)
					break
				}
			}
		}
		for k, child := range v {
			stringKeywordsWithoutType(child, at+"/"+k, out)
		}
	case []any:
		for i, child := range v {
			stringKeywordsWithoutType(child, at+"/"+strconv.Itoa(i), out)
		}
	}
}

// A broken example must be caught: the checks above are not vacuous.
func TestAsyncAPICheckCatchesABadExample(t *testing.T) {
	doc := loadAsyncAPI(t)
	msg := doc["components"].(map[string]any)["messages"].(map[string]any)["cardIssued"].(map[string]any)
	ex := msg["examples"].([]any)[0].(map[string]any)["payload"].(map[string]any)
	delete(ex, "cardToken")
	require.Error(t, schemas.Validate(schemas.IssuedFile, ex))
}
