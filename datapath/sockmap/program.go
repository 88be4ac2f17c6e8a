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
	Flags  uint32 // flowBased | flowCongested | flowSeq | flowBroken
	Passed uint64 // bytes passed up to the socket itself (over the budget)
	// Next is the sequence number after the last byte the program saw
	// (set with flowSeq): a received skb that starts before it repeats
	// bytes already handled (see doc.go, "Overlapping skbs").
	Next    uint32
	Trims   uint32 // skbs that started before Next
	Trimmed uint64 // bytes cut off their front (repeated bytes)
}

// Offsets in flowState, and its flags.
const (
	offSent    = 0
	offBase    = 8
	offFlags   = 12
	offPassed  = 16
	offNext    = 24
	offTrims   = 28
	offTrimmed = 32

	flowBased     = 1 // Base is set
	flowCongested = 2 // over the budget once: every later skb is passed up
	flowSeq       = 4 // Next is set
	flowBroken    = 8 // repeated bytes could not be cut: the pair must be reset
)

// TCP constants the program uses: TCPHDR_FIN (include/net/tcp.h), the
// FIN bit of tcp_skb_cb.tcp_flags, which counts one in end_seq.
const tcpFIN = 0x01

// maxTrimStep is the most bytes one bpf_skb_adjust_room call may take off
// an sk_skb's front (the helper refuses more: sk_skb_adjust_room's 0xfff),
// and maxTrimSteps how many calls the program makes for one skb at most:
// an skb repeating more than maxTrimStep * maxTrimSteps bytes (256 KiB,
// four times the largest segment on loopback) breaks the pair.
const (
	maxTrimStep  = 0xfff
	maxTrimSteps = 64
)

// kernelLayout is what the program needs of the running kernel's types,
// from its BTF: where tcp_sock.write_seq is, where TCP's control block of
// an skb (struct tcp_skb_cb in sk_buff.cb) keeps the skb's sequence
// numbers and flags, and the BTF id of the kfunc bpf_cast_to_kern_ctx,
// which gives the program the struct sk_buff behind its context.
type kernelLayout struct {
	writeSeq        int16    // offsetof(struct tcp_sock, write_seq)
	seq, endSeq     int16    // offsetof(struct sk_buff, cb) + offsetof(struct tcp_skb_cb, seq / end_seq)
	tcpFlags        int16    // ... + offsetof(struct tcp_skb_cb, tcp_flags)
	tcpFlagsSize    asm.Size // its size: a byte, or two since AccECN (6.18)
	castToKernCtxID int64    // BTF id of the kfunc bpf_cast_to_kern_ctx
}

// memberOffset returns the byte offset of member name in struct st, which
// must be byte-aligned and of size bytes (not a bitfield).
func memberOffset(st *btf.Struct, name string, size uint32) (int16, error) {
	for _, m := range st.Members {
		if m.Name != name {
			continue
		}
		if m.Offset%8 != 0 || m.BitfieldSize != 0 || m.Offset/8 > 1<<15-8 {
			return 0, fmt.Errorf("%s.%s at bit %d (bitfield %d)", st.Name, name, m.Offset, m.BitfieldSize)
		}
		if sz, err := btf.Sizeof(m.Type); err != nil || uint32(sz) != size {
			return 0, fmt.Errorf("%s.%s of %d bytes, want %d (%v)", st.Name, name, sz, size, err)
		}
		return int16(m.Offset / 8), nil
	}
	return 0, fmt.Errorf("no %s in struct %s", name, st.Name)
}

// loadLayout reads the kernel's BTF (/sys/kernel/btf/vmlinux) for what
// the program needs (kernelLayout). Returns it, or an error (no BTF: a
// kernel built without CONFIG_DEBUG_INFO_BTF; a kernel whose types differ).
func loadLayout() (kernelLayout, error) {
	var l kernelLayout
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return l, fmt.Errorf("kernel BTF: %w", err)
	}
	var ts, skb, cb *btf.Struct
	for _, t := range []struct {
		name string
		st   **btf.Struct
	}{{"tcp_sock", &ts}, {"sk_buff", &skb}, {"tcp_skb_cb", &cb}} {
		if err := spec.TypeByName(t.name, t.st); err != nil {
			return l, fmt.Errorf("struct %s in the kernel's BTF: %w", t.name, err)
		}
	}
	if l.writeSeq, err = memberOffset(ts, "write_seq", 4); err != nil {
		return l, err
	}
	cbOff, err := memberOffset(skb, "cb", 48)
	if err != nil {
		return l, err
	}
	l.tcpFlagsSize = asm.Byte
	if _, err := memberOffset(cb, "tcp_flags", 1); err != nil {
		l.tcpFlagsSize = asm.Half
	}
	for _, f := range []struct {
		name string
		size uint32
		off  *int16
	}{{"seq", 4, &l.seq}, {"end_seq", 4, &l.endSeq}, {"tcp_flags", uint32(l.tcpFlagsSize.Sizeof()), &l.tcpFlags}} {
		o, err := memberOffset(cb, f.name, f.size)
		if err != nil {
			return l, err
		}
		if o+int16(f.size) > 48 {
			return l, fmt.Errorf("tcp_skb_cb.%s at %d: beyond sk_buff.cb", f.name, o)
		}
		*f.off = cbOff + o
	}
	var fn *btf.Func
	if err := spec.TypeByName("bpf_cast_to_kern_ctx", &fn); err != nil {
		return l, fmt.Errorf("the kfunc bpf_cast_to_kern_ctx in the kernel's BTF: %w", err)
	}
	id, err := spec.TypeID(fn)
	if err != nil {
		return l, fmt.Errorf("bpf_cast_to_kern_ctx: %w", err)
	}
	l.castToKernCtxID = int64(id)
	return l, nil
}

