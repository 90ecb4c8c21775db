package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPairScriptIsFound: tests run in their package's directory, at any
// depth below the repository root; Pair must find scripts/pg-pair from there.
func TestPairScriptIsFound(t *testing.T) {
	s, err := pairScript()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(filepath.Dir(s)) != "scripts" {
		t.Fatalf("found %s", s)
	}
	st, err := os.Stat(s)
	if err != nil || st.Mode()&0o111 == 0 {
		t.Fatalf("%s is not executable: %v", s, err)
	}
}
