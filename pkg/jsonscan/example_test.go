package jsonscan_test

import (
	"fmt"

	"github.com/tollgate-dev/tollgate/pkg/jsonscan"
)

func ExampleField() {
	event := []byte(`{"type":"response.completed","response":{"id":"resp_1","usage":{"input_tokens":36,"output_tokens":87}}}`)
	raw, ok := jsonscan.Field(event, "response", "usage", "output_tokens")
	n, _ := jsonscan.Int(raw)
	fmt.Println(string(raw), ok, n)
	// Output: 87 true 87
}

func ExampleArraySplitter() {
	// A Gemini stream without alt=sse, cut at arbitrary points.
	chunks := []string{
		`[{"candidates":[],"usageMetadata":{"totalTokenCount":8}}`,
		"\r\n,\r\n",
		`{"usageMetadata":{"totalTokenCount":20}}`,
		"]",
	}
	var s jsonscan.ArraySplitter
	emit := func(elem []byte) error {
		total, _ := jsonscan.Field(elem, "usageMetadata", "totalTokenCount")
		fmt.Println(string(total))
		return nil
	}
	for _, c := range chunks {
		if err := s.Feed([]byte(c), emit); err != nil {
			panic(err)
		}
	}
	fmt.Println(s.Close())
	// Output:
	// 8
	// 20
	// <nil>
}
