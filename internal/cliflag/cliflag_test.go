package cliflag

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		config  string
		force   bool
		pos     []string
		wantErr error
	}{
		{"flags after positionals", []string{"revoke", "ABC1234", "--config", "c.yaml"}, "c.yaml", false, []string{"revoke", "ABC1234"}, nil},
		{"flags before", []string{"--config", "c.yaml", "list"}, "c.yaml", false, []string{"list"}, nil},
		{"flags between", []string{"rename", "--config=c.yaml", "ABC1234", "--force", "new name"}, "c.yaml", true, []string{"rename", "ABC1234", "new name"}, nil},
		{"double dash ends flags", []string{"--force", "--", "--config", "x"}, "", true, []string{"--config", "x"}, nil},
		{"no arguments", nil, "", false, nil, nil},
		{"unknown flag", []string{"list", "--nope"}, "", false, nil, errAny},
		{"missing value", []string{"list", "--config"}, "", false, nil, errAny},
		{"help", []string{"list", "-h"}, "", false, nil, flag.ErrHelp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			config := fs.String("config", "", "")
			force := fs.Bool("force", false, "")
			pos, err := Parse(fs, tc.args)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr == errAny && err == nil, tc.wantErr == flag.ErrHelp && !errors.Is(err, flag.ErrHelp):
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			case tc.wantErr != nil:
				return
			}
			if *config != tc.config || *force != tc.force || !slices.Equal(pos, tc.pos) {
				t.Fatalf("config %q force %v positional %q; want %q %v %q", *config, *force, pos, tc.config, tc.force, tc.pos)
			}
		})
	}
}

var errAny = errors.New("any error")
