// Command keel is the single binary of the keel block storage appliance.
// It only dispatches: the applet is chosen by the name it was started under
// (argv[0]), or by argv[1] when started as plain "keel".
package main

import (
	"os"

	"keel/applets"
	"keel/applets/registry"
)

func main() {
	reg := registry.New(applets.Fallback)
	for _, a := range applets.All() {
		reg.Register(a)
	}
	os.Exit(reg.Dispatch(os.Args, os.Stderr))
}
