package asreg

import (
	"strings"
	"testing"
)

const sample = `id: rcsgate
url: http://127.0.0.1:29340
as_token: as-"token"\x
hs_token: hs-token
sender_localpart: rcsgate_0011
rate_limited: false
namespaces:
  users:
    - regex: ^@rcsbot:example\.org$
      exclusive: true
    - regex: ^@rcs_.*:example\.org$
      exclusive: true
de.sorunome.msc2409.push_ephemeral: true
receive_ephemeral: true
`

func TestTuwunelTable(t *testing.T) {
	r, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := `[global.appservice.rcsgate]
url = "http://127.0.0.1:29340"
as_token = "as-\"token\"\\x"
hs_token = "hs-token"
sender_localpart = "rcsgate_0011"
rate_limited = false
receive_ephemeral = true

[[global.appservice.rcsgate.users]]
exclusive = true
regex = "^@rcsbot:example\\.org$"

[[global.appservice.rcsgate.users]]
exclusive = true
regex = "^@rcs_.*:example\\.org$"
`
	if got := r.TuwunelTable(); got != want {
		t.Errorf("TuwunelTable:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, raw := range map[string]string{
		"no tokens":       "id: x\nsender_localpart: bot\n",
		"no sender":       "id: x\nas_token: a\nhs_token: h\n",
		"id breaks TOML":  "id: 'a.b]'\nas_token: a\nhs_token: h\nsender_localpart: bot\n",
		"bad regex":       "id: x\nas_token: a\nhs_token: h\nsender_localpart: bot\nnamespaces: {users: [{regex: '('}]}\n",
		"not a mapping":   "- 1\n- 2\n",
		"oversized input": "id: x\n" + strings.Repeat("#", maxRegistration),
	} {
		if _, err := Parse([]byte(raw)); err == nil {
			t.Errorf("%s: Parse accepted it", name)
		}
	}
}

func TestTOMLString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":     `"plain"`,
		"a\"b\\c":   `"a\"b\\c"`,
		"tab\tnl\n": `"tab\tnl\n"`,
		"\x01\x7f":  `"\u0001\u007f"`,
		"ünï😀":      `"ünï😀"`,
	} {
		if got := tomlString(in); got != want {
			t.Errorf("tomlString(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("id: x\nas_token: a\nhs_token: h\nsender_localpart: bot\nurl: \"\\x00\\n\"\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := Parse(raw)
		if err != nil {
			return
		}
		// Whatever went in, the table is one key or header per line with
		// none of the control characters TOML forbids in a string.
		for _, line := range strings.Split(r.TuwunelTable(), "\n") {
			for _, c := range line {
				if c < 0x20 || c == 0x7f {
					t.Fatalf("control character %U in table line %q", c, line)
				}
			}
		}
	})
}
