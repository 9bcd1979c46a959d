// Package sdknode runs the official OpenAI, Anthropic and Gemini Node SDKs
// (test/node, and their newest majors on Node 22 from test/node-latest) and
// the dad-jokes example (examples/dad-jokes) through the real `tollgate dev`
// binary, and checks what the SDKs saw against the usage ledger and the mock
// providers' ground truth.
//
// The tests need node (v20 or later) and the packages installed with
// `make node-deps` (npm ci in test/node, test/node-latest and
// examples/dad-jokes). Without them they fail, they never skip.
package sdknode
