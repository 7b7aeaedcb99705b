package guestward_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/format"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The README's Go code and the example in the package documentation are
// compiled as part of this module, through an overlay, so the first code a
// reader copies always builds against the current API.
func TestDocumentedCodeCompiles(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := fencedBlocks(string(readme), "go")
	if len(blocks) < 2 {
		t.Fatalf("README.md has %d Go blocks, want the embedding program and the one-shot snippet", len(blocks))
	}
	sources := map[string]string{}
	programs := 0
	for i, b := range blocks {
		name := fmt.Sprintf("README.md Go block %d", i+1)
		checkFormatted(t, name, b)
		if strings.HasPrefix(b, "package ") {
			programs++
			sources[name] = b
		} else {
			sources[name] = wrapFragment(b)
		}
	}
	if programs != 1 {
		t.Errorf("README.md has %d complete programs, want 1 (the embedding example)", programs)
	}
	doc, err := packageDocExample("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	checkFormatted(t, "the example in doc.go", doc)
	sources["the example in doc.go"] = doc

	buildOverlay(t, sources)
}

// fencedBlocks returns the contents of the ``` blocks of the given language.
func fencedBlocks(md, lang string) []string {
	var blocks []string
	var cur []string
	in := false
	for _, line := range strings.Split(md, "\n") {
		switch {
		case !in && strings.TrimSpace(line) == "```"+lang:
			in, cur = true, nil
		case in && strings.TrimSpace(line) == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n")+"\n")
		case in:
			cur = append(cur, line)
		}
	}
	return blocks
}

// packageDocExample returns the code block of the package documentation in
// file that starts with "package main".
func packageDocExample(file string) (string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		return "", err
	}
	if f.Doc == nil {
		return "", fmt.Errorf("%s has no package documentation", file)
	}
	var code []string
	in := false
	for _, line := range strings.Split(f.Doc.Text(), "\n") {
		if !in {
			in = line == "\tpackage main"
		}
		if !in {
			continue
		}
		if line != "" && !strings.HasPrefix(line, "\t") {
			break
		}
		code = append(code, strings.TrimPrefix(line, "\t"))
	}
	if len(code) == 0 {
		return "", fmt.Errorf("the package documentation in %s has no code block starting with package main", file)
	}
	return strings.TrimRight(strings.Join(code, "\n"), "\n") + "\n", nil
}

func checkFormatted(t *testing.T, name, src string) {
	t.Helper()
	got, err := format.Source([]byte(src))
	if err != nil {
		t.Errorf("%s does not parse: %v\n%s", name, err, src)
		return
	}
	if strings.TrimSpace(string(got)) != strings.TrimSpace(src) {
		t.Errorf("%s is not gofmt'd; gofmt makes it:\n%s", name, got)
	}
}

// wrapFragment makes a snippet of statements into a program, with the
// variables README snippets take for granted: ctx and engine.
func wrapFragment(body string) string {
	var b strings.Builder
	b.WriteString(`package main

import (
	"context"
	"fmt"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

var (
	_ = fmt.Sprint
	_ proxmox.Ref
)

func fragment(ctx context.Context, engine *reconcile.Engine) error {
`)
	for _, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		b.WriteString("\t" + line + "\n")
	}
	b.WriteString("\treturn nil\n}\n\nfunc main() { _ = fragment }\n")
	return b.String()
}

// buildOverlay builds each source as a main package of its own, placed in
// this module through an overlay, so nothing is written into the
// repository.
func buildOverlay(t *testing.T, sources map[string]string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command: %v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	replace := map[string]string{}
	var pkgs []string
	names := map[string]string{}
	i := 0
	for name, src := range sources {
		i++
		file := filepath.Join(tmp, fmt.Sprintf("src%d.go", i))
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		dir := fmt.Sprintf("zz_doccheck_%d_%d", os.Getpid(), i)
		replace[filepath.Join(wd, dir, "main.go")] = file
		pkgs = append(pkgs, "./"+dir)
		names[dir] = name
	}
	overlay, err := json.Marshal(map[string]any{"Replace": replace})
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o600); err != nil {
		t.Fatal(err)
	}
	// Several main packages at once: go build compiles them and discards
	// the results.
	cmd := exec.Command(goTool, append([]string{"build", "-overlay", overlayFile}, pkgs...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := out.String()
		for dir, name := range names {
			msg = strings.ReplaceAll(msg, dir, name)
		}
		t.Fatalf("the documented code does not build: %v\n%s", err, msg)
	}
}
