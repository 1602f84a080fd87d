package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mnguard/mnguard/agent/spool"
	"github.com/mnguard/mnguard/agent/state"
)

// TestCorruptSpoolAtStart: a real agent whose spool file is damaged (not a
// bbolt file) starts anyway: the file is kept aside, a new spool is made,
// the collector stores a spool.corrupt_file_set_aside event naming the
// file, and 'mnguard-agent status' and the log say so.
func TestCorruptSpoolAtStart(t *testing.T) {
	c := newCollector(t)
	ag, id := enrolledAgent(t, c, "60s")
	ag.start(t)
	c.waitReported(t, id, 20*time.Second)
	ag.proc.stop(t)
	lastSeq := readSpool(t, ag).lastSeq

	path := state.Dir(ag.stateDir).Path(state.SpoolFile)
	garbage := bytes.Repeat([]byte("this is not a spool\n"), 2000)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	ag.start(t)
	var aside string
	eventually(t, 20*time.Second, func() error {
		for _, e := range storedEvents(t, c, id) {
			if e.GetType() == spool.EventCorruptFileSetAside {
				aside = e.GetAttributes()["path"]
				if e.GetSeq() <= lastSeq {
					return fmt.Errorf("set-aside event has seq %d, not above the %d used before", e.GetSeq(), lastSeq)
				}
				return nil
			}
		}
		return fmt.Errorf("no %s event stored", spool.EventCorruptFileSetAside)
	})
	if filepath.Dir(aside) != ag.stateDir || !strings.HasPrefix(filepath.Base(aside), state.SpoolFile+".corrupt-") {
		t.Errorf("kept as %q, want %s.corrupt-TIMESTAMP in the state directory", aside, state.SpoolFile)
	}
	if kept, err := os.ReadFile(aside); err != nil || !bytes.Equal(kept, garbage) {
		t.Errorf("the damaged file kept at %s is not the one damaged (err %v)", aside, err)
	}
	if !strings.Contains(ag.proc.out.String(), "damaged file set aside") {
		t.Errorf("agent log does not say the spool was set aside:\n%s", ag.proc.out.String())
	}
	out, _, _ := run(t, nil, "mnguard-agent", ag.args("status")...)
	if !strings.Contains(out, "DAMAGED file found at start, kept as "+aside) {
		t.Errorf("status does not name the damaged spool:\n%s", out)
	}
	t.Logf("status:\n%s", out)
}
