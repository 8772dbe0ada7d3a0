package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/cardbridge/cardbridge/"

// layers reads the README's import picture: the rows of the block after
// "Each package imports only from the rows below its own", top row first.
func layers(t *testing.T) map[string]int {
	t.Helper()
	f, err := os.Open("../../README.md")
	require.NoError(t, err)
	defer f.Close()
	rows := map[string]int{}
	sc := bufio.NewScanner(f)
	for found, inBlock, row := false, false, 0; sc.Scan(); {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Each package imports only from the rows below its own"):
			found = true
		case found && line == "```" && !inBlock:
			inBlock = true
		case inBlock && line == "```":
			return rows
		case inBlock:
			for _, field := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == ',' }) {
				rows[field] = row
			}
			row++
		}
	}
	t.Fatal("the README has no import picture")
	return nil
}

// The README's architecture section draws which package may import which;
// the code keeps to it, and every package is drawn.
func TestImportsFollowTheREADMEsPicture(t *testing.T) {
	t.Parallel()
	rows := layers(t)
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "../../...").Output()
	require.NoError(t, err)
	testOnly := map[string]bool{"internal/testenv": true, "internal/chaos": true}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if testOnly[pkg] {
			continue
		}
		row, drawn := rows[pkg]
		require.True(t, drawn, "package %s is not in the README's import picture", pkg)
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			require.Greater(t, rows[dep], row, "%s imports %s, which the README draws on its row or above", pkg, dep)
		}
	}
}
