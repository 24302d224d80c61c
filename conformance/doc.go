// Package conformance holds black-box suites that start a real wardend on
// temporary sockets and check it over those sockets, as its clients would.
// Everything is in the _test files; run it with `go test ./conformance/`.
package conformance
