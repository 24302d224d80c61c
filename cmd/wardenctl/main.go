// Command wardenctl is Warden's command-line tool: it checks configuration,
// evaluates policy offline, and manages capability tokens over broker.sock.
package main

import (
	"errors"
	"fmt"
	"os"
)

const usage = `usage: wardenctl <command> [flags]

commands:
  config check -c FILE                  print the merged configuration, or the error (exit 1)
  policy eval --input FILE [-c FILE]    evaluate the policy on an input document offline
  token mint --cap RES=OP[,OP] … [--ttl D] [--raw]
  token attenuate --token T --cap RES=OP[,OP] … [--ttl D] [--uid N] [--raw]
  token revoke (--id ID | --token T)
  token introspect --token T
  identity get [--device] [--token T]   the caller's identity (or the device's) from identityd
  identity sas [--ttl D] [--token T]    an IoT Hub SAS token for that identity, signed by keyd
  health                                ask wardend whether it is serving
  modules list [--json]                 the WASM modules: digest, signature, last job
  modules reload [--json]               re-read and re-verify the module files (exit 1 if one is refused)
  modules run NAME [--job JSON|FILE|-]  run one job of a module and print its outcome (exit 1 if it failed)
  check [-c FILE] [-timeout D] [tpm]    check the devices the configuration names (exit 1 on a problem)

Commands that talk to wardend find broker.sock from -c FILE (default
/etc/warden/config.toml), or take --socket PATH, and give up after
-timeout D (default 30s; identity and modules 2m). A token argument "-" or
"@FILE" reads the token from standard input or FILE.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "config":
		err = configCmd(rest)
	case "policy":
		err = policyCmd(rest)
	case "token":
		err = tokenCmd(rest)
	case "health":
		err = healthCmd(rest)
	case "identity":
		err = identityCmd(rest)
	case "check":
		err = checkCmd(rest)
	case "modules":
		err = modulesCmd(rest)
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	default:
		err = usageErr("unknown command %q", cmd)
	}
	if errors.Is(err, errCheckFailed) || errors.Is(err, errModulesRefused) {
		return 1
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wardenctl:", err)
		if _, ok := err.(usageError); ok {
			return 2
		}
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) + " (see wardenctl help)" }

func usageErr(format string, a ...any) error { return usageError(fmt.Sprintf(format, a...)) }
