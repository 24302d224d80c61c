package certd

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/warden-iot/warden/wasm-modules/est/estjob"
	"github.com/warden-iot/warden/wasm-modules/host"
)

// ESTModuleName is the module certd runs EST jobs in ([warden.modules.est]).
const ESTModuleName = "est"

// ModuleRunner runs EST jobs as jobs of a module of the module host: the
// job is the module's standard input, its result the module's output.
type ModuleRunner struct {
	// Host is the broker's module host.
	Host *host.Host
	// Name is the module's name; "" means ESTModuleName.
	Name string
}

// RunEST implements ESTRunner.
func (m ModuleRunner) RunEST(ctx context.Context, job *estjob.Job) (*estjob.Result, error) {
	name := m.Name
	if name == "" {
		name = ESTModuleName
	}
	in, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("EST job: %w", err)
	}
	res, err := m.Host.Run(ctx, name, in)
	if err != nil {
		return nil, err
	}
	var out estjob.Result
	if err := json.Unmarshal(res.Output, &out); err != nil {
		return nil, fmt.Errorf("EST module %s result: %w", res.Digest, err)
	}
	return &out, nil
}
