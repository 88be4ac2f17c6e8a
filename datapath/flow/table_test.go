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
