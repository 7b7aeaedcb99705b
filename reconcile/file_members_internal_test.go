package reconcile

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// strictJSON checks member names against its own lists; a field added to
// the document's structs without its name there would be refused as
// unknown, and a name left there after its field went would be accepted
// by strictJSON and refused by the decoder with a worse message.
func TestDocumentMembersMatchStructTags(t *testing.T) {
	for _, c := range []struct {
		typ  reflect.Type
		list []string
	}{
		{reflect.TypeFor[desiredFile](), topMembers},
		{reflect.TypeFor[desiredGuest](), guestMembers},
		{reflect.TypeFor[desiredWire](), guestMembers},
	} {
		var tags []string
		for i := range c.typ.NumField() {
			name, _, _ := strings.Cut(c.typ.Field(i).Tag.Get("json"), ",")
			tags = append(tags, name)
		}
		if !slices.Equal(tags, c.list) {
			t.Errorf("%s: tags %q, strictJSON knows %q", c.typ, tags, c.list)
		}
	}
}
