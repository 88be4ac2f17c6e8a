// proto.go: the vhost-user messages the front end sends and the replies it
// reads, on the control socket (qemu's docs/interop/vhost-user.rst).

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Front-end requests (the numbers of vhost-user.rst).
const (
	reqGetFeatures         = 1
	reqSetFeatures         = 2
	reqSetOwner            = 3
	reqSetMemTable         = 5
	reqSetVringNum         = 8
	reqSetVringAddr        = 9
	reqSetVringBase        = 10
	reqGetVringBase        = 11
	reqSetVringKick        = 12
	reqSetVringCall        = 13
	reqSetVringErr         = 14
	reqGetProtocolFeatures = 15
	reqSetProtocolFeatures = 16
	reqGetQueueNum         = 17
	reqSetVringEnable      = 18
)

// reqNames names the requests for errors and logs.
var reqNames = map[uint32]string{
	reqGetFeatures: "GET_FEATURES", reqSetFeatures: "SET_FEATURES", reqSetOwner: "SET_OWNER",
	reqSetMemTable: "SET_MEM_TABLE", reqSetVringNum: "SET_VRING_NUM", reqSetVringAddr: "SET_VRING_ADDR",
	reqSetVringBase: "SET_VRING_BASE", reqGetVringBase: "GET_VRING_BASE", reqSetVringKick: "SET_VRING_KICK",
	reqSetVringCall: "SET_VRING_CALL", reqSetVringErr: "SET_VRING_ERR", reqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	reqSetProtocolFeatures: "SET_PROTOCOL_FEATURES", reqGetQueueNum: "GET_QUEUE_NUM", reqSetVringEnable: "SET_VRING_ENABLE",
}

// reqName returns request r's name.
func reqName(r uint32) string {
	if n, ok := reqNames[r]; ok {
		return n
	}
	return fmt.Sprintf("request %d", r)
}

// Header flags: version 1 in bits 0-1, REPLY on every back-end reply,
// NEED_REPLY asking for one (REPLY_ACK).
const (
	flagVersion   = 0x1
	flagReply     = 0x4
	flagNeedReply = 0x8
	hdrSize       = 12
	// maxPayload is the largest payload: a memory table of 8 regions.
	maxPayload = 8 + 32*maxRegions
	maxRegions = 8
	// vringNoFd is bit 8 of KICK/CALL/ERR's u64: no descriptor attached.
	vringNoFd = 0x100
)

// Virtio and vhost feature bits the peer knows.
const (
	fNetCsum       = 0
	fNetGuestCsum  = 1
	fNetGuestTSO4  = 7
	fNetGuestTSO6  = 8
	fNetGuestECN   = 9
	fNetHostTSO4   = 11
	fNetHostTSO6   = 12
	fNetHostECN    = 13
	fNetMrgRxbuf   = 15
	fRingEventIdx  = 29
	fProtocolFeats = 30
	fVersion1      = 32
)

// Protocol feature bits the peer acks (those qemu 7.2 knows and a
// single-queue-pair net device without migration uses).
const (
	pfMQ       = 0
	pfLogShmfd = 1
	pfRARP     = 2
	pfReplyAck = 3
	pfAcked    = 1<<pfMQ | 1<<pfLogShmfd | 1<<pfRARP | 1<<pfReplyAck
)

// replyTimeout bounds the wait for any reply: a back end that takes longer
// is stuck.
const replyTimeout = 5 * time.Second

// errClosed is a control connection the back end closed (or reset).
var errClosed = errors.New("back end closed the connection")

// ctl is the front end's side of the control socket.
type ctl struct {
	c        *net.UnixConn
	replyAck bool // REPLY_ACK negotiated: NEED_REPLY on SET_MEM_TABLE
	buf      [hdrSize + maxPayload]byte
	trace    func(format string, args ...any) // nil: quiet
}

// send sends request req with payload and the descriptors fds (SCM_RIGHTS,
// in the same sendmsg as the header, as qemu does), flags added to the
// version.
func (c *ctl) send(req, flags uint32, payload []byte, fds ...int) error {
	if len(payload) > maxPayload {
		return fmt.Errorf("%s: payload of %d bytes", reqName(req), len(payload))
	}
	b := c.buf[:hdrSize+len(payload)]
	binary.LittleEndian.PutUint32(b[0:], req)
	binary.LittleEndian.PutUint32(b[4:], flagVersion|flags)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(payload)))
	copy(b[hdrSize:], payload)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if c.trace != nil {
		c.trace("-> %s flags %#x size %d fds %d", reqName(req), flagVersion|flags, len(payload), len(fds))
	}
	c.c.SetWriteDeadline(time.Now().Add(replyTimeout))
	n, oobn, err := c.c.WriteMsgUnix(b, oob, nil)
	if err != nil {
		if isConnEnd(err) {
			return fmt.Errorf("%s: %w", reqName(req), errClosed)
		}
		return fmt.Errorf("send %s: %w", reqName(req), err)
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("send %s: short write (%d of %d bytes)", reqName(req), n, len(b))
	}
	return nil
}

