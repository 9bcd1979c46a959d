// Scenarios for the official OpenAI, Anthropic and Gemini Node SDKs, run
// against whatever the environment points them at (normally `tollgate dev`).
//
// The clients are configured by the environment ONLY, exactly like user code
// under `tollgate dev -- node app.js`:
//
//   new OpenAI()          OPENAI_API_KEY, OPENAI_BASE_URL
//   new Anthropic()       ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
//   new GoogleGenAI({})   GEMINI_API_KEY (GOOGLE_API_KEY wins when set),
//                         GOOGLE_GEMINI_BASE_URL. @google/genai 2.32.0 reads
//                         both in its constructor (getApiKeyFromEnv, and
//                         getBaseUrl(..., getEnv('GOOGLE_GEMINI_BASE_URL')) in
//                         the Node build), so no apiKey argument is needed.
//
// Every scenario prints one JSON line on stdout:
//
//   {provider, scenario, ok, model, marker, requestId, usage, toolName,
//    errorClass, status, errorType, code, chunks, emptyChoiceChunks, ...}
//
// requestId is the gateway's x-tollgate-request-id response header where the
// SDK exposes headers (openai/anthropic .withResponse() and error.headers,
// Gemini sdkHttpResponse.headers); usage is the usage object as the SDK parsed
// it. Each prompt carries a unique marker "<<scenario:PROVIDER/NAME>>" so a
// test can find the request in the mock providers' ground truth.
//
// Scenarios run one after another (never concurrently), so the order of the
// upstream requests is the order of the lines. The script exits 0 when it
// ran every scenario, whatever their outcome: judging them is the test's job.
// It never prints a key: every line is scrubbed of the key variables' values.
//
// Usage: node scenarios.mjs [PROVIDER/SCENARIO ...]   (default: all)

import OpenAI from 'openai';
import { VERSION as openaiVersion } from 'openai/version';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';

const SECRET_VARS = ['OPENAI_API_KEY', 'ANTHROPIC_API_KEY', 'ANTHROPIC_AUTH_TOKEN', 'GEMINI_API_KEY', 'GOOGLE_API_KEY', 'AI_GATEWAY_KEY'];
const secrets = SECRET_VARS.map((k) => process.env[k]).filter((v) => v && v.length >= 8);

function scrub(s) {
  for (const v of secrets) s = s.split(v).join('[redacted]');
  return s;
}

// Every line names the openai package that ran it: test/sdknode runs these
// scenarios against more than one install (test/node, test/node-latest).
function emit(obj) {
  process.stdout.write(scrub(JSON.stringify({ ...obj, openaiVersion })) + '\n');
}

const REQUEST_ID = 'x-tollgate-request-id';

// headerOf reads a header from a fetch Headers object or a plain object.
function headerOf(h, name) {
  if (!h) return undefined;
  if (typeof h.get === 'function') return h.get(name) ?? undefined;
  for (const [k, v] of Object.entries(h)) if (k.toLowerCase() === name) return v;
  return undefined;
}

function marker(provider, scenario) {
  return `<<scenario:${provider}/${scenario}>>`;
}

// describeError turns an SDK error into the fields of a scenario line.
function describeError(err) {
  const out = {
    errorClass: err?.constructor?.name ?? typeof err,
    status: err?.status,
  };
  const rid = headerOf(err?.headers, REQUEST_ID);
  if (rid) out.requestId = rid;
  // openai: err.type, err.code; anthropic: err.type or err.error.error.type.
  if (err?.type) out.errorType = err.type;
  else if (err?.error?.error?.type) out.errorType = err.error.error.type;
  if (err?.code) out.code = err.code;
  if (err?.name === 'ApiError' && typeof err.message === 'string') {
    // @google/genai: message is the response body text.
    try {
      const body = JSON.parse(err.message);
      if (body?.error?.status) out.errorType = body.error.status;
      if (body?.error?.code) out.code = body.error.code;
    } catch {
      /* not JSON */
    }
  }
  if (typeof err?.message === 'string') out.message = err.message.slice(0, 300);
  return out;
}

// expectFailure runs a call that must fail (an upstream error about the
// operator's account, which the gateway answers itself) and reports the
// error the SDK raised. The model is reported so that the ledger record of
// an error without headers can be found.
async function expectFailure(model, m, call) {
  try {
    await call();
  } catch (err) {
    return { ok: false, model, marker: m, ...describeError(err) };
  }
  return { model, marker: m, unexpectedSuccess: true };
}

