package envoysim

import "math/rand/v2"

// ChunkPlan decides where Envoy's codec cuts a body into the chunks the
// ext_proc filter sees. Real chunk boundaries follow TLS records, HTTP/2
// frames and socket reads, never JSON or SSE boundaries, so tests choose
// them. Next returns the size of the next chunk; 0 means "whatever has
// arrived" (the upstream's own writes).
type ChunkPlan interface {
	Next() int
}

// Natural passes bytes on as the upstream's reads deliver them.
type Natural struct{}

// Next implements ChunkPlan.
func (Natural) Next() int { return 0 }

// Fixed cuts every chunk to n bytes (1 splits every event, every UTF-8
// sequence and every CRLF).
type Fixed int

// Next implements ChunkPlan.
func (f Fixed) Next() int { return int(f) }

// Sizes cycles through a list of sizes: byte-exact plans.
type Sizes struct {
	List []int
	i    int
}

// Next implements ChunkPlan.
func (s *Sizes) Next() int {
	n := s.List[s.i%len(s.List)]
	s.i++
	return n
}

// Whole delivers the body as one chunk (several events coalesced).
type Whole struct{}

// Next implements ChunkPlan.
func (Whole) Next() int { return -1 }

// Random cuts chunks of 1..Max bytes from a seed.
type Random struct {
	r   *rand.Rand
	max int
}

// NewRandom is a seeded random plan.
func NewRandom(seed uint64, max int) *Random {
	return &Random{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), max: max}
}

// Next implements ChunkPlan.
func (r *Random) Next() int { return 1 + r.r.IntN(r.max) }
