// Package services starts real servers from the machine's binaries for
// tests: each test gets its own server on a free loopback port, with its
// data in the test's temporary directory, stopped when the test ends.
// .ci/run installs the binaries on a fresh machine.
package services