// ---------------------------------------------------------------- OpenAI

const weatherFunction = {
  name: 'get_weather',
  description: 'Get the current weather in a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string', description: 'City name' } },
    required: ['city'],
  },
};

// eventSchema is a strict structured-output schema.
const eventSchema = {
  type: 'object',
  properties: {
    title: { type: 'string' },
    attendees: { type: 'integer', minimum: 2 },
    kind: { type: 'string', enum: ['meeting', 'party'] },
  },
  required: ['title', 'attendees', 'kind'],
  additionalProperties: false,
};

function openaiScenarios(openai) {
  const P = 'openai';
  const model = 'gpt-4o-mini';
  return {
    async plain() {
      const m = marker(P, 'plain');
      const { data, response } = await openai.chat.completions
        .create({ model, messages: [{ role: 'user', content: `Tell me a joke. ${m}` }] })
        .withResponse();
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        text: data.choices[0]?.message?.content,
      };
    },

    // No stream_options: the SDK user asked for no usage, so the stream must
    // look like OpenAI's: no chunk with empty choices, no usage.
    async stream() {
      const m = marker(P, 'stream');
      const { data: stream, response } = await openai.chat.completions
        .create({ model, stream: true, messages: [{ role: 'user', content: `Tell me a joke. ${m}` }] })
        .withResponse();
      return { model, marker: m, requestId: headerOf(response.headers, REQUEST_ID), ...(await drainChat(stream)) };
    },

    async stream_usage() {
      const m = marker(P, 'stream_usage');
      const { data: stream, response } = await openai.chat.completions
        .create({
          model, stream: true, stream_options: { include_usage: true },
          messages: [{ role: 'user', content: `Tell me a joke. ${m}` }],
        })
        .withResponse();
      return { model, marker: m, requestId: headerOf(response.headers, REQUEST_ID), ...(await drainChat(stream)) };
    },

    async tool() {
      const m = marker(P, 'tool');
      const { data, response } = await openai.chat.completions
        .create({
          model,
          messages: [{ role: 'user', content: `What is the weather in Paris? [[mock tool]] ${m}` }],
          tools: [{ type: 'function', function: weatherFunction }],
        })
        .withResponse();
      const call = data.choices[0]?.message?.tool_calls?.[0];
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        toolName: call?.function?.name,
        toolArgs: call?.function?.arguments,
        finishReason: data.choices[0]?.finish_reason,
      };
    },

    // The JS SDK asks for encoding_format base64 and decodes it itself.
    async embeddings() {
      const m = marker(P, 'embeddings');
      const emModel = 'text-embedding-3-small';
      const { data, response } = await openai.embeddings
        .create({ model: emModel, input: `The quick brown fox ${m}` })
        .withResponse();
      const vec = data.data[0]?.embedding ?? [];
      return {
        model: emModel, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        ...vectorStats(vec),
      };
    },

    async unknown_model() {
      const m = marker(P, 'unknown_model');
      const { response } = await openai.chat.completions
        .create({ model: 'gpt-9', messages: [{ role: 'user', content: `Hi ${m}` }] })
        .withResponse();
      return { model: 'gpt-9', marker: m, requestId: headerOf(response.headers, REQUEST_ID), unexpectedSuccess: true };
    },

    async responses() {
      const m = marker(P, 'responses');
      const { data, response } = await openai.responses
        .create({ model, input: `Tell me a joke. ${m}` })
        .withResponse();
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        text: data.output_text,
      };
    },

    // Structured outputs through the SDK's parse helpers, which JSON.parse
    // the model's content: the answer must be JSON that fits the schema.
    async parse() {
      const m = marker(P, 'parse');
      const { data, response } = await openai.chat.completions
        .parse({
          model,
          messages: [{ role: 'user', content: `Extract the event. ${m}` }],
          response_format: { type: 'json_schema', json_schema: { name: 'event', schema: eventSchema, strict: true } },
        })
        .withResponse();
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        text: JSON.stringify(data.choices[0]?.message?.parsed),
      };
    },

    // The chat stream helper accumulates the deltas; the app parses the
    // final content (the helper parses only zod formats itself).
    async stream_parse() {
      const m = marker(P, 'stream_parse');
      let requestId;
      // the helper exposes no response: read the header in fetch
      const client = openai.withOptions({
        fetch: async (url, init) => {
          const res = await fetch(url, init);
          requestId = headerOf(res.headers, REQUEST_ID);
          return res;
        },
      });
      const stream = client.chat.completions.stream({
        model, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: `Extract the event. ${m}` }],
        response_format: { type: 'json_schema', json_schema: { name: 'event', schema: eventSchema, strict: true } },
      });
      let chunks = 0;
      stream.on('chunk', () => { chunks++; });
      const final = await stream.finalChatCompletion();
      return {
        model, marker: m, requestId, chunks,
        usage: final.usage,
        text: JSON.stringify(JSON.parse(final.choices[0]?.message?.content)),
      };
    },

    async responses_parse() {
      const m = marker(P, 'responses_parse');
      const { data, response } = await openai.responses
        .parse({
          model, input: `Extract the event. ${m}`,
          text: { format: { type: 'json_schema', name: 'event', schema: eventSchema, strict: true } },
        })
        .withResponse();
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        text: JSON.stringify(data.output_parsed),
      };
    },

    async responses_stream() {
      const m = marker(P, 'responses_stream');
      const { data: stream, response } = await openai.responses
        .create({ model, input: `Tell me a joke. ${m}`, stream: true })
        .withResponse();
      let chunks = 0;
      let usage;
      let text = '';
      const types = new Set();
      for await (const ev of stream) {
        chunks++;
        types.add(ev.type);
        if (ev.type === 'response.output_text.delta') text += ev.delta;
        if (ev.type === 'response.completed') usage = ev.response?.usage;
      }
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage, chunks, text, completed: types.has('response.completed'),
      };
    },

    // The operator's provider account out of quota: OpenAI's 429 with
    // x-should-retry: false (one attempt).
    async account_quota() {
      const m = marker(P, 'account_quota');
      return expectFailure('gpt-4.1-nano', m, () => openai.chat.completions.create({
        model: 'gpt-4.1-nano', messages: [{ role: 'user', content: `Hi ${m} [[mock error=429 should_retry=false]]` }],
      }));
    },

    // A Responses stream failing on the organization's rate limit.
    async account_stream() {
      const m = marker(P, 'account_stream');
      return expectFailure('gpt-4.1-mini', m, async () => {
        const stream = await openai.responses.create({ model: 'gpt-4.1-mini', input: `Hi ${m} [[mock midstream_error=429]]`, stream: true });
        for await (const ev of stream) void ev;
      });
    },
  };
}

