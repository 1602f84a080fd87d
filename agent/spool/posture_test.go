package spool

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	mnguardv1 "github.com/mnguard/mnguard/proto/mnguard/v1"
)

func posture(host string, pad int) *mnguardv1.Posture {
	return &mnguardv1.Posture{
		CollectedAt:  timestamppb.New(time.Date(2025, 4, 1, 9, 0, 0, 0, time.UTC)),
		Host:         &mnguardv1.HostFacts{Hostname: host},
		AgentVersion: "test",
		CpuModel:     strings.Repeat("x", pad),
	}
}

// TestPostureKeptUntilAcked: the latest snapshot survives a restart until
// the report that carried it is acknowledged; acknowledging an older
// generation leaves a newer one.
func TestPostureKeptUntilAcked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	s := open(t, path, Options{})
	if p, gen, err := s.LatestPosture(); p != nil || gen != 0 || err != nil {
		t.Fatalf("LatestPosture of a new spool = %v, %d, %v", p, gen, err)
	}
	g1, err := s.SetPosture(posture("one", 0))
	if err != nil {
		t.Fatal(err)
	}
	g2, err := s.SetPosture(posture("two", 0))
	if err != nil {
		t.Fatal(err)
	}
	if g2 <= g1 {
		t.Fatalf("generations %d then %d, want growing", g1, g2)
	}
	s.Close()

	s = open(t, path, Options{})
	p, gen, err := s.LatestPosture()
	if err != nil || gen != g2 || !proto.Equal(p, posture("two", 0)) {
		t.Fatalf("LatestPosture after restart = %v, %d, %v; want the second snapshot, generation %d", p, gen, err, g2)
	}
	if err := s.AckPosture(g1); err != nil { // a report of the older one came back late
		t.Fatal(err)
	}
	if p, _, _ := s.LatestPosture(); p == nil {
		t.Fatal("acknowledging the older generation removed the newer snapshot")
	}
	if err := s.AckPosture(g2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, path, Options{})
	if p, _, _ := s.LatestPosture(); p != nil {
		t.Fatalf("acknowledged snapshot still kept after restart: %v", p)
	}
	if st := s.Stats(); st.Bytes != 0 {
		t.Errorf("Stats.Bytes of an empty spool = %d", st.Bytes)
	}
}

// TestFullPolicy: in a spool full by bytes, the posture snapshot goes
// first, then the oldest events; every sequence number ever handed out is
// then either still pending or named by a loss event, and the loss events
// count exactly what went.
func TestFullPolicy(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), Options{MaxBytes: MinMaxBytes})
	if _, err := s.SetPosture(posture("host", 8<<10)); err != nil {
		t.Fatal(err)
	}
	big := func(i int) *mnguardv1.Event {
		e := event(fmt.Sprintf("e%d", i))
		e.Attributes["pad"] = strings.Repeat("p", 1000)
		return e
	}
	var appended []uint64
	i := 0
	for s.PostureDropped() == 0 {
		e := big(i)
		i++
		seq, err := s.Append(e)
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, seq)
		if i > 100 {
			t.Fatal("posture never dropped")
		}
	}
	if s.Dropped() != 0 {
		t.Fatalf("events dropped (%d) while a posture snapshot was there to drop", s.Dropped())
	}
	if p, _, _ := s.LatestPosture(); p != nil {
		t.Fatal("posture snapshot still kept after it was dropped")
	}
	// Now events must go; consume some loss events on the way (as a
	// report would) so that several are stored.
	for range 150 {
		seq, err := s.Append(big(i))
		i++
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, seq)
		if i%40 == 0 {
			if _, err := s.Pending(0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st := s.Stats(); st.Bytes > MinMaxBytes+1024 {
		t.Errorf("Stats.Bytes = %d, above the bound %d (and one loss record)", st.Bytes, MinMaxBytes)
	}
	evs, err := s.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	covered := map[uint64]string{}
	var lossCount uint64
	losses := 0
	for _, e := range evs {
		if e.GetType() == EventDropped {
			losses++
			count, first, last := lossRange(e)
			lossCount += count
			for q := first; q <= last; q++ {
				if covered[q] == "" {
					covered[q] = "lost"
				}
			}
			continue
		}
		covered[e.Seq] = "pending"
	}
	if losses < 2 {
		t.Errorf("%d loss events, want several (one per hand-out)", losses)
	}
	if lossCount != s.Dropped() {
		t.Errorf("loss events count %d, Dropped = %d", lossCount, s.Dropped())
	}
	dropped := 0
	for _, q := range appended {
		switch covered[q] {
		case "":
			t.Errorf("event %d neither pending nor in a loss event", q)
		case "lost":
			dropped++
		}
	}
	if uint64(dropped) != s.Dropped() {
		t.Errorf("%d events named lost, Dropped = %d", dropped, s.Dropped())
	}
	// A posture snapshot never pushes events out.
	before := s.Dropped()
	if _, err := s.SetPosture(posture("huge", 60<<10)); !errors.Is(err, ErrNoRoom) {
		t.Errorf("SetPosture of a snapshot that does not fit = %v, want ErrNoRoom", err)
	}
	if s.Dropped() != before {
		t.Error("SetPosture dropped events")
	}
}

// TestLossEventNotGrownAfterHandOut: once Pending handed a loss event out
// it may be stored at the collector; later drops get a new one.
func TestLossEventNotGrownAfterHandOut(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.db"), Options{MaxEvents: 3})
	appendN(t, s, 4, "e") // 1 dropped, loss event 5
	evs, _ := s.Pending(0)
	var loss *mnguardv1.Event
	for _, e := range evs {
		if e.GetType() == EventDropped {
			loss = e
		}
	}
	if loss == nil {
		t.Fatal("no loss event")
	}
	appendN(t, s, 1, "f") // 2 and 3 dropped: loss event 7
	evs, _ = s.Pending(0)
	for _, e := range evs {
		if e.Seq == loss.Seq && !proto.Equal(e, loss) {
			t.Errorf("loss event %d changed after it was handed out: %v, was %v", e.Seq, e, loss)
		}
	}
	n := 0
	for _, e := range evs {
		if e.GetType() == EventDropped {
			n++
		}
	}
	if n < 2 {
		t.Errorf("%d loss events after a hand-out and more drops, want 2", n)
	}
	if got := strconv.FormatUint(s.Dropped(), 10); got != "3" {
		t.Errorf("Dropped = %s, want 3", got)
	}
}
