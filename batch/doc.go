// Package batch is gopasst's batch engine: preallocated frame pools and the
// vectored system calls (recvmmsg, sendmmsg) that move many frames or
// datagrams per kernel crossing. Nothing here allocates after start-up: the
// pools, their iovecs and their message headers are made once and reused,
// which is what keeps the per-packet path free of garbage.
package batch
