package extproc

// BenchRequest is the one request both the in-process and the over-gRPC
// benchmarks replay.
var BenchRequest = benchRequest
