package sse

import (
	"bytes"
	"slices"
	"testing"
)

// reference decodes a whole stream the slow, obvious way, straight from the
// rules in the package documentation, to check Decoder against.
func reference(in []byte, max int) []event {
	var (
		evs         []event
		start, pos  int
		data        []byte
		hasData     bool
		trunc       bool
		name, id    string
		appendLimit = func(b []byte) {
			if len(data)+len(b) > max {
				b = b[:max-len(data)]
				trunc = true
			}
			data = append(data, b...)
		}
	)
	dispatch := func(end int) {
		if hasData {
			evs = append(evs, event{name, id, string(data), int64(start), int64(end), trunc})
			start = end
		}
		data, hasData, trunc, name = nil, false, false, ""
	}
	if bytes.HasPrefix(in, []byte(bomStr)) {
		pos = len(bomStr)
	}
	for pos < len(in) {
		end := pos
		for end < len(in) && in[end] != '\r' && in[end] != '\n' {
			end++
		}
		line := in[pos:end]
		terminated := end < len(in)
		pos = end
		if terminated {
			pos++
			if in[end] == '\r' && pos < len(in) && in[pos] == '\n' {
				pos++
			}
		}
		if len(line) == 0 {
			dispatch(pos)
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "data":
			if hasData {
				appendLimit([]byte("\n"))
			}
			hasData = true
			appendLimit(value)
		case "event":
			name = string(value[:min(len(value), max)])
		case "id":
			if v := value[:min(len(value), max)]; !bytes.Contains(v, []byte{0}) {
				id = string(v)
			}
		}
	}
	dispatch(len(in))
	return evs
}

func FuzzDecoder(f *testing.F) {
	for _, tc := range streamCases {
		f.Add(tc.input(), uint64(1), uint16(0))
	}
	for _, rec := range recorded {
		f.Add(readTestdata(f, rec.file), uint64(2), uint16(0))
	}
	f.Add([]byte("data: abcdef\ndata: gh\n\n"), uint64(3), uint16(5))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, max uint16) {
		limit := int(max)
		if limit == 0 {
			limit = DefaultMaxEventSize
		}
		want := reference(in, limit)
		whole := decode(t, int(max), [][]byte{in})
		if !slices.Equal(whole, want) {
			t.Fatalf("whole stream:\n got %v\nwant %v", whole, want)
		}
		checkPartition(t, in, whole)
		chunkings := [][][]byte{randomChunks(in, seed)}
		if len(in) <= 4<<10 { // byte by byte is slow for the big seeds
			chunkings = append(chunkings, sized(in, 1))
		}
		for _, chunks := range chunkings {
			if got := decode(t, int(max), chunks); !slices.Equal(got, want) {
				t.Fatalf("chunked:\n got %v\nwant %v", got, want)
			}
		}
	})
}
