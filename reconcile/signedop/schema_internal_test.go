package signedop

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The schema checkStrict reads the claims with must name exactly the
// members of the wire form's struct tags, or a member would be refused
// or let through unchecked.
func TestSchemaMatchesTags(t *testing.T) {
	tags := func(v any) []string {
		var names []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			names = append(names, name)
		}
		return names
	}
	if got, want := claimsSchema[""], tags(wireClaims{}); !slices.Equal(got, want) {
		t.Errorf("top-level schema %v, tags %v", got, want)
	}
	if got, want := claimsSchema["op"], tags(wireOp{}); !slices.Equal(got, want) {
		t.Errorf("op schema %v, tags %v", got, want)
	}
	for _, r := range requiredClaims {
		path, name, nested := strings.Cut(r, ".")
		if !nested {
			path, name = "", r
		}
		if !slices.Contains(claimsSchema[path], name) {
			t.Errorf("required %q is not in the schema", r)
		}
	}
}
