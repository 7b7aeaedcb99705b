package jsonx

import (
	"strings"
	"testing"
)

func TestFoldNameAgreesWithEqualFold(t *testing.T) {
	names := []string{"vmid", "VMID", "vm\u0131d", "K", "\u212a", "k", "ß", "ẞ", "power", "Power", "µ", "Μ", "μ"}
	for _, a := range names {
		for _, b := range names {
			if got, want := FoldName(a) == FoldName(b), strings.EqualFold(a, b); got != want {
				t.Errorf("FoldName(%q) == FoldName(%q) is %v, EqualFold says %v", a, b, got, want)
			}
		}
	}
}
