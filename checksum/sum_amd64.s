// AVX2 and AVX-512 kernels of the Internet checksum for amd64.
//
// Both kernels sum the buffer as little-endian 64-bit lanes and keep, per
// lane, two accumulators: "all" adds every 64-bit word modulo 2^64, "high"
// adds only the upper 32 bits of each word (word >> 32). The carries lost by
// "all" are recovered at the end: all - high<<32 is exactly the sum of the
// lower 32-bit halves, so lane total = (all - high<<32) + high is the exact
// integer sum of the little-endian 32-bit words, which is congruent to their
// 16-bit ones'-complement sum modulo 0xffff (2^16 == 1). That costs one load,
// one shift and two adds per vector, with no carry handling in the loop.
// Exactness holds while a lane's sums stay below 2^64: the Go callers split
// buffers into chunks of at most maxChunk bytes.

//go:build amd64 && !purego

#include "textflag.h"

// func sumAVX2(b []byte) uint64
//
// sumAVX2 returns a 64-bit value congruent, modulo 0xffff, to the sum of
// the little-endian 16-bit words of b (an odd last byte zero-padded), and 0
// only if b is all zero: the vector loop covers len(b) &^ 31 bytes, scalar
// code the rest. Loads are unaligned: on the CPUs measured, a misaligned
// buffer costs the 32-byte loads little, unlike 64-byte ones.
TEXT ·sumAVX2(SB), NOSPLIT, $0-32
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), CX

	// Four accumulator pairs (all/high): Y0/Y1, Y2/Y3, Y4/Y5, Y6/Y7 for the
	// 128-byte loop; the 32-byte loop and the reduction use Y0/Y1 only, so
	// short buffers skip zeroing and merging the other three.
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	CMPQ  CX, $128
	JB    avx2_loop32
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	VPXOR Y4, Y4, Y4
	VPXOR Y5, Y5, Y5
	VPXOR Y6, Y6, Y6
	VPXOR Y7, Y7, Y7

avx2_loop128:
	VMOVDQU (SI), Y8
	VMOVDQU 32(SI), Y9
	VMOVDQU 64(SI), Y10
	VMOVDQU 96(SI), Y11
	VPADDQ  Y8, Y0, Y0
	VPADDQ  Y9, Y2, Y2
	VPADDQ  Y10, Y4, Y4
	VPADDQ  Y11, Y6, Y6
	VPSRLQ  $32, Y8, Y8
	VPSRLQ  $32, Y9, Y9
	VPSRLQ  $32, Y10, Y10
	VPSRLQ  $32, Y11, Y11
	VPADDQ  Y8, Y1, Y1
	VPADDQ  Y9, Y3, Y3
	VPADDQ  Y10, Y5, Y5
	VPADDQ  Y11, Y7, Y7
	ADDQ    $128, SI
	SUBQ    $128, CX
	CMPQ    CX, $128
	JAE     avx2_loop128

	VPADDQ Y2, Y0, Y0
	VPADDQ Y6, Y4, Y4
	VPADDQ Y4, Y0, Y0
	VPADDQ Y3, Y1, Y1
	VPADDQ Y7, Y5, Y5
	VPADDQ Y5, Y1, Y1

avx2_loop32:
	CMPQ    CX, $32
	JB      avx2_reduce
	VMOVDQU (SI), Y8
	VPADDQ  Y8, Y0, Y0
	VPSRLQ  $32, Y8, Y8
	VPADDQ  Y8, Y1, Y1
	ADDQ    $32, SI
	SUBQ    $32, CX
	JMP     avx2_loop32

avx2_reduce:
	// Y0: all, Y1: high.
	VPSLLQ $32, Y1, Y2
	VPSUBQ Y2, Y0, Y0 // exact sums of the low halves
	VPADDQ Y1, Y0, Y0 // exact lane totals

	VEXTRACTI128 $1, Y0, X1
	VPADDQ       X1, X0, X0
	VPEXTRQ      $1, X0, AX
	VMOVQ        X0, DX
	ADDQ         DX, AX
	VZEROUPPER

	// Scalar tail of 0-31 bytes, added with end-around carry (after a
	// carry the sum is at most 2^64-2, so adding it back cannot carry).
	// Every piece starts at an even offset, so word phases are kept.
avx2_tail8:
	CMPQ CX, $8
	JB   avx2_tail4
	ADDQ (SI), AX
	ADCQ $0, AX
	ADDQ $8, SI
	SUBQ $8, CX
	JMP  avx2_tail8

avx2_tail4:
	CMPQ  CX, $4
	JB    avx2_tail2
	MOVL  (SI), DX
	ADDQ  DX, AX
	ADCQ  $0, AX
	ADDQ  $4, SI
	SUBQ  $4, CX

avx2_tail2:
	CMPQ    CX, $2
	JB      avx2_tail1
	MOVWQZX (SI), DX
	ADDQ    DX, AX
	ADCQ    $0, AX
	ADDQ    $2, SI
	SUBQ    $2, CX

avx2_tail1:
	TESTQ   CX, CX
	JZ      avx2_done
	MOVBQZX (SI), DX
	ADDQ    DX, AX
	ADCQ    $0, AX