async function drainChat(stream) {
  let chunks = 0;
  let emptyChoiceChunks = 0;
  let usageKeyChunks = 0; // chunks that have a "usage" member at all (null or not)
  let usage;
  let text = '';
  let finishReason;
  for await (const chunk of stream) {
    chunks++;
    if (!Array.isArray(chunk.choices) || chunk.choices.length === 0) emptyChoiceChunks++;
    if (Object.hasOwn(chunk, 'usage')) usageKeyChunks++;
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices?.[0];
    if (c?.delta?.content) text += c.delta.content;
    if (c?.finish_reason) finishReason = c.finish_reason;
  }
  return { chunks, emptyChoiceChunks, usageKeyChunks, usage, text, finishReason };
}

function vectorStats(vec) {
  let norm = 0;
  let finite = true;
  for (const x of vec) {
    if (typeof x !== 'number' || !Number.isFinite(x)) finite = false;
    else norm += x * x;
  }
  return { dims: vec.length, finite, norm: Math.sqrt(norm) };
}

// ------------------------------------------------------------- Anthropic

function anthropicScenarios(anthropic) {
  const P = 'anthropic';
  const model = 'claude-haiku-4-5'; // not on the SDK's deprecated list (no console warning)
  return {
    async plain() {
      const m = marker(P, 'plain');
      const { data, response } = await anthropic.messages
        .create({ model, max_tokens: 256, messages: [{ role: 'user', content: `Tell me a joke. ${m}` }] })
        .withResponse();
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        text: data.content.filter((b) => b.type === 'text').map((b) => b.text).join(''),
      };
    },

    async stream() {
      const m = marker(P, 'stream');
      const { data: stream, response } = await anthropic.messages
        .create({ model, max_tokens: 256, stream: true, messages: [{ role: 'user', content: `Tell me a joke. ${m}` }] })
        .withResponse();
      let chunks = 0;
      let usage;
      let text = '';
      let stopped = false;
      for await (const ev of stream) {
        chunks++;
        if (ev.type === 'message_start') usage = { ...ev.message.usage };
        // message_delta usage is cumulative: overwrite, never add.
        if (ev.type === 'message_delta' && ev.usage) {
          for (const [k, v] of Object.entries(ev.usage)) if (v !== null && v !== undefined) usage[k] = v;
        }
        if (ev.type === 'content_block_delta' && ev.delta?.type === 'text_delta') text += ev.delta.text;
        if (ev.type === 'message_stop') stopped = true;
      }
      return { model, marker: m, requestId: headerOf(response.headers, REQUEST_ID), usage, chunks, text, stopped };
    },

    async tool() {
      const m = marker(P, 'tool');
      const { data, response } = await anthropic.messages
        .create({
          model, max_tokens: 256,
          messages: [{ role: 'user', content: `What is the weather in Paris? [[mock tool]] ${m}` }],
          tools: [{ name: weatherFunction.name, description: weatherFunction.description, input_schema: weatherFunction.parameters }],
        })
        .withResponse();
      const call = data.content.find((b) => b.type === 'tool_use');
      return {
        model, marker: m,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: data.usage,
        toolName: call?.name,
        toolArgs: call ? JSON.stringify(call.input) : undefined,
        stopReason: data.stop_reason,
      };
    },

    // The SDK's stream helper with extended thinking and a tool: the final
    // message holds the signed thinking block, then the tool use.
    async thinking_stream() {
      const m = marker(P, 'thinking_stream');
      const stream = anthropic.messages.stream({
        model, max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 },
        messages: [{ role: 'user', content: `What is the weather in Paris? [[mock tool]] ${m}` }],
        tools: [{ name: weatherFunction.name, description: weatherFunction.description, input_schema: weatherFunction.parameters }],
      });
      const { response } = await stream.withResponse();
      let chunks = 0;
      stream.on('streamEvent', () => { chunks++; });
      const msg = await stream.finalMessage();
      const thinking = msg.content[0];
      const call = msg.content.find((b) => b.type === 'tool_use');
      return {
        model, marker: m, chunks,
        requestId: headerOf(response.headers, REQUEST_ID),
        usage: msg.usage,
        text: thinking?.type === 'thinking' && thinking.signature ? thinking.thinking : '',
        toolName: call?.name,
        toolArgs: call ? JSON.stringify(call.input) : undefined,
        stopReason: msg.stop_reason,
      };
    },

    async unknown_model() {
      const m = marker(P, 'unknown_model');
      const { response } = await anthropic.messages
        .create({ model: 'claude-9', max_tokens: 64, messages: [{ role: 'user', content: `Hi ${m}` }] })
        .withResponse();
      return { model: 'claude-9', marker: m, requestId: headerOf(response.headers, REQUEST_ID), unexpectedSuccess: true };
    },

    async count_tokens() {
      const m = marker(P, 'count_tokens');
      const { data, response } = await anthropic.messages
        .countTokens({ model, messages: [{ role: 'user', content: `How many tokens is this? ${m}` }] })
        .withResponse();
      return { model, marker: m, requestId: headerOf(response.headers, REQUEST_ID), inputTokens: data.input_tokens };
    },

    // The operator's Anthropic account out of credit (402 billing_error).
    async account_credit() {
      const m = marker(P, 'account_credit');
      const accountModel = 'claude-3-haiku-20240307';
      return expectFailure(accountModel, m, () => anthropic.messages.create({
        model: accountModel, max_tokens: 64, messages: [{ role: 'user', content: `Hi ${m} [[mock error=402]]` }],
      }));
    },
  };
}

