// Package cliflag parses a command's flags wherever they stand among its
// positional arguments, so `rcsgate device revoke ID --config FILE` and
// `rcsgate device --config FILE revoke ID` mean the same: the standard flag
// package stops at the first positional argument. "--" ends the flags.
// Both binaries use it; it imports nothing but the standard library.
package cliflag

import (
	"flag"
	"slices"
)

// Parse parses fs's flags anywhere in args and returns the positional
// arguments in order. Errors are flag.Parse's (flag.ErrHelp for -h; the
// flag set has already printed the problem and its usage).
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag.Parse consumed a "--" just before rest: everything after
		// it is positional, flags or not.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = slices.Clone(rest[1:])
	}
}
