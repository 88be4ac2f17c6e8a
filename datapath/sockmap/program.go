// The verdict program, written with cilium/ebpf's asm package so that no
// C compiler is needed to build gopasst, and the layout of the per-socket
// state it keeps.

package sockmap

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// Kernel constants the program uses (include/uapi/linux/bpf.h).
const (
	// skDrop and skPass are enum sk_action: the verdict's return values.
	skDrop = 0
	skPass = 1
	// skbLen is offsetof(struct __sk_buff, len).
	skbLen = 0
)

// programLicense is the license the program declares to the kernel. It
// must be GPL-compatible: the verifier lets only such programs read kernel
// structures through BTF pointers ("Cannot access kernel 'struct
// tcp_sock' from non-GPL compatible program"), and the program reads the
// peer's write_seq that way; bpf_tcp_sock, which would not need it, is
// not available to sk_skb programs (6.18). The C original is GPL-2.0 or
// later.
const programLicense = "GPL"

// flowState is the value of the flows map, one per paired socket, under
// the socket's cookie: what the program did with the bytes that socket
// received. Its layout is the program's (offsets below).
type flowState struct {
	Sent   uint64 // bytes redirected to the peer's egress
	Base   uint32 // the peer's write_seq at the first redirect
	Flags  uint32 // flowBased | flowCongested
	Passed uint64 // bytes passed up to the socket itself (over the budget)
}

// Offsets in flowState, and its flags.
const (
	offSent   = 0
	offBase   = 8
	offFlags  = 12
	offPassed = 16

	flowBased     = 1 // Base is set
	flowCongested = 2 // over the budget once: every later skb is passed up
)

// writeSeqOffset returns the offset of write_seq in the kernel's struct
// tcp_sock, from the kernel's BTF (/sys/kernel/btf/vmlinux): the program
// reads it through the pointer bpf_skc_to_tcp_sock returns, which the
// verifier checks against that same BTF. Returns the offset, or an error
// (no BTF: a kernel built without CONFIG_DEBUG_INFO_BTF).
func writeSeqOffset() (int16, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, fmt.Errorf("kernel BTF: %w", err)
	}
	var ts *btf.Struct
	if err := spec.TypeByName("tcp_sock", &ts); err != nil {
		return 0, fmt.Errorf("struct tcp_sock in the kernel's BTF: %w", err)
	}
	for _, m := range ts.Members {
		if m.Name == "write_seq" {
			if m.Offset%8 != 0 || m.Offset/8 > 1<<15-4 {
				return 0, fmt.Errorf("tcp_sock.write_seq at bit %d", m.Offset)
			}
			return int16(m.Offset / 8), nil
		}
	}
	return 0, fmt.Errorf("no write_seq in struct tcp_sock")
}

// verdict returns the sk_skb verdict program. For the socket that received
// an skb (key: its cookie), it redirects the skb to the egress of the
// socket peers holds under that key, unless that would leave more than
// budget bytes waiting in the kernel for the peer; over the budget the
// skb, and every later one of that socket, is passed up to the receiving
// socket instead (the direction is then the splice engine's: Accel.Read),
// where it is charged to the socket's receive buffer, so that TCP's
// receive window holds the sender back.
//
// peers: the sockhash (receiving socket's cookie -> socket to send to);
// flows: the hash of flowState (receiving socket's cookie -> state);
// writeSeq: offset of tcp_sock.write_seq; budget: the bytes that may wait
// in the kernel between the two sockets (redirected, not yet in the
// peer's send queue). Returns the instructions.
//
// In C it would read:
//
//	__u64 key = bpf_get_socket_cookie(skb);
//	struct flow *f = bpf_map_lookup_elem(&flows, &key);
//	if (!f)
//		return SK_PASS;
//	if (!skb->len)
//		return SK_DROP;                 // a bare FIN: see doc.go
//	if (f->flags & CONGESTED)
//		goto passed;
//	struct bpf_sock *peer = bpf_map_lookup_elem(&peers, &key);
//	if (!peer)
//		return SK_DROP;                 // the peer is closed or reset
//	struct tcp_sock *tp = bpf_skc_to_tcp_sock(peer);
//	if (tp) {
//		__u32 seq = tp->write_seq;
//		if (!(f->flags & BASED)) { f->base = seq; f->flags |= BASED; }
//		if ((__s32)((__u32)f->sent - (seq - f->base)) > budget) {
//			f->flags |= CONGESTED;
//			bpf_sk_release(peer);
//			goto passed;
//		}
//	}
//	bpf_sk_release(peer);
//	if (bpf_sk_redirect_hash(skb, &peers, &key, 0) != SK_PASS)
//		return SK_DROP;
//	f->sent += skb->len;
//	return SK_PASS;
//	passed:
//	f->passed += skb->len;
//	return SK_PASS;
//
// The peer's write_seq advances by what the kernel's backlog worker wrote
// into it, so sent - (write_seq - base) is what the kernel holds for the
// peer: redirected skbs the worker has not written yet because the peer's
// send buffer is full. Without this check that queue has no bound (see
// doc.go). Runs of the program for one socket are serialized by that
// socket's lock (tcp_read_skb runs under it), so f needs no atomics; the
// difference is signed because the worker may write an skb before the
// program has added its length.
func verdict(peers, flows *ebpf.Map, writeSeq int16, budget int32) asm.Instructions {
	return asm.Instructions{
		// R6: the skb; R7: the flow state; R8: the peer socket.
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, flows.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word),
		asm.JSet.Imm(asm.R1, flowCongested, "passed"),
		asm.LoadMapPtr(asm.R1, peers.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.FnSkcToTcpSock.Call(),
		asm.JEq.Imm(asm.R0, 0, "release"),
		asm.LoadMem(asm.R9, asm.R0, writeSeq, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word),
		asm.JSet.Imm(asm.R1, flowBased, "based"),
		asm.StoreMem(asm.R7, offBase, asm.R9, asm.Word),
		asm.Or.Imm(asm.R1, flowBased),
		asm.StoreMem(asm.R7, offFlags, asm.R1, asm.Word),
		// based: w9 = write_seq - base (written since the first
		// redirect); w3 = sent - w9 (what the kernel still holds).
		asm.LoadMem(asm.R2, asm.R7, offBase, asm.Word).WithSymbol("based"),
		asm.Sub.Reg32(asm.R9, asm.R2),
		asm.LoadMem(asm.R3, asm.R7, offSent, asm.DWord),
		asm.Sub.Reg32(asm.R3, asm.R9),
		asm.JSGT.Imm32(asm.R3, budget, "congested"),
		asm.Mov.Reg(asm.R1, asm.R8).WithSymbol("release"),
		asm.FnSkRelease.Call(),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, peers.FD()),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.JNE.Imm(asm.R0, skPass, "drop"),
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word),
		asm.LoadMem(asm.R2, asm.R7, offSent, asm.DWord),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.StoreMem(asm.R7, offSent, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R0, skPass),
		asm.Return(),
		// congested: mark it, let the peer go, pass this skb up.
		asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word).WithSymbol("congested"),
		asm.Or.Imm(asm.R1, flowCongested),
		asm.StoreMem(asm.R7, offFlags, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.FnSkRelease.Call(),
		// passed: count it, pass it up.
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word).WithSymbol("passed"),
		asm.LoadMem(asm.R2, asm.R7, offPassed, asm.DWord),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.StoreMem(asm.R7, offPassed, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skDrop).WithSymbol("drop"),
		asm.Return(),
	}
}
