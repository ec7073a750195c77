// Package phone normalises and formats phone numbers with
// github.com/nyaruka/phonenumbers (Google's libphonenumber metadata), so
// "(202) 555-0100" typed by a US user and "+1 202-555-0100" from the phone
// are the same contact.
package phone

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// ErrNotANumber is returned for anything that is not a phone number.
var ErrNotANumber = errors.New("not a phone number")

// maxInput bounds what we hand the parser.
const maxInput = 64

// Normalize turns an international number ("+1 (202) 555-0100") into E.164
// ("+12025550100"). Numbers without a country code need a region: see
// NormalizeIn.
func Normalize(s string) (string, error) { return NormalizeIn(s, "") }

// NormalizeIn is Normalize with a default region (ISO 3166 code such as
// "US" or "DE") for numbers written without a country code. The number must
// be a valid number of its country.
func NormalizeIn(s, region string) (string, error) {
	n, err := parse(s, region)
	if err != nil {
		return "", err
	}
	if !phonenumbers.IsValidNumber(n) {
		return "", fmt.Errorf("%w: %s is not a valid number in %s", ErrNotANumber, strings.TrimSpace(s), regionName(n))
	}
	return phonenumbers.Format(n, phonenumbers.E164), nil
}

// NormalizeSender is for numbers the phone network hands us: a number that
// parses is put in E.164 even if the metadata does not know its range (new
// ranges appear before the metadata does); anything else is an error.
func NormalizeSender(s, region string) (string, error) {
	n, err := parse(s, region)
	if err != nil {
		return "", err
	}
	if !phonenumbers.IsPossibleNumber(n) {
		return "", fmt.Errorf("%w: %s has the wrong length", ErrNotANumber, strings.TrimSpace(s))
	}
	return phonenumbers.Format(n, phonenumbers.E164), nil
}

func parse(s, region string) (*phonenumbers.PhoneNumber, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrNotANumber)
	}
	if len(s) > maxInput {
		return nil, fmt.Errorf("%w: too long", ErrNotANumber)
	}
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9', r == '+', r == ' ', r == '-', r == '(', r == ')', r == '.', r == '/':
		default:
			return nil, fmt.Errorf("%w: unexpected %q: write the number in international form, like +12025550100", ErrNotANumber, r)
		}
	}
	if !strings.HasPrefix(s, "+") && region == "" {
		return nil, fmt.Errorf("%w: write it in international form with the country code, like +12025550100 (or set bridge default_region)", ErrNotANumber)
	}
	n, err := phonenumbers.Parse(s, strings.ToUpper(region))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotANumber, err)
	}
	return n, nil
}

func regionName(n *phonenumbers.PhoneNumber) string {
	if r := phonenumbers.GetRegionCodeForNumber(n); r != "" && r != "ZZ" {
		return r
	}
	return fmt.Sprintf("country code +%d", n.GetCountryCode())
}

// ValidRegion reports whether r is a region the metadata knows.
func ValidRegion(r string) bool {
	return r == "" || phonenumbers.GetCountryCodeForRegion(strings.ToUpper(r)) != 0
}

// Format renders a normalised number for people, in international format
// ("+1 202-555-0100"); what does not parse is returned as is.
func Format(e164 string) string {
	n, err := phonenumbers.Parse(e164, "")
	if err != nil {
		return e164
	}
	return phonenumbers.Format(n, phonenumbers.INTERNATIONAL)
}
