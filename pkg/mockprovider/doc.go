// Package mockprovider serves deterministic look-alikes of the OpenAI,
// Anthropic and Gemini (Developer API) HTTP APIs, close enough to the real
// wire formats that the official SDKs cannot tell the difference (see
// sdk_test.go). Each mock records a ground-truth log (Server.Served) of what
// it answered and what the provider would bill, in the gateway's disjoint
// usage terms (pkg/usage).
//
// # Servers
//
//	NewOpenAI(opts)    POST /v1/chat/completions, /v1/responses,
//	                   /v1/responses/input_tokens, /v1/embeddings;
//	                   GET /v1/models, /v1/models/{id}
//	NewAnthropic(opts) POST /v1/messages, /v1/messages/count_tokens;
//	                   GET /v1/models, /v1/models/{id}
//	NewGemini(opts)    under /v1beta, /v1 and /v1alpha:
//	                   POST models/{m}:generateContent, :streamGenerateContent
//	                   (?alt=sse or $alt=sse: SSE with \r\n\r\n separators; otherwise a
//	                   streamed JSON array "[{..}\n,\r\n{..}\n]"),
//	                   :countTokens, :embedContent, :batchEmbedContents;
//	                   GET models, models/{m}
//	NewMux(opts)       all three under /openai, /anthropic, /gemini (prefix
//	                   stripped); NewServers gives access to each *Server.
//
// Any model name is accepted. Validation the real APIs do and a gateway can
// trip over is reproduced: OpenAI rejects stream_options without stream
// (400), Anthropic requires the anthropic-version header (400; see
// Options.AllowMissingAnthropicVersion) and max_tokens, malformed JSON is a
// 400 in each provider's error shape. Options.APIKey optionally enforces a
// key in each provider's auth style.
//
// # Determinism
//
// The same request (method, path, query, body) gives the same response
// bytes: ids are derived from a SHA-256 of the request, created timestamps
// are fixed (Options.Created, default 2026-01-01), the default reply is a
// dad joke chosen by the hash, embeddings are hash-derived unit vectors.
//
// # Answers in the shape asked for
//
// JSON output: a request for structured outputs (OpenAI chat
// response_format json_schema, Responses text.format json_schema,
// Anthropic output_config.format (or the beta output_format), Gemini
// generationConfig.responseMimeType "application/json" with
// responseJsonSchema or responseSchema) is answered with compact JSON that
// fits the schema, so SDK parse helpers and the app's own unmarshalling
// work: required properties (all when none are required) with strings
// "example" (date-time, date, time, email, uri, uuid formats get a valid
// value), numbers 1 (raised to minimum, exclusiveMinimum+1, capped at
// maximum), booleans true, enums and consts their first value, arrays
// minItems copies of their item, nullable and anyOf/oneOf/allOf the first
// non-null alternative, local $ref ($defs, definitions) followed. JSON mode
// without a schema (OpenAI json_object, Gemini application/json alone)
// answers {"answer":"<the dad joke>"}. A reply= directive still wins. When
// no chunks= is given a JSON answer streams in one piece per 16 bytes or so.
//
// OpenAI chat n>1 (capped at 8): n choices with the same answer (a tool
// call gets its own call id per choice), billed n times over; a stream
// sends the choices one after the other, each ending with its
// finish_reason.
//
// OpenAI chat logprobs=true: each text choice carries logprobs.content,
// one token per word piece of the reply (the stream's content chunks each
// carry their own piece's), logprob -0.01 to -0.05, the token's UTF-8
// bytes, and top_logprobs entries led by the token itself; tool calls
// carry none.
//
// Extended thinking: an Anthropic request with thinking type enabled or
// adaptive gets a thinking block first (a fixed sentence and a
// deterministic base64 signature; streamed as thinking_delta pieces and one
// signature_delta), then the text or tool_use block at index 1. A Gemini
// request with generationConfig.thinkingConfig whose thinkingBudget is not
// 0 bills the thoughts (thoughtsTokenCount); with includeThoughts it also
// sends them as a first part marked "thought": true (streamed as its own
// element). The thought's words are reasoning, added to the output unless
// the usage directive gives reasoning= or output=.
//
// Default usage: the request "text" is every JSON string value in the body
// except the values of "model" keys. Input = ceil(bytes(text)/4) + overhead
// (OpenAI 7, Anthropic 8, Gemini 1); nothing is cached; output = the number
// of whitespace-separated words in the reply (times n for OpenAI n>1, plus
// the thinking's words, see above), or for a tool call
// ceil((len(name)+len(arguments))/4)+5. Embeddings: ceil(bytes/4) per input
// (at least 1; token-array inputs count their length). count_tokens and
// countTokens report the input total but bill nothing (Usage zero).
//
// # Directives
//
// The gateway builds upstream headers itself, so tests steer the mock with
// tokens in the prompt text (any string in the body). Several tokens may
// be given; for a repeated setting the last one wins.
//
//	[[mock error=429]]            answer with that status (400-599) in the
//	                              provider's native error shape; 429, 503 and
//	                              529 carry retry-after: 1. Modifiers in the
//	                              same token: retry_after=N (seconds),
//	                              should_retry=false (x-should-retry: false).
//	                              Anthropic 529 is overloaded_error, Gemini
//	                              429 carries a RetryInfo detail. Like the
//	                              real APIs, the bodies speak of the caller's
//	                              account: OpenAI 429 names an organization,
//	                              Gemini 403 quotes the key it was called
//	                              with (CONSUMER_SUSPENDED). reason=R adds a
//	                              Gemini ErrorInfo detail with that reason;
//	                              error=400 reason=API_KEY_INVALID is
//	                              Google's answer to a bad key.
//	[[mock reply=some words]]     reply text: everything after "reply=" up to
//	                              "]]" (surrounding quotes are removed).
//	[[mock tool]]                 answer with a call of the FIRST declared
//	                              function tool, arguments built from its
//	                              schema (required properties, or all: strings
//	                              "example", numbers 1, booleans true, enums
//	                              their first value). Ignored when no function
//	                              tool is declared, or when the conversation
//	                              ends with a tool result (OpenAI role "tool",
//	                              Responses function_call_output, Anthropic
//	                              tool_result block, Gemini functionResponse),
//	                              so that SDK tool loops terminate.
//	[[mock parallel_tools]]       like tool, but call EVERY declared function
//	                              tool, in order, in one answer (OpenAI chat
//	                              tool_calls with indexes 0..k-1, Responses
//	                              one function_call item each, Anthropic one
//	                              tool_use block each, Gemini one
//	                              functionCall part each), each with its own
//	                              id; output is the sum of the calls'.
//	[[mock chunks=N]]             stream the reply in N content chunks
//	                              (default: one per word).
//	[[mock midstream_error]]      start the stream, send about half of the
//	                              reply, then the provider's in-stream error:
//	                              OpenAI chat data: {"error":{...}} and no
//	                              [DONE]; Responses event: error with a nested
//	                              error object; Anthropic event: error
//	                              overloaded_error; Gemini data/element
//	                              {"error":{"code":503,...,"status":"UNAVAILABLE"}}.
//	                              midstream_error=429 sends the account's
//	                              rate limit instead, as the APIs word it
//	                              (OpenAI rate_limit_exceeded naming
//	                              org-mock, Anthropic rate_limit_error
//	                              naming the organization, Gemini 429
//	                              RESOURCE_EXHAUSTED naming the consumer).
//	[[mock no_usage]]             send no usage at all: OpenAI chat omits the
//	                              usage chunk even with include_usage (and the
//	                              non-stream usage field), Responses sends
//	                              "usage":null, Anthropic omits usage in
//	                              message_start, message_delta and non-stream
//	                              messages, Gemini omits usageMetadata.
//	[[mock usage input=N cached=N cache_write=N output=N reasoning=N tool_prompt=N]]
//	                              exact counts (any subset; the word "usage"
//	                              is optional; also applies to count_tokens,
//	                              and input= to embeddings).
//
// # Usage directive mapping
//
// The numbers are in the gateway's terms, so that Served.Usage equals them:
// Usage.Input = input (+ tool_prompt on Gemini), CachedInput = cached,
// CacheWrite = cache_write (Anthropic only), Output = output, Reasoning =
// reasoning. Omitted numbers keep their computed default (cached,
// cache_write, reasoning, tool_prompt default to 0); if reasoning is given
// without output, output = computed visible output + reasoning; output is
// raised to reasoning if smaller. On the wire:
//
//	OpenAI chat:  prompt_tokens = input+cached,
//	              prompt_tokens_details.cached_tokens = cached,
//	              completion_tokens = output,
//	              completion_tokens_details.reasoning_tokens = reasoning,
//	              total_tokens = prompt_tokens+completion_tokens.
//	              cache_write and tool_prompt are ignored.
//	OpenAI responses: input_tokens = input+cached,
//	              input_tokens_details.cached_tokens = cached,
//	              output_tokens = output, output_tokens_details.reasoning_tokens
//	              = reasoning, total_tokens = input_tokens+output_tokens.
//	OpenAI embeddings: prompt_tokens = total_tokens = input.
//	Anthropic:    input_tokens = input, cache_read_input_tokens = cached,
//	              cache_creation_input_tokens = cache_write =
//	              cache_creation.ephemeral_5m_input_tokens
//	              (ephemeral_1h_input_tokens = 0), output_tokens = output,
//	              output_tokens_details.thinking_tokens = reasoning.
//	              Streams: message_start carries the input side with
//	              output_tokens 1; message_delta carries the cumulative
//	              input_tokens, cache_*_input_tokens, output_tokens and
//	              output_tokens_details. tool_prompt is ignored.
//	Gemini:       promptTokenCount = input+cached, cachedContentTokenCount =
//	              cached, candidatesTokenCount = output-reasoning,
//	              thoughtsTokenCount = reasoning, toolUsePromptTokenCount =
//	              tool_prompt, totalTokenCount = prompt+candidates+toolUse+
//	              thoughts. Zero counters other than promptTokenCount and
//	              totalTokenCount are omitted, as the real API does. Every
//	              stream chunk carries a running total (candidates so far =
//	              words sent, capped; the last chunk the final numbers).
//	              cache_write is ignored. Embeddings send no usage
//	              (NoUsageOnWire); Usage.Input is still the estimate.
//
// # Ground truth
//
// Served.Usage is what the provider bills. It is recorded even when the
// wire carries no usage (NoUsageOnWire): OpenAI chat streams without
// stream_options.include_usage (OpenAI bills them anyway), no_usage, Gemini
// embeddings. For a mid-stream error it is the input side plus reasoning
// plus the words sent before the error (capped at the full output). Native
// is the last usage object written (compacted), nil when none was.
//
// # Streaming
//
// Every SSE event (or JSON array element) is flushed on its own and
// Options.ChunkDelay separates them; a cancelled request context stops the
// handler at the next wait and the record gets Aborted. The Served record
// is appended before the last chunk (or the body of a non-streamed answer)
// is written, so a client that has read the whole response always finds it.
package mockprovider