// trimOverlaps says whether the program cuts the repeated front of an
// overlapping skb (see verdict). Only TestStress's -sockmap.notrim turns it
// off, to show what the cut is for; it is read at Probe.
var trimOverlaps = true

// verdict returns the sk_skb verdict program. For the socket that received
// an skb (key: its cookie), it first cuts off the skb's front if it
// repeats bytes an earlier skb of the socket carried, then redirects the
// skb to the egress of the socket peers holds under that key, unless that
// would leave more than budget bytes waiting in the kernel for the peer;
// over the budget the skb, and every later one of that socket, is passed
// up to the receiving socket instead (the direction is then the splice
// engine's: Accel.Read), where it is charged to the socket's receive
// buffer, so that TCP's receive window holds the sender back.
//
// peers: the sockhash (receiving socket's cookie -> socket to send to);
// flows: the hash of flowState (receiving socket's cookie -> state);
// l: the kernel's layout (loadLayout); budget: the bytes that may wait in
// the kernel between the two sockets (redirected, not yet in the peer's
// send queue). Returns the instructions.
//
// In C it would read:
//
//	__u64 key = bpf_get_socket_cookie(skb);
//	struct flow *f = bpf_map_lookup_elem(&flows, &key);
//	if (!f)
//		return SK_PASS;
//	if (!skb->len)
//		return SK_DROP;                 // a bare FIN: see doc.go
//	if (f->flags & BROKEN)
//		return SK_PASS;                 // Read resets the pair
//	struct tcp_skb_cb *cb = TCP_SKB_CB(bpf_cast_to_kern_ctx(skb));
//	__u32 seq = cb->seq, end = cb->end_seq - (cb->tcp_flags & TCPHDR_FIN);
//	if (!(f->flags & SEQ)) {
//		f->flags |= SEQ;
//		f->next = end;
//	} else if ((__s32)(f->next - seq) <= 0) {
//		f->next = end;                  // in order (the usual case)
//	} else {                                // repeats f->next - seq bytes
//		__u32 cut = min(f->next - seq, skb->len);
//		if ((__s32)(end - f->next) > 0)
//			f->next = end;
//		f->trims++;
//		f->trimmed += cut;
//		for (int i = 0; cut; i++) {
//			__u32 n = min(cut, 0xfff);
//			if (i == 64 || bpf_skb_adjust_room(skb, -n, 0, 0)) {
//				f->flags |= BROKEN;
//				return SK_PASS;
//			}
//			cut -= n;
//		}
//		if (!skb->len)
//			return SK_DROP;         // nothing new in it
//	}
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
// The cut: TCP queues an skb that starts before rcv_nxt but ends after it
// whole (tcp_data_queue's "partial packet", and tcp_ofo_queue for skbs
// that waited out of order), leaving its readers to skip the repeated
// front by copied_seq; tcp_read_skb hands the program whole skbs and
// skips nothing, so without the cut those bytes would reach the peer (or
// Read) twice (see doc.go). bpf_skb_adjust_room takes at most 0xfff bytes
// off an sk_skb's front per call. The cut also keeps copied_seq right, as
// the kernel advances it by the skb's length after the program.
//
// The peer's write_seq advances by what the kernel's backlog worker wrote
// into it, so sent - (write_seq - base) is what the kernel holds for the
// peer: redirected skbs the worker has not written yet because the peer's
// send buffer is full. Without this check that queue has no bound (see
// doc.go). Runs of the program for one socket are serialized by that
// socket's lock (tcp_read_skb runs under it), so f needs no atomics; the
// difference is signed because the worker may write an skb before the
// program has added its length.
func verdict(peers, flows *ebpf.Map, l kernelLayout, budget int32) asm.Instructions {
	castToKernCtx := asm.FnMapLookupElem.Call()
	castToKernCtx.Src, castToKernCtx.Constant = asm.PseudoKfuncCall, l.castToKernCtxID
	seqCheck := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word),
		asm.JSet.Imm(asm.R1, flowBroken, "pass"),
		// R2: seq; R3: end (end_seq less the FIN's one).
		asm.Mov.Reg(asm.R1, asm.R6),
		castToKernCtx,
		asm.LoadMem(asm.R2, asm.R0, l.seq, asm.Word),
		asm.LoadMem(asm.R3, asm.R0, l.endSeq, asm.Word),
		asm.LoadMem(asm.R4, asm.R0, l.tcpFlags, l.tcpFlagsSize),
		asm.And.Imm(asm.R4, tcpFIN),
		asm.Sub.Reg32(asm.R3, asm.R4),
		asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word),
		asm.JSet.Imm(asm.R1, flowSeq, "seqknown"),
		asm.Or.Imm(asm.R1, flowSeq),
		asm.StoreMem(asm.R7, offFlags, asm.R1, asm.Word),
		asm.Ja.Label("advance"),
		// seqknown: R5 = next; R8 = next - seq, the bytes repeated.
		asm.LoadMem(asm.R5, asm.R7, offNext, asm.Word).WithSymbol("seqknown"),
		asm.Mov.Reg32(asm.R8, asm.R5),
		asm.Sub.Reg32(asm.R8, asm.R2),
		asm.JSLE.Imm32(asm.R8, 0, "advance"),
		// An overlap: next moves on only if the skb ends after it.
		asm.Mov.Reg32(asm.R9, asm.R3),
		asm.Sub.Reg32(asm.R9, asm.R5),
		asm.JSLE.Imm32(asm.R9, 0, "counted"),
		asm.StoreMem(asm.R7, offNext, asm.R3, asm.Word),
		asm.LoadMem(asm.R1, asm.R7, offTrims, asm.Word).WithSymbol("counted"),
		asm.Add.Imm32(asm.R1, 1),
		asm.StoreMem(asm.R7, offTrims, asm.R1, asm.Word),
		// R8 = min(R8, skb->len): what to cut.
		asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word),
		asm.JGE.Reg32(asm.R1, asm.R8, "cutlen"),
		asm.Mov.Reg32(asm.R8, asm.R1),
		asm.LoadMem(asm.R1, asm.R7, offTrimmed, asm.DWord).WithSymbol("cutlen"),
		asm.Add.Reg(asm.R1, asm.R8),
		asm.StoreMem(asm.R7, offTrimmed, asm.R1, asm.DWord),
	}
	if trimOverlaps {
		seqCheck = append(seqCheck,
			// R9: the calls left; each cuts R2 = min(R8, 0xfff).
			asm.Mov.Imm(asm.R9, maxTrimSteps),
			asm.Mov.Reg32(asm.R2, asm.R8).WithSymbol("cut"),
			asm.JLE.Imm32(asm.R2, maxTrimStep, "step"),
			asm.Mov.Imm32(asm.R2, maxTrimStep),
			asm.Sub.Reg32(asm.R8, asm.R2).WithSymbol("step"),
			asm.Neg.Imm32(asm.R2, 0),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R3, 0),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnSkbAdjustRoom.Call(),
			asm.JNE.Imm(asm.R0, 0, "broken"),
			asm.JEq.Imm32(asm.R8, 0, "cutdone"),
			asm.Sub.Imm(asm.R9, 1),
			asm.JNE.Imm(asm.R9, 0, "cut"),
			asm.Ja.Label("broken"),
			asm.LoadMem(asm.R1, asm.R6, skbLen, asm.Word).WithSymbol("cutdone"),
			asm.JEq.Imm(asm.R1, 0, "drop"),
		)
	}
	seqCheck = append(seqCheck,
		asm.Ja.Label("inorder"),
		asm.StoreMem(asm.R7, offNext, asm.R3, asm.Word).WithSymbol("advance"),
	)
	insns := asm.Instructions{
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
	}
	insns = append(insns, seqCheck...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word).WithSymbol("inorder"),
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
		asm.LoadMem(asm.R9, asm.R0, l.writeSeq, asm.Word),
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
	)
	if trimOverlaps {
		insns = append(insns,
			// broken: the repeated bytes could not all be cut; the
			// skb is passed up, where Read sees the flag and resets
			// the pair.
			asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word).WithSymbol("broken"),
			asm.Or.Imm(asm.R1, flowBroken),
			asm.StoreMem(asm.R7, offFlags, asm.R1, asm.Word),
			asm.Mov.Imm(asm.R0, skPass),
			asm.Return(),
		)
	}
	return insns
}
