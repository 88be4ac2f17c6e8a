// Refusals: what a protocol tells the log when the table is full and it
// turns new flows away.

package flow

import (
	"time"

	"gopasst/datapath/logging"
)

// RefuseLogInterval is the least time between two warnings of one
// Refusals: a table that hovers at its limit (a slot frees, is taken, the
// next flow is refused again) starts a new episode each time, and would
// otherwise warn at the rate flows come and go.
const RefuseLogInterval = time.Minute

// Refusals counts the flows a protocol refused because Alloc returned
// ErrFull (or, with Cause, for another want of resources: descriptors)
// and keeps the log to a line per episode: a warning at the first
// refusal (however many follow, nothing more is said), and, once a flow
// is admitted again, one line with how many were refused meanwhile. The
// zero value is ready to use, What aside. Not safe for concurrent use
// (each protocol handler has its own, on the loop's thread).
type Refusals struct {
	// What is refused, for the log, in the plural ("TCP connections").
	What string
	// Cause is what is missing, for the log; empty for a full table.
	Cause string
	// Total counts every refusal since start (for tests and --stats).
	Total uint64

	n        uint64 // refusals in the current episode
	full     bool   // an episode is under way: the last Alloc failed
	warned   bool   // the current episode's warning was logged
	loggedAt int64  // loop time of the last warning, valid if ever
	ever     bool   // a warning was logged once
}

// Refuse records one refusal and warns if it starts an episode and the
// last warning is at least RefuseLogInterval old.
//
// now: the loop's time (loop.Loop.Now), in nanoseconds; t: the full table,
// for its capacity in the message (unused with a Cause). Returns whether a
// line was logged.
func (r *Refusals) Refuse(now int64, t *Table) bool {
	r.Total++
	r.n++
	if r.full {
		return false
	}
	r.full = true
	if r.ever && now-r.loggedAt < int64(RefuseLogInterval) {
		return false
	}
	r.warned, r.ever, r.loggedAt = true, true, now
	if r.Cause != "" {
		logging.Warnf("%s: refusing new %s (said once until flows are admitted again)", r.Cause, r.What)
	} else {
		logging.Warnf("flow table full (%d slots): refusing new %s (said once until flows are admitted again)", t.Cap(), r.What)
	}
	return true
}

// Admitted ends an episode of refusals, if one is under way: called when
// Alloc succeeded for this protocol again. Costs one test otherwise. The
// end of an episode whose start was logged is logged too, at the same
// level, so that a reader of the warning learns that it is over. Returns
// whether a line was logged.
func (r *Refusals) Admitted() bool {
	if !r.full {
		return false
	}
	logged := r.warned
	if logged {
		logging.Warnf("new %s admitted again, %d refused meanwhile", r.What, r.n)
	}
	r.full, r.warned, r.n = false, false, 0
	return logged
}

// Full reports whether the last flow this protocol tried to make was
// refused for want of a slot (and none was admitted since).
func (r *Refusals) Full() bool { return r.full }
