// A dad-joke API in one file: plain node:http and the official OpenAI SDK.
//
// There is no key and no URL in this file. `new OpenAI()` reads
// OPENAI_API_KEY and OPENAI_BASE_URL from the environment, and
// `tollgate dev -- node examples/dad-jokes/server.js` sets both to point at
// the local gateway, which meters every token. See README.md.
//
//   GET /api/joke  ->  {"joke": "...", "model": "gpt-4o-mini",
//                       "usage": {"input_tokens": N, "output_tokens": N, "total_tokens": N}}

import http from 'node:http';
import OpenAI from 'openai';

const MODEL = 'gpt-4o-mini';
const PORT = Number(process.env.PORT) || 3000;

const openai = new OpenAI();

async function tellJoke() {
  const completion = await openai.chat.completions.create({
    model: MODEL,
    messages: [
      { role: 'system', content: 'You are a dad-joke machine. Answer with one short, family-friendly dad joke and nothing else.' },
      { role: 'user', content: 'Tell me a dad joke.' },
    ],
  });
  const u = completion.usage ?? {};
  return {
    joke: completion.choices[0]?.message?.content?.trim() ?? '',
    model: MODEL,
    usage: {
      input_tokens: u.prompt_tokens ?? 0,
      output_tokens: u.completion_tokens ?? 0,
      total_tokens: u.total_tokens ?? 0,
    },
  };
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, 'http://localhost');
  if (pathname === '/api/joke' && req.method === 'GET') {
    try {
      send(res, 200, await tellJoke());
    } catch (err) {
      // An OpenAI.APIError carries the upstream status (e.g. 429); anything
      // else (no network, no key) is a 502 from our point of view.
      const status = err instanceof OpenAI.APIError && err.status ? err.status : 502;
      send(res, status, { error: err?.message ?? String(err) });
    }
    return;
  }
  if (pathname === '/' && req.method === 'GET') {
    send(res, 200, { try: 'GET /api/joke' });
    return;
  }
  send(res, 404, { error: `no route for ${req.method} ${pathname}` });
});

server.listen(PORT, () => {
  console.log(`dad-jokes listening on http://localhost:${PORT} (try GET /api/joke)`);
});

// `tollgate dev` forwards Ctrl-C (SIGINT) and SIGTERM to this process: stop
// cleanly so that it exits with code 0.
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
