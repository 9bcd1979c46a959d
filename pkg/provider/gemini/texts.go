package gemini

import (
	"encoding/json"

	"github.com/tollgate-dev/tollgate/pkg/gateway"
)

type content struct {
	Parts []struct {
		Text string `json:"text"`
	} `json:"parts"`
}

// InputTexts implements gateway.InputTexter: Gemini embedding responses
// carry no usageMetadata, so their input is billed from the text parts the
// model embeds (the gateway counts them with its tokenizer).
func (*Provider) InputTexts(r gateway.Route, in gateway.Inspection) ([]string, bool) {
	var contents []content
	switch r.Operation {
	case opEmbed:
		var body struct {
			Content content `json:"content"`
		}
		if json.Unmarshal(in.Body.Doc, &body) != nil {
			return nil, false
		}
		contents = append(contents, body.Content)
	case opBatchEmbed:
		var body struct {
			Requests []struct {
				Content content `json:"content"`
			} `json:"requests"`
		}
		if json.Unmarshal(in.Body.Doc, &body) != nil {
			return nil, false
		}
		for _, req := range body.Requests {
			contents = append(contents, req.Content)
		}
	default:
		return nil, false
	}
	var texts []string
	for _, c := range contents {
		for _, p := range c.Parts {
			texts = append(texts, p.Text)
		}
	}
	return texts, true
}
