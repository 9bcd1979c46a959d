package sse_test

import (
	"fmt"

	"github.com/tollgate-dev/tollgate/pkg/sse"
)

func ExampleDecoder() {
	// Chunks as the network might deliver them: an event split mid-line,
	// a keep-alive comment, a CR LF split across chunks.
	chunks := []string{
		"event: message_start\ndata: {\"usage\":",
		"{\"input_tokens\":21}}\n\n: keep-alive\n\n",
		"event: message_stop\r\ndata: {}\r",
		"\n\r\n",
	}
	var d sse.Decoder
	emit := func(ev sse.Event) error {
		fmt.Printf("%s [%d,%d) %s\n", ev.Name, ev.Start, ev.End, ev.Data)
		return nil
	}
	for _, c := range chunks {
		if err := d.Feed([]byte(c), emit); err != nil {
			panic(err)
		}
	}
	if err := d.Close(emit); err != nil {
		panic(err)
	}
	// Output:
	// message_start [0,58) {"usage":{"input_tokens":21}}
	// message_stop [58,105) {}
}
