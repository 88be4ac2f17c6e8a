// Package toolout parses what the benchmark tools print: iperf3's JSON
// report (-J) and neper's key=value report, which bench/rr prints too.
//
// Every parser returns an error for output it cannot trust (a tool error,
// a missing field, a zero-length run) instead of a zero figure, so a
// failed measurement never reaches a table as a number.
package toolout

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Iperf3 is the part of an iperf3 report the tables use.
type Iperf3 struct {
	Protocol    string  // "TCP" or "UDP"
	Streams     int     // parallel streams
	Seconds     float64 // receiver's measured time
	Bytes       int64   // bytes the receiver got
	BitsPerSec  float64 // receiver's throughput
	SentBits    float64 // sender's throughput
	LostPercent float64 // UDP only: datagrams lost
	LostPackets int64   // UDP only
	Packets     int64   // UDP only: datagrams sent
	JitterMs    float64 // UDP only
	Retransmits int64   // TCP only: sender's retransmitted segments
	CPUHost     float64 // client's CPU use, percent of one CPU
	CPURemote   float64 // server's CPU use, percent of one CPU
}

// Gbps returns the receiver's throughput in Gbit/s.
func (r Iperf3) Gbps() float64 { return r.BitsPerSec / 1e9 }

type iperf3Sum struct {
	Seconds     float64 `json:"seconds"`
	Bytes       int64   `json:"bytes"`
	BitsPerSec  float64 `json:"bits_per_second"`
	Retransmits int64   `json:"retransmits"`
	JitterMs    float64 `json:"jitter_ms"`
	LostPackets int64   `json:"lost_packets"`
	Packets     int64   `json:"packets"`
	LostPercent float64 `json:"lost_percent"`
}

type iperf3JSON struct {
	Start struct {
		TestStart struct {
			Protocol   string `json:"protocol"`
			NumStreams int    `json:"num_streams"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Sum         *iperf3Sum `json:"sum"`
		SumSent     *iperf3Sum `json:"sum_sent"`
		SumReceived *iperf3Sum `json:"sum_received"`
		CPU         struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	Error string `json:"error"`
}

// ParseIperf3 parses the JSON report of an iperf3 client (-J). It returns
// an error when iperf3 reported one, when the report is not JSON or lacks
// the receiver's summary, or when nothing was received.
func ParseIperf3(data []byte) (Iperf3, error) {
	var j iperf3JSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Iperf3{}, fmt.Errorf("iperf3 report: %w", err)
	}
	if j.Error != "" {
		return Iperf3{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	r := Iperf3{
		Protocol:  j.Start.TestStart.Protocol,
		Streams:   j.Start.TestStart.NumStreams,
		CPUHost:   j.End.CPU.HostTotal,
		CPURemote: j.End.CPU.RemoteTotal,
	}
	recv, sent := j.End.SumReceived, j.End.SumSent
	if recv == nil {
		// UDP reports of iperf3 before 3.11 have only "sum", the sender's
		// view with the receiver's loss: derive what arrived from it.
		if j.End.Sum == nil {
			return Iperf3{}, errors.New("iperf3 report has no end summary")
		}
		s := *j.End.Sum
		sent = &s
		got := s
		got.Bytes = int64(float64(s.Bytes) * (1 - s.LostPercent/100))
		got.BitsPerSec = s.BitsPerSec * (1 - s.LostPercent/100)
		recv = &got
	}
	if sent == nil {
		sent = recv
	}
	if recv.Seconds <= 0 || math.IsNaN(recv.BitsPerSec) || recv.BitsPerSec < 0 {
		return Iperf3{}, fmt.Errorf("iperf3 report: receiver summary over %g s", recv.Seconds)
	}
	if recv.Bytes == 0 {
		return Iperf3{}, errors.New("iperf3: the receiver got nothing")
	}
	r.Seconds = recv.Seconds
	r.Bytes = recv.Bytes
	r.BitsPerSec = recv.BitsPerSec
	r.SentBits = sent.BitsPerSec
	r.Retransmits = sent.Retransmits
	if r.Protocol == "UDP" {
		r.LostPercent = recv.LostPercent
		r.LostPackets = recv.LostPackets
		r.Packets = recv.Packets
		r.JitterMs = recv.JitterMs
	}
	return r, nil
}

// RR is a request/response report from neper or bench/rr.
type RR struct {
	Transactions int64
	Throughput   float64 // transactions per second
	Lost         int64   // bench/rr udp_rr only
	// Latencies in microseconds; a percentile neper was not asked for is 0.
	MinUs, MeanUs, MaxUs, StddevUs float64
	P50Us, P90Us, P99Us            float64
}

// UsPerTransaction returns the mean time per transaction in microseconds,
// 1e6 / throughput: the latency figure of the C original's tables.
func (r RR) UsPerTransaction() float64 {
	if r.Throughput <= 0 {
		return 0
	}
	return 1e6 / r.Throughput
}

// ParseRR parses neper's key=value output (tcp_rr, tcp_crr, udp_rr) or
// bench/rr's, which has the same keys. Latencies come in seconds under
// neper's keys (latency_p50); keys ending in _us (bench/rr) take
// precedence. Lines that are not key=value (neper's logs) are skipped. It
// returns an error when throughput or num_transactions is missing,
// malformed or zero.
func ParseRR(out string) (RR, error) {
	kv := make(map[string]string)
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		kv[k] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return RR{}, fmt.Errorf("rr report: %w", err)
	}
	num := func(k string) (float64, bool, error) {
		v, ok := kv[k]
		if !ok {
			return 0, false, nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return 0, true, fmt.Errorf("rr report: %s=%q is not a figure", k, v)
		}
		return f, true, nil
	}
	var r RR
	tp, ok, err := num("throughput")
	if err != nil {
		return RR{}, err
	}
	if !ok || tp == 0 {
		return RR{}, errors.New("rr report: no throughput")
	}
	r.Throughput = tp
	n, ok, err := num("num_transactions")
	if err != nil {
		return RR{}, err
	}
	if !ok || n < 1 {
		return RR{}, errors.New("rr report: no transactions")
	}
	r.Transactions = int64(n)
	if l, _, err := num("num_lost"); err != nil {
		return RR{}, err
	} else {
		r.Lost = int64(l)
	}
	for _, f := range []struct {
		key string
		dst *float64
	}{
		{"min", &r.MinUs}, {"mean", &r.MeanUs}, {"max", &r.MaxUs}, {"stddev", &r.StddevUs},
		{"p50", &r.P50Us}, {"p90", &r.P90Us}, {"p99", &r.P99Us},
	} {
		if us, ok, err := num("latency_" + f.key + "_us"); err != nil {
			return RR{}, err
		} else if ok {
			*f.dst = us
			continue
		}
		s, _, err := num("latency_" + f.key)
		if err != nil {
			return RR{}, err
		}
		*f.dst = s * 1e6
	}
	return r, nil
}
