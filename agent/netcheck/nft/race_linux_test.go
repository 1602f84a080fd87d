//go:build linux

package nft

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
)

// TestCheckWhileTableDeleted: the table is applied and deleted again and
// again from another goroutine while Check reads it in a loop. Every
// Check says in place, or not in place with what differs; none fails
// because what it was reading went away (ENOENT in the middle of the
// read). Both outcomes must occur, or the test proved nothing.
func TestCheckWhileTableDeleted(t *testing.T) {
	requireTools(t)
	term := newNetns(t, "race")
	e := New(Options{NetNS: term.fd})
	p := labPolicy(t)
	ctx := t.Context()
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(term.fd))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyINet}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var churnErr error
	cycles := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.Apply(ctx, p); err != nil {
				churnErr = err
				return
			}
			// Let some Check start on the whole table, then pull it away.
			time.Sleep(time.Duration(cycles%10) * 2 * time.Millisecond)
			conn.DelTable(table)
			if err := conn.Flush(); err != nil {
				churnErr = err
				return
			}
			cycles++
		}
	}()

	const checks = 800
	inPlace, missing, other := 0, 0, map[string]int{}
	deadline := time.Now().Add(4 * time.Second)
	for i := 0; i < checks && time.Now().Before(deadline); i++ {
		ok, detail, err := e.Check(context.Background(), p)
		switch {
		case err != nil:
			t.Errorf("check %d: %v", i, err)
		case ok:
			if detail != "" {
				t.Errorf("check %d: in place with detail %q", i, detail)
			}
			inPlace++
		case detail == "":
			t.Errorf("check %d: not in place, no detail", i)
		case detail == "table inet "+DefaultTable+" missing":
			missing++
		default:
			other[detail]++
		}
	}
	close(stop)
	wg.Wait()
	if churnErr != nil {
		t.Fatalf("apply/delete: %v", churnErr)
	}
	var others []string
	for d, n := range other {
		others = append(others, d+" ×"+itoa(n))
	}
	t.Logf("%d apply/delete cycles; checks: %d in place, %d missing, %d other details:\n%s",
		cycles, inPlace, missing, len(others), strings.Join(others, "\n"))
	if inPlace == 0 || missing == 0 {
		t.Errorf("the race was not exercised: %d in place, %d missing", inPlace, missing)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
