// Package jsonx holds what guestward's strict JSON readers share. It is not
// part of guestward's API.
package jsonx

import (
	"strings"
	"unicode"
)

// FoldName folds s as encoding/json compares member names: each rune
// replaced by the smallest rune of its simple case-folding orbit, so that
// two names fold alike exactly when strings.EqualFold calls them equal.
// The strict readers use it to find members encoding/json would take for
// one another.
func FoldName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		for {
			f := unicode.SimpleFold(r)
			if f <= r {
				r = f
				break
			}
			r = f
		}
		b.WriteRune(r)
	}
	return b.String()
}
