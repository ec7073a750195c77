// Package asreg reads an appservice registration (the YAML file every
// homeserver's docs describe) and writes it in the other forms homeservers
// take: tuwunel before 1.6.0 has no appservice_dir, so a bridge is declared
// there as a [global.appservice.<id>] table in its TOML config. rcsgate's
// CLI prints that table for admins, and the tuwunel test peer writes it.
package asreg

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Namespace is one entry of a registration's users, aliases or rooms list.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
}

// Registration holds the fields homeservers read from a registration file.
type Registration struct {
	ID              string `yaml:"id"`
	URL             string `yaml:"url"`
	ASToken         string `yaml:"as_token"`
	HSToken         string `yaml:"hs_token"`
	SenderLocalpart string `yaml:"sender_localpart"`
	RateLimited     *bool  `yaml:"rate_limited"`
	Namespaces      struct {
		Users   []Namespace `yaml:"users"`
		Aliases []Namespace `yaml:"aliases"`
		Rooms   []Namespace `yaml:"rooms"`
	} `yaml:"namespaces"`
	// ReceiveEphemeral is MSC2409's stable name; the unstable key is read too.
	ReceiveEphemeral bool `yaml:"receive_ephemeral"`
	PushEphemeral    bool `yaml:"de.sorunome.msc2409.push_ephemeral"`
}

// maxRegistration bounds what Parse reads (a registration is a few hundred bytes).
const maxRegistration = 1 << 20

// Parse reads a registration and checks what every homeserver requires.
func Parse(raw []byte) (Registration, error) {
	var r Registration
	if len(raw) > maxRegistration {
		return r, fmt.Errorf("asreg: registration is %d bytes, more than %d", len(raw), maxRegistration)
	}
	if err := yaml.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("asreg: parse registration: %w", err)
	}
	var errs []error
	if !validID.MatchString(r.ID) {
		errs = append(errs, fmt.Errorf("id %q: want letters, digits, '_' or '-'", r.ID))
	}
	if r.ASToken == "" || r.HSToken == "" {
		errs = append(errs, errors.New("as_token and hs_token are required"))
	}
	if r.SenderLocalpart == "" {
		errs = append(errs, errors.New("sender_localpart is required"))
	}
	for _, ns := range r.allNamespaces() {
		if _, err := regexp.Compile(ns.Regex); err != nil {
			errs = append(errs, fmt.Errorf("namespace regex %q: %w", ns.Regex, err))
		}
	}
	if len(errs) > 0 {
		return r, fmt.Errorf("asreg: registration: %w", errors.Join(errs...))
	}
	return r, nil
}

// validID keeps the id usable as a bare TOML key and in file names.
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (r Registration) allNamespaces() []Namespace {
	var all []Namespace
	all = append(all, r.Namespaces.Users...)
	all = append(all, r.Namespaces.Aliases...)
	return append(all, r.Namespaces.Rooms...)
}

// TuwunelTable is the registration as tuwunel's config table
// [global.appservice.<id>] (tuwunel's AppService config struct: the same
// fields as the YAML, namespaces as arrays of tables). It holds both tokens:
// whatever file it goes into must be readable by tuwunel only.
func (r Registration) TuwunelTable() string {
	var b strings.Builder
	table := "global.appservice." + r.ID
	fmt.Fprintf(&b, "[%s]\n", table)
	if r.URL != "" {
		fmt.Fprintf(&b, "url = %s\n", tomlString(r.URL))
	}
	fmt.Fprintf(&b, "as_token = %s\n", tomlString(r.ASToken))
	fmt.Fprintf(&b, "hs_token = %s\n", tomlString(r.HSToken))
	fmt.Fprintf(&b, "sender_localpart = %s\n", tomlString(r.SenderLocalpart))
	fmt.Fprintf(&b, "rate_limited = %t\n", r.RateLimited != nil && *r.RateLimited)
	fmt.Fprintf(&b, "receive_ephemeral = %t\n", r.ReceiveEphemeral || r.PushEphemeral)
	for _, list := range []struct {
		name string
		ns   []Namespace
	}{{"users", r.Namespaces.Users}, {"aliases", r.Namespaces.Aliases}, {"rooms", r.Namespaces.Rooms}} {
		for _, ns := range list.ns {
			fmt.Fprintf(&b, "\n[[%s.%s]]\nexclusive = %t\nregex = %s\n", table, list.name, ns.Exclusive, tomlString(ns.Regex))
		}
	}
	return b.String()
}

// tomlString quotes s as a TOML basic string: TOML has only \" \\ \b \t \n
// \f \r and \uXXXX / \UXXXXXXXX escapes, so Go's %q (which uses \x) will not do.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\r':
			b.WriteString(`\r`)
		case c < 0x20 || c == 0x7f:
			b.WriteString(`\u00`)
			b.WriteString(strconv.FormatInt(int64(c)>>4, 16))
			b.WriteString(strconv.FormatInt(int64(c)&0xf, 16))
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