// ---------------------------------------------------------------- Gemini

function geminiScenarios(ai) {
  const P = 'gemini';
  const model = 'gemini-2.5-flash';
  return {
    async plain() {
      const m = marker(P, 'plain');
      const res = await ai.models.generateContent({ model, contents: `Tell me a joke. ${m}` });
      return {
        model, marker: m,
        requestId: headerOf(res.sdkHttpResponse?.headers, REQUEST_ID),
        usage: res.usageMetadata,
        text: res.text,
      };
    },

    async stream() {
      const m = marker(P, 'stream');
      const stream = await ai.models.generateContentStream({ model, contents: `Tell me a joke. ${m}` });
      let chunks = 0;
      let usage;
      let text = '';
      let requestId;
      for await (const chunk of stream) {
        chunks++;
        // usageMetadata is a running total: keep the last one.
        if (chunk.usageMetadata) usage = chunk.usageMetadata;
        text += chunk.text ?? '';
        requestId ??= headerOf(chunk.sdkHttpResponse?.headers, REQUEST_ID);
      }
      return { model, marker: m, requestId, usage, chunks, text };
    },

    async tool() {
      const m = marker(P, 'tool');
      const res = await ai.models.generateContent({
        model,
        contents: `What is the weather in Paris? [[mock tool]] ${m}`,
        config: { tools: [{ functionDeclarations: [weatherFunction] }] },
      });
      const call = res.functionCalls?.[0];
      return {
        model, marker: m,
        requestId: headerOf(res.sdkHttpResponse?.headers, REQUEST_ID),
        usage: res.usageMetadata,
        toolName: call?.name,
        toolArgs: call ? JSON.stringify(call.args) : undefined,
      };
    },

    async json() {
      const m = marker(P, 'json');
      const res = await ai.models.generateContent({
        model, contents: `Extract the event. ${m}`,
        config: { responseMimeType: 'application/json', responseJsonSchema: eventSchema },
      });
      return {
        model, marker: m,
        requestId: headerOf(res.sdkHttpResponse?.headers, REQUEST_ID),
        usage: res.usageMetadata,
        text: JSON.stringify(JSON.parse(res.text)),
      };
    },

    // Both Gemini SDKs send embedContent as :batchEmbedContents; the API
    // reports no usage for embeddings.
    async embeddings() {
      const m = marker(P, 'embeddings');
      const emModel = 'gemini-embedding-001';
      const res = await ai.models.embedContent({ model: emModel, contents: `The quick brown fox ${m}` });
      return {
        model: emModel, marker: m,
        requestId: headerOf(res.sdkHttpResponse?.headers, REQUEST_ID),
        usage: res.usageMetadata ?? res.metadata,
        embeddings: res.embeddings?.length ?? 0,
        ...vectorStats(res.embeddings?.[0]?.values ?? []),
      };
    },

    async unknown_model() {
      const m = marker(P, 'unknown_model');
      const res = await ai.models.generateContent({ model: 'gemini-9', contents: `Hi ${m}` });
      return { model: 'gemini-9', marker: m, requestId: headerOf(res.sdkHttpResponse?.headers, REQUEST_ID), unexpectedSuccess: true };
    },

    // Google's 403 for a suspended key, which quotes the operator's key.
    async account_suspended() {
      const m = marker(P, 'account_suspended');
      const accountModel = 'gemini-2.0-flash';
      return expectFailure(accountModel, m, () => ai.models.generateContent({ model: accountModel, contents: `Hi ${m} [[mock error=403]]` }));
    },
  };
}

// ------------------------------------------------------------------ main

const UNKNOWN_MODEL = { openai: 'gpt-9', anthropic: 'claude-9', gemini: 'gemini-9' };

async function main() {
  const suites = {
    openai: openaiScenarios(new OpenAI()),
    anthropic: anthropicScenarios(new Anthropic()),
    gemini: geminiScenarios(new GoogleGenAI({})),
  };
  const only = new Set(process.argv.slice(2));
  for (const [provider, scenarios] of Object.entries(suites)) {
    for (const [scenario, run] of Object.entries(scenarios)) {
      if (only.size > 0 && !only.has(`${provider}/${scenario}`) && !only.has(provider)) continue;
      const line = { provider, scenario };
      try {
        Object.assign(line, { ok: true }, await run());
      } catch (err) {
        Object.assign(line, { ok: false, marker: marker(provider, scenario) }, describeError(err));
        if (scenario === 'unknown_model') line.model = UNKNOWN_MODEL[provider];
      }
      emit(line);
    }
  }
}

main().catch((err) => {
  process.stderr.write(scrub(`scenarios.mjs: ${err?.stack ?? err}`) + '\n');
  process.exit(1);
});
