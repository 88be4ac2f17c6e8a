package flow

import (
	"math/rand/v2"
	"testing"
)

// TestTableAgainstMap drives random binds, lookups and frees and checks the
// table against a Go map, which exercises backward-shift deletion across
// wrapped probe runs (a small table makes collisions frequent).
func TestTableAgainstMap(t *testing.T) {
	tb := New(64)
	ref := map[Key]Index{}
	owner := map[Index][]Key{}
	r := rand.New(rand.NewPCG(1, 2))
	key := func() Key {
		var k Key
		k.Proto = 6
		k.Src[15] = byte(r.IntN(8))
		k.SrcPort = uint16(r.IntN(16))
		return k
	}
	for step := 0; step < 200000; step++ {
		switch r.IntN(3) {
		case 0:
			k := key()
			if _, ok := ref[k]; ok {
				continue
			}
			i, err := tb.Alloc(UDP)
			if err != nil {
				continue
			}
			if err := tb.Bind(i, 0, &k); err != nil {
				t.Fatal(err)
			}
			ref[k] = i
			owner[i] = []Key{k}
			k2 := key()
			if _, ok := ref[k2]; !ok && r.IntN(2) == 0 {
				if err := tb.Bind(i, 1, &k2); err != nil {
					t.Fatal(err)
				}
				ref[k2] = i
				owner[i] = append(owner[i], k2)
			}
		case 1:
			for i, ks := range owner {
				tb.Free(i)
				for _, k := range ks {
					delete(ref, k)
				}
				delete(owner, i)
				break
			}
		case 2:
			k := key()
			got, ok := tb.Lookup(&k)
			want, wok := ref[k]
			if ok != wok || (ok && got != want) {
				t.Fatalf("step %d: lookup %v: got %d,%v want %d,%v", step, k, got, ok, want, wok)
			}
		}
	}
	if tb.Count() != len(owner) {
		t.Fatalf("count %d, want %d", tb.Count(), len(owner))
	}
}

func TestLookupAllocs(t *testing.T) {
	tb := New(1024)
	var k Key
	k.Proto = 17
	i, _ := tb.Alloc(UDP)
	tb.Bind(i, 0, &k)
	n := testing.AllocsPerRun(1000, func() {
		if _, ok := tb.Lookup(&k); !ok {
			t.Fatal("missing")
		}
	})
	if n != 0 {
		t.Fatalf("%v allocs per lookup", n)
	}
}

// TestTableGrows binds two keys for each of 10,000 flows in a table that
// starts with a small index, so that it doubles several times, and checks
// that every key still finds its flow after each growth, that freeing
// keeps the rest findable, and that freed slots are reused lowest first.
func TestTableGrows(t *testing.T) {
	const n = 10000
	tb := New(MaxFlows)
	if len(tb.buckets) != minBuckets {
		t.Fatalf("index starts at %d buckets, want %d", len(tb.buckets), minBuckets)
	}
	key := func(i, side int) Key {
		var k Key
		k.Proto = 17
		k.Src[15], k.Src[14] = byte(i), byte(i>>8)
		k.SrcPort = uint16(i)
		k.DstPort = uint16(side)
		return k
	}
	for i := 0; i < n; i++ {
		f, err := tb.Alloc(UDP)
		if err != nil {
			t.Fatal(err)
		}
		if f != Index(i) {
			t.Fatalf("flow %d got slot %d: slots are not handed out lowest first", i, f)
		}
		for s := 0; s < 2; s++ {
			k := key(i, s)
			if err := tb.Bind(f, s, &k); err != nil {
				t.Fatal(err)
			}
		}
		k := key(i/2, 1)
		if g, ok := tb.Lookup(&k); !ok || g != Index(i/2) {
			t.Fatalf("after %d flows: key of flow %d finds %d, %v", i+1, i/2, g, ok)
		}
	}
	if got := len(tb.buckets); got < 4*n || got > 8*n {
		t.Errorf("index has %d buckets for %d keys", got, 2*n)
	}
	for i := 0; i < n; i += 2 {
		tb.Free(Index(i))
	}
	for i := 0; i < n; i++ {
		for s := 0; s < 2; s++ {
			k := key(i, s)
			g, ok := tb.Lookup(&k)
			if want := i%2 == 1; ok != want || (ok && g != Index(i)) {
				t.Fatalf("flow %d key %d: Lookup = %d, %v", i, s, g, ok)
			}
			if kk, ok := tb.Key(Index(i), s); (i%2 == 1) != ok || (ok && *kk != k) {
				t.Fatalf("flow %d: Key(%d) = %v, %v", i, s, kk, ok)
			}
		}
	}
	if f, _ := tb.Alloc(TCP); f != Index(n-2) {
		t.Errorf("Alloc after frees = %d, want the last freed slot %d", f, n-2)
	}
	if tb.Count() != n/2+1 {
		t.Errorf("Count = %d, want %d", tb.Count(), n/2+1)
	}
}

// TestTableFull fills a table and checks ErrFull, then that a freed slot
// is handed out again.
func TestTableFull(t *testing.T) {
	tb := New(3)
	for i := 0; i < 3; i++ {
		if _, err := tb.Alloc(TCP); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tb.Alloc(TCP); err != ErrFull {
		t.Fatalf("fourth Alloc: %v, want ErrFull", err)
	}
	tb.Free(1)
	if i, err := tb.Alloc(UDP); err != nil || i != 1 || tb.Kind(1) != UDP {
		t.Fatalf("Alloc after Free = %d, %v", i, err)
	}
}
