package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/client/identityd"
	"github.com/warden-iot/warden/client/keyd"
)

// identityCmd is `wardenctl identity get|sas`: the caller's identity from
// identityd.sock, and an IoT Hub SAS token signed by keyd on its key handle.
func identityCmd(args []string) error {
	if len(args) == 0 || (args[0] != "get" && args[0] != "sas") {
		return usageErr("identity: want 'identity get' or 'identity sas'")
	}
	sub := args[0]
	fs := flag.NewFlagSet("identity "+sub, flag.ContinueOnError)
	cfgPath := fs.String("c", defaultConfig, "configuration file (to find the sockets)")
	device := fs.Bool("device", false, "the device identity (I2) rather than the caller's own (I1)")
	token := fs.String("token", "", "a capability token to send, - for standard input, @FILE for a file")
	ttl := fs.Duration("ttl", time.Hour, "SAS token lifetime (sas)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for wardend (identityd may ask IoT Hub)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageErr("%v", err)
	}
	if sub == "sas" && *ttl < time.Second { // the expiry is in whole seconds
		return usageErr("identity sas: --ttl %s: want at least 1s", *ttl)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	tok, err := tokenArg(*token)
	if err != nil {
		return err
	}
	ids := identityd.New(cfg.SocketPath("identityd"))
	defer ids.Close()
	if tok != "" {
		ids = ids.WithToken(tok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	get := ids.Identity
	if *device {
		get = ids.Device
	}
	id, err := get(ctx)
	if err != nil {
		return err
	}
	if sub == "get" {
		return printJSON(id)
	}
	k := keyd.New(cfg.SocketPath("keyd"))
	if tok != "" {
		k = k.WithToken(tok)
	}
	sas, err := identityd.SASToken(ctx, k, id, *ttl)
	if err != nil {
		return err
	}
	fmt.Println(sas)
	return nil
}
