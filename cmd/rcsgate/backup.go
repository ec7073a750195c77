package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"

	"github.com/rcsgate/rcsgate/internal/backup"
	"github.com/rcsgate/rcsgate/internal/gateway"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func s3Flags(fs *flag.FlagSet) func() backup.S3Config {
	cfg := backup.S3ConfigFromEnv()
	endpoint := fs.String("s3-endpoint", cfg.Endpoint, "S3-compatible endpoint, host:port or https://host (default $RCSGATE_S3_ENDPOINT, else AWS)")
	region := fs.String("s3-region", cfg.Region, "S3 region (default $AWS_REGION, else discovered)")
	insecure := fs.Bool("s3-insecure", false, "plain HTTP to the S3 endpoint (a test server or a MinIO on loopback)")
	return func() backup.S3Config {
		cfg.Endpoint, cfg.Region, cfg.Insecure = *endpoint, *region, *insecure
		return cfg
	}
}

const encryptionHelp = `Encryption (age): a passphrase from $` + backup.PassphraseEnv + ` or --passphrase-file
(never from the command line; at least 12 characters and not a word, sequence or repeat —
four random words work well), or one or more age recipients (--recipient age1…,
--recipients-file). S3 credentials come from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY.`

func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backup", stderr, "Write one encrypted archive of the config, both databases, the device CA and the\n"+
		"channel key to a directory (rcsgate-backup-<UTC time>.tar.age) or to s3://bucket/prefix.\n"+
		"Safe while rcsgate runs: the databases are snapshotted with SQLite's VACUUM INTO.\n\n"+encryptionHelp)
	cfgPath := fs.String("config", defaultConfigPath(), "config file")
	to := fs.String("to", "", "destination: a directory, or s3://bucket/prefix (required)")
	var recips listFlag
	fs.Var(&recips, "recipient", "age recipient (age1…) to encrypt to; repeatable")
	recipsFile := fs.String("recipients-file", "", "file of age recipients, one per line")
	passFile := fs.String("passphrase-file", "", "file whose first line is the passphrase (default $"+backup.PassphraseEnv+")")
	keep := fs.Int("keep", 0, "after the backup, delete all but the newest N backups in the destination (0: keep all)")
	tmp := fs.String("tmp", "", "where database snapshots are staged (default: the state directory)")
	s3 := s3Flags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *to == "" {
		fmt.Fprintln(stderr, "--to is required")
		fs.Usage()
		return errUsage
	}
	if *keep < 0 {
		fmt.Fprintln(stderr, "--keep must not be negative")
		return errUsage
	}
	rs, err := backupRecipients(recips, *recipsFile, *passFile)
	if err != nil {
		return err
	}
	dest, err := backup.ParseTarget(*to, s3())
	if err != nil {
		return err
	}
	log, err := gateway.NewLogger(stderr, "warn")
	if err != nil {
		return err
	}
	res, err := backup.Create(ctx, backup.Options{ConfigPath: *cfgPath, Recipients: rs, Dest: dest, Keep: *keep, TempDir: *tmp, Log: log})
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "Wrote %s (%d files, %d bytes).\n", res.Location, len(res.Files), res.Bytes)
	for _, p := range res.Pruned {
		fmt.Fprintf(stdout, "Removed old backup %s.\n", dest.Where(p))
	}
	return nil
}

func backupRecipients(recips []string, recipsFile, passFile string) ([]age.Recipient, error) {
	rs, err := backup.ParseRecipients(recips)
	if err != nil {
		return nil, err
	}
	if recipsFile != "" {
		more, err := backup.ReadRecipientsFile(recipsFile)
		if err != nil {
			return nil, err
		}
		rs = append(rs, more...)
	}
	pass, err := backup.ReadPassphrase(passFile)
	if err != nil {
		return nil, err
	}
	switch {
	case len(rs) > 0 && pass != "":
		return nil, errors.New("give either age recipients or a passphrase, not both (age can't mix them); unset $" + backup.PassphraseEnv + " or drop --passphrase-file")
	case len(rs) > 0:
		return rs, nil
	case pass == "":
		return nil, errors.New("nothing to encrypt to: set $" + backup.PassphraseEnv + ", or give --passphrase-file, --recipient or --recipients-file")
	}
	r, err := backup.PassphraseRecipient(pass)
	if err != nil {
		return nil, err
	}
	return []age.Recipient{r}, nil
}

func cmdRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("restore", stderr, "Restore a backup into a state directory. Paired devices reconnect without pairing again:\n"+
		"the device CA and the channel key are the backup's. Every file is checked before anything is\n"+
		"written; an existing non-empty state directory is refused unless --force (stop rcsgate first).\n\n"+
		"Decryption: --identity-file, or the passphrase from $"+backup.PassphraseEnv+" or --passphrase-file.")
	from := fs.String("from", "", "a backup file, a directory or s3://bucket/prefix/ (its newest backup), or s3://bucket/key (required)")
	state := fs.String("state", "", "state directory to restore into (required)")
	var idFiles listFlag
	fs.Var(&idFiles, "identity-file", "age identity file (AGE-SECRET-KEY-1…); repeatable")
	passFile := fs.String("passphrase-file", "", "file whose first line is the passphrase (default $"+backup.PassphraseEnv+")")
	force := fs.Bool("force", false, "replace rcsgate's files in a non-empty state directory")
	s3 := s3Flags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *from == "" || *state == "" {
		fmt.Fprintln(stderr, "--from and --state are required")
		fs.Usage()
		return errUsage
	}
	var ids []age.Identity
	for _, f := range idFiles {
		more, err := backup.ReadIdentityFile(f)
		if err != nil {
			return err
		}
		ids = append(ids, more...)
	}
	pass, err := backup.ReadPassphrase(*passFile)
	if err != nil {
		return err
	}
	if pass != "" {
		id, err := backup.PassphraseIdentity(pass)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return errors.New("nothing to decrypt with: give --identity-file, or set $" + backup.PassphraseEnv + " or --passphrase-file")
	}
	src, name, err := backup.ParseSource(ctx, *from, s3())
	if err != nil {
		return err
	}
	log, err := gateway.NewLogger(stderr, "warn")
	if err != nil {
		return err
	}
	res, err := backup.Restore(ctx, src, name, backup.RestoreOptions{Identities: ids, StateDir: *state, Force: *force, Log: log})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	m := res.Manifest
	fmt.Fprintf(stdout, "Restored %s (taken %s by rcsgate %s, %d files) into %s.\n",
		src.Where(name), m.Created.Format("2006-01-02 15:04:05Z"), m.RcsgateVersion, len(m.Files), res.StateDir)
	if res.StateDirRewritten {
		fmt.Fprintf(stdout, "state_dir in the config was %s; it now says %s.\n", m.StateDir, res.StateDir)
	}
	fmt.Fprintf(stdout, "Start it with: rcsgate serve --config %s\n"+
		"Paired phones reconnect by themselves once channel.public_addrs reaches this machine.\n", res.ConfigPath)
	return nil
}
