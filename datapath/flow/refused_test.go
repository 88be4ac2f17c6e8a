// Tests of Refusals: one warning per episode of a full table, at most one
// per RefuseLogInterval, and its end said once.

package flow

import (
	"testing"
	"time"
)

// TestRefusals fills a table, refuses three flows (one warning), admits a
// flow (the end said), refuses again within the interval (counted, not
// said), and again after it (said).
func TestRefusals(t *testing.T) {
	tb := New(2)
	r := Refusals{What: "test flows"}
	for range 2 {
		if _, err := tb.Alloc(UDP); err != nil {
			t.Fatal(err)
		}
		if r.Admitted() {
			t.Fatal("an admission with no episode under way logged")
		}
	}
	now := int64(time.Hour)
	for k := range 3 {
		if _, err := tb.Alloc(UDP); err != ErrFull {
			t.Fatalf("Alloc on a full table: %v, want ErrFull", err)
		}
		if logged := r.Refuse(now, tb); logged != (k == 0) {
			t.Fatalf("refusal %d: logged %v", k, logged)
		}
	}
	if !r.Full() || r.Total != 3 {
		t.Fatalf("full %v, total %d", r.Full(), r.Total)
	}
	tb.Free(0)
	if _, err := tb.Alloc(UDP); err != nil {
		t.Fatal(err)
	}
	if !r.Admitted() || r.Full() {
		t.Fatal("the end of a logged episode was not logged")
	}
	// A new episode within the interval: counted, not said, nor its end.
	now += int64(RefuseLogInterval) / 2
	if r.Refuse(now, tb) || !r.Full() {
		t.Fatal("second episode within the interval logged")
	}
	if r.Admitted() {
		t.Fatal("the end of an unlogged episode was logged")
	}
	now += int64(RefuseLogInterval)
	if !r.Refuse(now, tb) || r.Total != 5 {
		t.Fatalf("episode after the interval not logged (total %d)", r.Total)
	}
}