// isConnEnd reports whether err is the back end going away.
func isConnEnd(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

// reply reads the reply to req: exactly a 12-byte header whose flags are
// exactly version 1 and REPLY (qemu drops the link otherwise), whose
// request is req and whose size is size, then the payload, returned.
func (c *ctl) reply(req uint32, size int) ([]byte, error) {
	c.c.SetReadDeadline(time.Now().Add(replyTimeout))
	h := c.buf[:hdrSize]
	if _, err := io.ReadFull(c.c, h); err != nil {
		if isConnEnd(err) {
			return nil, fmt.Errorf("reply to %s: %w", reqName(req), errClosed)
		}
		return nil, fmt.Errorf("back end did not answer %s: %w", reqName(req), err)
	}
	r, fl, sz := binary.LittleEndian.Uint32(h[0:]), binary.LittleEndian.Uint32(h[4:]), binary.LittleEndian.Uint32(h[8:])
	switch {
	case r != req:
		return nil, fmt.Errorf("back end answered %s with a reply to %s", reqName(req), reqName(r))
	case fl != flagVersion|flagReply:
		return nil, fmt.Errorf("back end answered %s with flags %#x, want exactly %#x", reqName(req), fl, flagVersion|flagReply)
	case int(sz) != size:
		return nil, fmt.Errorf("back end answered %s with %d payload bytes, want %d", reqName(req), sz, size)
	}
	p := c.buf[hdrSize : hdrSize+size]
	if _, err := io.ReadFull(c.c, p); err != nil {
		return nil, fmt.Errorf("reply to %s, payload: %w", reqName(req), err)
	}
	if c.trace != nil {
		c.trace("<- %s %x", reqName(req), p)
	}
	return p, nil
}

// u64 returns v as an 8-byte payload.
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// getU64 sends req (no payload) and returns its u64 reply.
func (c *ctl) getU64(req uint32) (uint64, error) {
	if err := c.send(req, 0, nil); err != nil {
		return 0, err
	}
	p, err := c.reply(req, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p), nil
}

// setU64 sends req with the u64 v and, if fds are given, those.
func (c *ctl) setU64(req uint32, v uint64, fds ...int) error {
	return c.send(req, 0, u64(v), fds...)
}

// vringState returns the {index, num} payload of NUM, BASE and ENABLE.
func vringState(index, num uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, index)
	return binary.LittleEndian.AppendUint32(b, num)
}

// vringAddr returns SET_VRING_ADDR's payload: index, flags 0 (no
// logging), then the descriptor table, used and avail rings' addresses in
// the front end's own address space (QVAs), and no log address.
func vringAddr(index uint32, desc, used, avail uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, index)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint64(b, desc)
	b = binary.LittleEndian.AppendUint64(b, used)
	b = binary.LittleEndian.AppendUint64(b, avail)
	return binary.LittleEndian.AppendUint64(b, 0)
}

// region is one entry of SET_MEM_TABLE.
type region struct {
	gpa, size, qva, offset uint64
}

// memTable returns SET_MEM_TABLE's payload for regions.
func memTable(regions []region) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regions)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regions {
		b = binary.LittleEndian.AppendUint64(b, r.gpa)
		b = binary.LittleEndian.AppendUint64(b, r.size)
		b = binary.LittleEndian.AppendUint64(b, r.qva)
		b = binary.LittleEndian.AppendUint64(b, r.offset)
	}
	return b
}

// sync waits until the back end has taken every message sent before: the
// reply to NEED_REPLY when REPLY_ACK is on (req was sent with it), else a
// GET_FEATURES round trip (what qemu does when it needs one without
// REPLY_ACK).
func (c *ctl) sync(req uint32) error {
	if c.replyAck {
		p, err := c.reply(req, 8)
		if err != nil {
			return err
		}
		if v := binary.LittleEndian.Uint64(p); v != 0 {
			return fmt.Errorf("back end refused %s (status %d)", reqName(req), v)
		}
		return nil
	}
	_, err := c.getU64(reqGetFeatures)
	return err
}