avx2_done:
	MOVQ AX, ret+24(FP)
	RET

// func sumAVX512(b []byte) uint64
//
// sumAVX512 returns a 64-bit value congruent, modulo 0xffff, to the sum of
// the little-endian 16-bit words of b (an odd last byte zero-padded), and 0
// only if b is all zero. Needs AVX512F and AVX512BW.
//
// Partial vectors are read with byte-masked zeroing loads, which never fault
// on masked-out bytes, so there is no scalar code for any length. Buffers of
// 256 bytes or more first sum a head up to a 64-byte boundary, so that the
// main loop never splits a load across cache lines (which halves its speed
// on a misaligned buffer). If the head length h is odd, the rest of b is out
// of word phase: the head's lanes are rotated left by 8 bits (times 2^8,
// modulo 2^64-1 and so modulo 0xffff) and the final total too, which gives
// head + 2^8 * rest, the rest's sum byte-swapped as it should be.
TEXT ·sumAVX512(SB), NOSPLIT, $0-32
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), BX
	XORQ DI, DI // 1 if the final total must be rotated

	// Accumulator pairs as in sumAVX2: Z0/Z1 to Z6/Z7 in the 256-byte loop,
	// Z0/Z1 only before and after it.
	VPXORQ Z0, Z0, Z0
	VPXORQ Z1, Z1, Z1
	CMPQ   BX, $256
	JB     avx512_loop64

	// Head: CX = -SI & 63 bytes, 0 if already aligned.
	MOVQ SI, CX
	NEGQ CX
	ANDQ $63, CX
	JZ   avx512_aligned
	MOVQ       $-1, AX
	SHLQ       CX, AX
	NOTQ       AX
	KMOVQ      AX, K1
	VMOVDQU8.Z (SI), K1, Z8
	ADDQ       CX, SI
	SUBQ       CX, BX
	MOVQ       CX, DI
	ANDQ       $1, DI
	JZ         avx512_head_even
	VPROLQ     $8, Z8, Z8

avx512_head_even:
	VPADDQ Z8, Z0, Z0
	VPSRLQ $32, Z8, Z8
	VPADDQ Z8, Z1, Z1

avx512_aligned:
	VPXORQ Z2, Z2, Z2
	VPXORQ Z3, Z3, Z3
	VPXORQ Z4, Z4, Z4
	VPXORQ Z5, Z5, Z5
	VPXORQ Z6, Z6, Z6
	VPXORQ Z7, Z7, Z7
	CMPQ   BX, $256
	JB     avx512_merge

avx512_loop256:
	VPADDQ (SI), Z0, Z0
	VPADDQ 64(SI), Z2, Z2
	VPADDQ 128(SI), Z4, Z4
	VPADDQ 192(SI), Z6, Z6
	VPSRLQ $32, (SI), Z8
	VPSRLQ $32, 64(SI), Z9
	VPSRLQ $32, 128(SI), Z10
	VPSRLQ $32, 192(SI), Z11
	VPADDQ Z8, Z1, Z1
	VPADDQ Z9, Z3, Z3
	VPADDQ Z10, Z5, Z5
	VPADDQ Z11, Z7, Z7
	ADDQ   $256, SI
	SUBQ   $256, BX
	CMPQ   BX, $256
	JAE    avx512_loop256

avx512_merge:
	VPADDQ Z2, Z0, Z0
	VPADDQ Z6, Z4, Z4
	VPADDQ Z4, Z0, Z0
	VPADDQ Z3, Z1, Z1
	VPADDQ Z7, Z5, Z5
	VPADDQ Z5, Z1, Z1

avx512_loop64:
	CMPQ   BX, $64
	JB     avx512_tail
	VPADDQ (SI), Z0, Z0
	VPSRLQ $32, (SI), Z8
	VPADDQ Z8, Z1, Z1
	ADDQ   $64, SI
	SUBQ   $64, BX
	JMP    avx512_loop64

avx512_tail:
	TESTQ BX, BX
	JZ    avx512_reduce
	// K1 = (1 << BX) - 1, BX in 1..63: one mask bit per remaining byte.
	MOVQ       BX, CX
	MOVQ       $-1, AX
	SHLQ       CX, AX
	NOTQ       AX
	KMOVQ      AX, K1
	VMOVDQU8.Z (SI), K1, Z8
	VPADDQ     Z8, Z0, Z0
	VPSRLQ     $32, Z8, Z8
	VPADDQ     Z8, Z1, Z1

avx512_reduce:
	// Z0: all, Z1: high.
	VPSLLQ $32, Z1, Z2
	VPSUBQ Z2, Z0, Z0 // exact sums of the low halves
	VPADDQ Z1, Z0, Z0 // exact lane totals

	VEXTRACTI64X4 $1, Z0, Y1
	VPADDQ        Y1, Y0, Y0
	VEXTRACTI128  $1, Y0, X1
	VPADDQ        X1, X0, X0
	VPEXTRQ       $1, X0, AX
	VMOVQ         X0, DX
	ADDQ          DX, AX
	VZEROUPPER
	TESTQ         DI, DI
	JZ            avx512_done
	ROLQ          $8, AX

avx512_done:
	MOVQ AX, ret+24(FP)
	RET
