// Package batch holds the datapath's batch structures: preallocated frame
// pools (Frames) and the message header arrays of the vectored system calls
// (Msgs, for recvmmsg and sendmmsg, which datapath/sys makes) that move many
// frames or datagrams per kernel crossing. Nothing here allocates after
// start-up: the pools, their iovecs and their message headers are made once
// and reused, which is what keeps the per-packet path free of garbage. It
// imports no package of ours.
package batch
