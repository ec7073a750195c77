package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
)

// PassphraseEnv names the environment variable a passphrase is read from;
// passphrases never come from argv, where any local user can read them.
const PassphraseEnv = "RCSGATE_BACKUP_PASSPHRASE"

// ErrWrongKey means the archive could not be opened with what was given.
var ErrWrongKey = errors.New("cannot decrypt the backup: wrong passphrase or identity")

// scryptWorkFactor is age's default (about a second); tests lower it.
var scryptWorkFactor = 18

// PassphraseRecipient encrypts to a passphrase (age scrypt), one that
// CheckPassphrase accepts. age allows no other recipient beside it.
func PassphraseRecipient(pass string) (age.Recipient, error) {
	if pass == "" {
		return nil, errors.New("the backup passphrase is empty")
	}
	if err := CheckPassphrase(pass); err != nil {
		return nil, err
	}
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		return nil, fmt.Errorf("passphrase: %w", err)
	}
	r.SetWorkFactor(scryptWorkFactor)
	return r, nil
}

// PassphraseIdentity decrypts what PassphraseRecipient encrypted.
func PassphraseIdentity(pass string) (age.Identity, error) {
	if pass == "" {
		return nil, errors.New("the backup passphrase is empty")
	}
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		return nil, fmt.Errorf("passphrase: %w", err)
	}
	return id, nil
}

// ReadPassphrase returns the passphrase from file (first line) if file is
// set, else from $RCSGATE_BACKUP_PASSPHRASE; "" if neither is set.
func ReadPassphrase(file string) (string, error) {
	if file == "" {
		return os.Getenv(PassphraseEnv), nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("passphrase file: %w", err)
	}
	pass, _, _ := strings.Cut(string(raw), "\n")
	pass = strings.TrimSuffix(pass, "\r")
	if pass == "" {
		return "", fmt.Errorf("passphrase file %s is empty", file)
	}
	return pass, nil
}

// ParseRecipients parses age recipients (age1…), one per string.
func ParseRecipients(list []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range list {
		rs, err := age.ParseRecipients(strings.NewReader(s))
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", s, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// ReadRecipientsFile reads an age recipients file (one per line, # comments).
func ReadRecipientsFile(path string) ([]age.Recipient, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recipients file: %w", err)
	}
	defer f.Close()
	rs, err := age.ParseRecipients(f)
	if err != nil {
		return nil, fmt.Errorf("recipients file %s: %w", path, err)
	}
	return rs, nil
}

// ReadIdentityFile reads an age identity file (AGE-SECRET-KEY-1… lines).
// The error never quotes the file: it holds private keys.
func ReadIdentityFile(path string) ([]age.Identity, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	return ids, nil
}

// decrypt opens an age stream, telling a wrong key apart from damage.
func decrypt(src io.Reader, ids []age.Identity) (io.Reader, error) {
	if len(ids) == 0 {
		return nil, errors.New("no passphrase or identity to decrypt the backup with")
	}
	r, err := age.Decrypt(src, ids...)
	var nm *age.NoIdentityMatchError
	switch {
	case errors.As(err, &nm):
		return nil, ErrWrongKey
	case err != nil:
		return nil, fmt.Errorf("not an rcsgate backup, or damaged: %w", err)
	}
	return r, nil
}
