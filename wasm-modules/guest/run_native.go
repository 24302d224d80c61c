//go:build !wasip1

package guest

// defaultCaller of a native build: there is no host (see Invoke).
var defaultCaller Caller = noHost{}
