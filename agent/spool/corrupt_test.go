package spool

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCorruptFileSetAside damages a real spool file in several ways; each
// time Open keeps the file aside (byte for byte), starts a new spool whose
// first event names it, continues the sequence numbers above every number
// used before, and says so in the log.
func TestCorruptFileSetAside(t *testing.T) {
	pageSize := os.Getpagesize()
	cases := []struct {
		name   string
		damage func(t *testing.T, data []byte) []byte
	}{
		{"not a bbolt file", func(t *testing.T, data []byte) []byte {
			return bytes.Repeat([]byte("this is not a bbolt file\n"), len(data)/25)
		}},
		{"truncated", func(t *testing.T, data []byte) []byte {
			return data[:len(data)/2]
		}},
		{"cut inside the meta pages", func(t *testing.T, data []byte) []byte {
			return data[:pageSize+100]
		}},
		{"bad meta checksums", func(t *testing.T, data []byte) []byte {
			// Both meta pages: a byte of the root bucket's page id.
			for _, off := range []int{0, pageSize} {
				data[off+16+40] ^= 0x5a
			}
			return data
		}},
		{"garbage data pages", func(t *testing.T, data []byte) []byte {
			for i := 2 * pageSize; i < len(data); i++ {
				data[i] = byte(i*131 + 7)
			}
			return data
		}},
		{"zeroed data pages", func(t *testing.T, data []byte) []byte {
			clear(data[2*pageSize:])
			return data
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "spool.db")
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, 300, "e")
			last := s.LastSeq()
			s.Close()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			damaged := tc.damage(t, data)
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}

			var logs bytes.Buffer
			s, err = OpenWithOptions(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("Open of a damaged spool: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			aside := s.SetAsideFile()
			if aside.Path == "" || aside.Reason == "" {
				t.Fatalf("SetAsideFile = %+v, want the path and reason", aside)
			}
			t.Logf("reason: %s", aside.Reason)
			kept, err := os.ReadFile(aside.Path)
			if err != nil || !bytes.Equal(kept, damaged) {
				t.Fatalf("file kept aside at %s differs from the damaged one (err %v)", aside.Path, err)
			}
			if !strings.HasPrefix(filepath.Base(aside.Path), "spool.db.corrupt-") || filepath.Dir(aside.Path) != dir {
				t.Errorf("kept as %s, want spool.db.corrupt-TIMESTAMP beside it", aside.Path)
			}
			evs, err := s.Pending(0)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 || evs[0].GetType() != EventCorruptFileSetAside || evs[0].GetAttributes()["path"] != aside.Path {
				t.Fatalf("Pending = %v, want one %s event with the path", evs, EventCorruptFileSetAside)
			}
			if evs[0].Seq <= last {
				t.Errorf("new spool's first seq %d, not above the %d used before", evs[0].Seq, last)
			}
			if next, _ := strconv.ParseUint(evs[0].GetAttributes()["next_seq"], 10, 64); next != evs[0].Seq {
				t.Errorf("next_seq attribute %d, event seq %d", next, evs[0].Seq)
			}
			for _, want := range []string{"damaged file set aside", "kept_as=" + aside.Path} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
			// The new spool works and survives a restart.
			seqs := appendN(t, s, 2, "after")
			s.Close()
			s = open(t, path, Options{})
			if s.SetAsideFile().Path != "" {
				t.Error("the new spool was set aside too")
			}
			if got := pendingSeqs(t, s, 0); len(got) != 3 || got[2] != seqs[1] {
				t.Errorf("Pending after restart = %v, want the set-aside event and %v", got, seqs)
			}
		})
	}
}

// TestDeletedSpoolContinuesSequence: a spool file removed by hand is
// replaced by one that starts above the numbers used, from the mark.
func TestDeletedSpoolContinuesSequence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, Options{})
	appendN(t, s, 5, "e")
	s.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, Options{})
	if got := appendN(t, s, 1, "f")[0]; got <= 5 {
		t.Errorf("first seq after the spool was deleted = %d, want above 5", got)
	}
}

// TestMarkReserved: numbers are used only below a mark on disk, also when
// appends cross a reservation.
func TestMarkReserved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, Options{})
	for range 3 {
		appendN(t, s, 10, "e")
		m, err := readMark(path)
		if err != nil || m <= s.LastSeq() {
			t.Fatalf("mark %d (err %v), last seq %d: not above", m, err, s.LastSeq())
		}
	}
	// Cross a reservation: the mark moves before the numbers are used.
	if err := s.setSequence(seqReserve*3 - 1); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 3, "f")
	if m, _ := readMark(path); m <= s.LastSeq() {
		t.Fatalf("mark %d not above last seq %d after crossing a reservation", m, s.LastSeq())
	}
}

func FuzzParseMark(f *testing.F) {
	f.Add([]byte("16384\n"))
	f.Add([]byte("0\n"))
	f.Add([]byte("18446744073709551615\n"))
	f.Add([]byte("18446744073709551616\n"))
	f.Add([]byte("-1\n"))
	f.Add([]byte("007\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := parseMark(data)
		if err != nil {
			return
		}
		if got := strconv.FormatUint(v, 10) + "\n"; got != string(data) {
			t.Fatalf("parseMark(%q) = %d, which is written %q", data, v, got)
		}
	})
}
