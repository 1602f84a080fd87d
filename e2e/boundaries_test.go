package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportBoundaries: agent and server never import each other (tests
// included); both may import internal and proto.
func TestImportBoundaries(t *testing.T) {
	for _, tc := range []struct{ from, forbidden string }{
		{"../agent/...", "github.com/mnguard/mnguard/server"},
		{"../server/...", "github.com/mnguard/mnguard/agent"},
		{"../internal/...", "github.com/mnguard/mnguard/agent"},
		{"../internal/...", "github.com/mnguard/mnguard/server"},
	} {
		out, err := exec.Command("go", "list", "-test", "-deps", tc.from).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", tc.from, err, out)
		}
		for _, pkg := range strings.Fields(string(out)) {
			if pkg == tc.forbidden || strings.HasPrefix(pkg, tc.forbidden+"/") {
				t.Errorf("%s depends on %s", tc.from, pkg)
			}
		}
	}
}
