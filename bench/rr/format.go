// The client's report, in neper's key=value format.

package rr

import (
	"fmt"
	"io"
	"time"
)

// Write prints r in neper's key=value lines: latencies in seconds under
// neper's keys, then the same in microseconds under keys ending in _us,
// then num_lost (udp_rr requests that timed out; neper has no such key).
// It returns the first write error.
func (r Result) Write(w io.Writer) error {
	lat := []struct {
		key string
		d   time.Duration
	}{
		{"min", r.Min}, {"max", r.Max}, {"mean", r.Mean}, {"stddev", r.Stddev},
		{"p50", r.P50}, {"p90", r.P90}, {"p99", r.P99}, {"p99.9", r.P999},
	}
	if _, err := fmt.Fprintf(w, "test=%s\nnum_transactions=%d\n", r.Test, r.Transactions); err != nil {
		return err
	}
	for _, l := range lat {
		if _, err := fmt.Fprintf(w, "latency_%s=%.9f\n", l.key, l.d.Seconds()); err != nil {
			return err
		}
	}
	if _, err := fmt.Fprintf(w, "throughput=%.2f\ntotal_run_time=%.3f\n", r.Throughput, r.Seconds); err != nil {
		return err
	}
	for _, l := range lat {
		if _, err := fmt.Fprintf(w, "latency_%s_us=%.3f\n", l.key, float64(l.d.Nanoseconds())/1e3); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(w, "num_lost=%d\n", r.Lost)
	return err
}
